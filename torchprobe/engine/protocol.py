"""The pipe between the engine and a worker process, in one place.

The engine writes one :class:`Job` as a JSON line on the worker's stdin; the
worker answers with JSON lines on its stdout, one :data:`Event` each, in this
order per check: :class:`Valid` (plugins only: their options are parsed where
their code is imported), :class:`Setup`, :class:`Start` (the check's own
timeout runs from here), :class:`Done`. :class:`Usage` (a bad option) stops
the run; :class:`Secrets` (forms of a secret found in the worker, a token file
it read) may come at any time and goes to the scrubber of the output.

Both sides encode and decode here only; a line that does not decode (a check
that wrote to the original stdout, a torn last line) is dropped, never a crash
of the engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from torchprobe.base import Outcome, Status

__all__ = [
    "Done", "Event", "Job", "JobItem", "Secrets", "Setup", "Start", "Usage", "Valid",
    "decode_event", "decode_outcomes", "encode", "encode_outcomes",
]  # fmt: skip


@dataclass
class JobItem:
    """One check for the worker: the CHECK argument and where its class is."""

    index: int
    check: str
    token: str
    ref: str
    plugin: bool
    liveness_only: bool = False


@dataclass
class Job:
    checks: list[JobItem]
    #: The round's deadline, a ``time.monotonic()`` value (one clock for every
    #: process of the machine).
    deadline: float
    #: How the round's limit reads in a capped check's message.
    cut: str = ""

    def encode(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def decode(cls, line: str | bytes) -> Job:
        raw = json.loads(line)
        items = [JobItem(**item) for item in raw["checks"]]
        return cls(items, float(raw["deadline"]), str(raw.get("cut") or ""))


@dataclass
class Usage:
    error: str
    t = "usage"


@dataclass
class Secrets:
    forms: list[str]
    t = "secrets"


@dataclass
class Valid:
    """A plugin's options as its own declaration parsed them."""

    index: int
    label: str
    shown: dict[str, Any]
    secrets: list[str]
    timeout: float
    readiness: bool | None
    t = "valid"


@dataclass
class Setup:
    index: int
    t = "setup"


@dataclass
class Start:
    """The check's code starts now, with ``timeout`` seconds (``capped``: the
    round's deadline, not the check's own timeout, set them)."""

    index: int
    timeout: float
    capped: bool = False
    t = "start"


@dataclass
class Done:
    index: int
    outcomes: list[Outcome]
    error: str | None
    duration: float
    reason: str | None = None
    t = "result"


Event = Usage | Secrets | Valid | Setup | Start | Done
_KINDS: dict[str, type[Any]] = {k.t: k for k in (Usage, Secrets, Valid, Setup, Start, Done)}


def encode_outcomes(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    return [
        {"status": o.status.value, "message": o.message, "details": o.details, "target": o.target}
        for o in outcomes
    ]


def decode_outcomes(raw: Any) -> list[Outcome]:
    return [
        Outcome(Status(o["status"]), o.get("message", ""), o.get("details"), o.get("target"))
        for o in raw or ()
    ]


def encode(event: Event) -> str:
    """One event as its JSON line."""
    body = {f.name: getattr(event, f.name) for f in fields(event)}
    if isinstance(event, Done):
        body["outcomes"] = encode_outcomes(event.outcomes)
    body["t"] = event.t
    return json.dumps(body, default=str) + "\n"


def decode_event(line: bytes | str) -> Event | None:
    """The event of one line; None for a line that is not one."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    t = raw.pop("t", None)
    kind = _KINDS.get(t) if isinstance(t, str) else None
    if kind is None:
        return None
    try:
        if kind is Done:
            raw["outcomes"] = decode_outcomes(raw.get("outcomes"))
        event: Event = kind(**{f.name: raw[f.name] for f in fields(kind) if f.name in raw})
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return event
