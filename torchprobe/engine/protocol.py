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
of the engine. The messages are plain classes with slots, not dataclasses: ``dataclasses``
imports ``inspect``, 5 ms of every run's start-up (``python -X importtime``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from torchprobe.base import Outcome, Status

__all__ = [
    "Done", "Event", "Job", "JobItem", "Secrets", "Setup", "Start", "Usage", "Valid",
    "decode_event", "decode_outcomes", "encode", "encode_outcomes",
]  # fmt: skip


class _Message:
    """Fields in ``__slots__`` order; equal when of one kind with equal fields."""

    __slots__: ClassVar[tuple[str, ...]] = ()
    t: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Message)
            and type(other) is type(self)
            and (self.fields() == other.fields())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__name__}({inner})"


class JobItem(_Message):
    """One check for the worker: the CHECK argument and where its class is."""

    __slots__ = ("index", "check", "token", "ref", "plugin", "liveness_only")

    def __init__(self, index: int, check: str, token: str, ref: str, plugin: bool,
                 liveness_only: bool = False) -> None:  # fmt: skip
        self.index, self.check, self.token, self.ref = index, check, token, ref
        self.plugin, self.liveness_only = plugin, liveness_only


class Job(_Message):
    """What a worker runs: its checks in order, under the round's ``deadline``
    (a ``time.monotonic()`` value: one clock for every process of the
    machine); ``cut`` is how that deadline reads in a capped check's message."""

    __slots__ = ("checks", "deadline", "cut")

    def __init__(self, checks: list[JobItem], deadline: float, cut: str = "") -> None:
        self.checks, self.deadline, self.cut = checks, deadline, cut

    def encode(self) -> bytes:
        body = {"checks": [item.fields() for item in self.checks], "deadline": self.deadline,
                "cut": self.cut}  # fmt: skip
        return (json.dumps(body) + "\n").encode()

    @classmethod
    def decode(cls, line: str | bytes) -> Job:
        raw = json.loads(line)
        items = [JobItem(**item) for item in raw["checks"]]
        return cls(items, float(raw["deadline"]), str(raw.get("cut") or ""))


class Usage(_Message):
    """A bad option (found where a plugin's code is imported): the run stops."""

    __slots__ = ("error",)
    t = "usage"

    def __init__(self, error: str) -> None:
        self.error = error


class Secrets(_Message):
    """Forms of a secret found in the worker, for the scrubber of the output."""

    __slots__ = ("forms",)
    t = "secrets"

    def __init__(self, forms: list[str]) -> None:
        self.forms = forms


class Valid(_Message):
    """A plugin's options as its own declaration parsed them."""

    __slots__ = ("index", "label", "shown", "secrets", "timeout", "readiness")
    t = "valid"

    def __init__(self, index: int, label: str, shown: dict[str, Any], secrets: list[str],
                 timeout: float, readiness: bool | None) -> None:  # fmt: skip
        self.index, self.label, self.shown, self.secrets = index, label, shown, secrets
        self.timeout, self.readiness = timeout, readiness


class Setup(_Message):
    """The check's setup (its heavy imports) starts: the round's deadline bounds it."""

    __slots__ = ("index",)
    t = "setup"

    def __init__(self, index: int) -> None:
        self.index = index


class Start(_Message):
    """The check's code starts now, with ``timeout`` seconds (``capped``: the
    round's deadline, not the check's own timeout, set them)."""

    __slots__ = ("index", "timeout", "capped")
    t = "start"

    def __init__(self, index: int, timeout: float, capped: bool = False) -> None:
        self.index, self.timeout, self.capped = index, timeout, capped


class Done(_Message):
    """The check's outcomes, its traceback when it raised, and how long it ran."""

    __slots__ = ("index", "outcomes", "error", "duration", "reason")
    t = "result"

    def __init__(self, index: int, outcomes: list[Outcome], error: str | None, duration: float,
                 reason: str | None = None) -> None:  # fmt: skip
        self.index, self.outcomes, self.error = index, outcomes, error
        self.duration, self.reason = duration, reason


Event = Usage | Secrets | Valid | Setup | Start | Done
_KINDS: dict[str, type[Event]] = {k.t: k for k in (Usage, Secrets, Valid, Setup, Start, Done)}


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
    body = event.fields()
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
        event: Event = kind(**{name: raw[name] for name in kind.__slots__ if name in raw})
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return event
