"""What a run produces: one :class:`Result` per output line, and the :class:`Report`.

Renderers draw on these alone, so text, JSON and Prometheus output always
agree.
"""

from __future__ import annotations

from typing import Any

from torchprobe.base import Status

__all__ = ["REASONS", "Report", "Result", "distinct_names", "reason_of"]

#: Why a result is what it is, for renderers and the report to read instead of
#: its message: ``passed``, ``skipped``, ``failed`` (the check said so),
#: ``error`` (the check raised, or could not be loaded or started),
#: ``timeout`` (its own timeout ran out), ``deadline`` (the run's deadline or
#: the end of ``--wait`` cut it short or left it unstarted), ``crash`` (its
#: worker process died under it).
REASONS = ("passed", "skipped", "failed", "error", "timeout", "deadline", "crash")


def reason_of(status: Status, error: str | None = None, ended: str | None = None) -> str:
    """The reason of a result: ``ended`` where the engine ended the check, else
    what its status and traceback (``error``) say."""
    if status is Status.PASS:
        return "passed"
    if status is Status.SKIP:
        return "skipped"
    if ended is not None:
        return ended
    return "error" if error else "failed"


class Result:
    """One line of output: one outcome of one check occurrence."""

    __slots__ = (
        "check", "name", "status", "message", "duration", "details", "options", "error", "reason",
    )  # fmt: skip

    def __init__(
        self,
        check: str,
        name: str,
        status: Status,
        message: str,
        duration: float,
        details: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.check = check
        self.name = name
        self.status = status
        self.message = message
        self.duration = duration
        self.details = details or {}
        self.options = options or {}
        self.error = error
        #: One of :data:`REASONS`.
        self.reason = reason or reason_of(status, error)

    def __bool__(self) -> bool:
        return self.status is not Status.FAIL

    def __repr__(self) -> str:
        return f"Result({self.name}: {self.status.value}, {self.message!r})"


class Report:
    """All results of a run, and the verdict: healthy when nothing failed and
    at least one check passed (all-skipped proves nothing)."""

    __slots__ = ("results", "duration", "version", "rounds", "undeclared")

    def __init__(
        self, results: list[Result], duration: float, version: str, rounds: int = 1
    ) -> None:
        self.results = results
        self.duration = duration
        self.version = version
        self.rounds = rounds  # with --wait: how many rounds ran
        #: Plugin checks that never said whether they check readiness (not loaded).
        self.undeclared: list[str] = []

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def healthy(self) -> bool:
        return self.count(Status.FAIL) == 0 and self.count(Status.PASS) > 0

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 1


def distinct_names(results: list[tuple[str, str]]) -> list[str]:
    """The names of ``(check, name)`` pairs, a repeated name suffixed ``#2``, ``#3``...

    Two lines with one name would be one series twice in Prometheus, which
    Prometheus and node_exporter's textfile collector reject whole: a plugin
    may return two outcomes with one target, and ``tensor:device=cpu|cpu``
    probes cpu twice."""
    taken = {name for _, name in results}
    seen: set[str] = set()
    out: list[str] = []
    for _, name in results:
        if name in seen:
            n = 2
            while f"{name}#{n}" in taken:
                n += 1
            name = f"{name}#{n}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out
