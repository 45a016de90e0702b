"""The check API: what a check declares, and what its work returns.

A check is a small declarative class: its ``name``, a one-line ``description``,
its ``options`` (each with a type, a default and a help text), a default
``timeout``, the ``worker`` it runs in, and one method, :meth:`Check.run`, that
does the work. The engine, not the check, turns exceptions, timeouts and
crashes into failing results, so ``run`` may simply raise.

Built-in checks and plugins use the same API. A plugin may also register a plain
function; see :mod:`torchprobe.engine.plugins`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from torchprobe.common.deadline import Deadline
from torchprobe.options import text

__all__ = [
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "Interrupted",
    "Option",
    "Outcome",
    "Status",
    "UsageError",
    "failed",
    "passed",
    "skipped",
]


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class UsageError(Exception):
    """Bad input from the user: an unknown check, option or value. Exit 1, one line."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived while torchprobe was running.

    A BaseException, like KeyboardInterrupt: library code that catches
    Exception (click's terminal probes do, and so do many others) must not
    swallow the end of the run."""


class CheckFailed(Exception):
    """Raised by a check's ``run`` to fail with a message and structured details."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class CheckSkipped(Exception):
    """Raised by a check's ``run`` when it does not apply here; the message says why."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Outcome:
    """One result line of a check.

    A check that looks at several things (one line per GPU) returns several
    outcomes, each with a ``target`` that tells them apart (``"0"``, ``"cuda:1"``).
    """

    __slots__ = ("status", "message", "details", "target")

    def __init__(
        self,
        status: Status,
        message: str = "",
        details: dict[str, Any] | None = None,
        target: str | None = None,
    ) -> None:
        self.status = Status(status)
        self.message = message
        self.details = details or {}
        self.target = target

    def __bool__(self) -> bool:
        return self.status is not Status.FAIL

    def __repr__(self) -> str:
        where = f"[{self.target}]" if self.target is not None else ""
        return f"Outcome({self.status.value}{where}: {self.message!r})"


def passed(message: str = "", *, target: str | None = None, **details: Any) -> Outcome:
    return Outcome(Status.PASS, message, details, target)


def failed(message: str, *, target: str | None = None, **details: Any) -> Outcome:
    return Outcome(Status.FAIL, message, details, target)


def skipped(message: str, *, target: str | None = None, **details: Any) -> Outcome:
    return Outcome(Status.SKIP, message, details, target)


class Option:
    """A declared option of a check: ``KEY=VALUE`` on the command line.

    ``parse`` turns the text into a value and raises ``ValueError`` with a short
    reason when it cannot (see :mod:`torchprobe.options` for the usual ones). A
    ``repeatable`` option collects every occurrence into a list. A ``secret``
    option's value never appears in any output.
    """

    __slots__ = ("key", "parse", "default", "help", "required", "repeatable", "secret")

    def __init__(
        self,
        key: str,
        parse: Callable[[str], Any] = text,
        *,
        default: Any = None,
        help: str = "",
        required: bool = False,
        repeatable: bool = False,
        secret: bool = False,
    ) -> None:
        self.key = key
        self.parse = parse
        self.default = default
        self.help = help
        self.required = required
        self.repeatable = repeatable
        self.secret = secret

    @property
    def attr(self) -> str:
        """The Python name of the option: ``max-memory`` becomes ``max_memory``."""
        return self.key.replace("-", "_")

    @property
    def type_name(self) -> str:
        return str(getattr(self.parse, "type_name", getattr(self.parse, "__name__", "text")))

    def __repr__(self) -> str:
        return f"Option({self.key!r}, {self.type_name})"


class Check:
    """Base class of every check.

    Subclasses set the class attributes and implement :meth:`run`. An instance
    carries its options as attributes (``self.max_memory``), plus ``timeout``
    (seconds, from the ``timeout=`` option or the class default) and
    ``deadline`` (a ``time.monotonic()`` value the engine sets just before
    ``run``: an I/O check can size its socket timeouts with :meth:`remaining`)
    and ``clock``, the same deadline as a :class:`~torchprobe.common.deadline.Deadline`
    that also knows whether the run's deadline cut the check's timeout short
    and how to word a timeout (the network layer takes it).

    ``worker`` says where the check runs. A name (``"torch"``, ``"nvml"``)
    runs it in a worker process of that name, started with a fresh
    interpreter and killed at the deadline; every check of one worker name in
    a run shares one process, so torch is imported once. ``None`` runs it in a
    thread of the torchprobe process itself: only for checks that cannot
    block while holding the GIL (pure-Python socket I/O). Plugins always run
    in a worker, whatever they set.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Sequence[Option]] = ()
    timeout: float = 5.0
    #: An instance may choose another worker from its options (``cuda:backend=driver``).
    worker: str | None = "default"
    #: Accept undeclared ``KEY=VALUE`` options as text (a plugin function with ``**kwargs``).
    accept_any: ClassVar[bool] = False

    _clock: Deadline | None = None
    _deadline: float = 0.0
    _deadline_set: float = 0.0

    def __init__(self, **values: Any) -> None:
        for option in self.options:
            if option.attr in values:
                value = values.pop(option.attr)
            else:
                value = list(option.default or ()) if option.repeatable else option.default
            setattr(self, option.attr, value)
        if "timeout" in values:
            self.timeout = float(values.pop("timeout"))
        if values:
            raise TypeError(f"{type(self).__name__}: unknown options {sorted(values)}")

    def checks_readiness(self) -> bool:
        """Whether this configuration of the check judges readiness (the
        service can take traffic: its model is loaded, it has capacity) rather
        than liveness (the process can still do its work).

        ``--restart-after`` refuses a readiness check: not ready (a model
        loading, a server at capacity) is no reason to restart. The default,
        also for a plugin that declares nothing, is liveness.
        """
        return False

    def setup(self) -> None:
        """Heavy imports and other preparation, before the check's timeout starts.

        The run's overall deadline still bounds it.
        """

    def run(self) -> str | None | Outcome | Iterable[Outcome]:
        """Do the work. Return normally to pass (a string becomes the message),
        return outcomes for several result lines, raise to fail."""
        raise NotImplementedError

    @property
    def deadline(self) -> float:
        """When this run of the check must end (a ``time.monotonic()`` value)."""
        return self._deadline

    @deadline.setter
    def deadline(self, at: float) -> None:
        self._deadline, self._deadline_set = at, time.monotonic()

    @property
    def clock(self) -> Deadline:
        """This run's deadline as the engine granted it. Where ``deadline`` was
        set by hand (a test, a tool calling ``run()``), what it granted then:
        ``timeout``, or less when it was set nearer (then capped)."""
        clock = self._clock
        if clock is not None and clock.at == self._deadline:
            return clock
        given = self._deadline - self._deadline_set
        if given < self.timeout - 0.001:
            return Deadline(self._deadline, max(0.0, given), capped=True)
        return Deadline(self._deadline, self.timeout)

    @clock.setter
    def clock(self, clock: Deadline) -> None:
        self._clock = clock
        self._deadline, self._deadline_set = clock.at, time.monotonic()
        self.timeout = clock.timeout

    def remaining(self) -> float:
        """Seconds left before this check's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())
