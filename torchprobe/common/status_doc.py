"""The monitor's state document: what :meth:`Monitor.state` returns and each
``<pid>.json`` status file holds, field for field as docs/monitor-contract.md
describes it (schema version 1).

These types say what the monitor *writes*. A reader of a status file (the
``status-file`` check, ``/metrics`` with ``aggregate=True``) holds whatever
another process — or anyone who can write the directory — left there: it
parses it as plain JSON, checks each field it uses, and never trusts these
types to describe it.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "SCHEMA_VERSION",
    "Busy",
    "CheckEntry",
    "GpuMemory",
    "Lifecycle",
    "Reasons",
    "StatusDocument",
    "Sticky",
    "XidCount",
    "XidDocument",
    "XidEvent",
]

#: Readers that meet a field they do not know ignore it: adding one keeps 1.
SCHEMA_VERSION = 1


class Reasons(TypedDict):
    """Why the process is not live, and not ready (empty when it is)."""

    live: list[str]
    ready: list[str]


class Lifecycle(TypedDict):
    """What the app said of its model."""

    #: "waiting", "loading", "ready" or "failed".
    state: str
    #: The load failure's text (at most 500 characters), else None.
    error: str | None
    #: When the state was entered (``time.time()``).
    since: float


class Sticky(TypedDict):
    """A sticky CUDA error: the process is not live for good."""

    code: int | None
    type: str
    message: str
    at: float


class Busy(TypedDict):
    in_flight: int
    #: Requests that left ``guard()`` in this process, returned or raised.
    completed: int
    oldest_seconds: float
    #: None when no event loop is tracked.
    loop_lag_seconds: float | None


class CheckEntry(TypedDict):
    """One outcome of a periodic check in the last round."""

    check: str
    name: str
    #: "pass", "fail" or "skip".
    status: str
    message: str
    duration: float
    details: dict[str, Any]


class GpuMemory(TypedDict):
    """The app's CUDA device, as its last check round saw it."""

    device: str | None
    name: str | None
    memory_used: float
    memory_total: float


class XidCount(TypedDict):
    gpu: str
    #: A number as a string, or "double_bit_ecc", "single_bit_ecc", "gpu_lost".
    xid: str
    count: int


#: One of the latest events; "class" is a keyword, hence this form.
XidEvent = TypedDict(
    "XidEvent",
    {
        "gpu": str,
        "kind": str,
        "xid": int | None,
        "name": str,
        "class": str,
        "action": str,
        "critical": bool,
        "at": float,
    },
)


class XidDocument(TypedDict):
    """The Xid watch (built by :class:`torchprobe.gpu.xidstate.XidState`)."""

    #: "off", "starting", "watching", "unsupported" or "failed".
    state: str
    note: str | None
    gpus: list[str]
    counts: list[XidCount]
    events: list[XidEvent]


class StatusDocument(TypedDict):
    """The whole document, as the monitor writes it."""

    schema_version: int
    torchprobe_version: str
    pid: int
    #: /proc/PID/stat field 22: tells the writer from a later process with its PID.
    pid_start: int | None
    updated: float
    interval: float
    max_busy: float
    live: bool
    ready: bool
    reasons: Reasons
    lifecycle: Lifecycle
    sticky: Sticky | None
    busy: Busy
    running_since: float | None
    last_round: float | None
    checks: list[CheckEntry]
    #: None when the device is not CUDA.
    gpu: GpuMemory | None
    xid: XidDocument
