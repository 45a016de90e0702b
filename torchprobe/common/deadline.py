"""The deadline: one point in time that every layer asks.

A round of checks has one :class:`Deadline` (:meth:`Deadline.for_round`: the
``--timeout`` or what is left of ``--wait``, less the time kept back to kill
workers and print the report). Each check runs under a deadline granted from
it (:meth:`Deadline.grant`): its own timeout, or less when the round's deadline
comes first — then it is *capped*, and its messages say which limit cut it.
The worker process gets the round's deadline as a number (``time.monotonic()``
is one clock for every process of the machine) and grants from it the same way;
the network layer sizes every socket wait from the check's deadline
(:meth:`Deadline.left`) and words its timeouts from it (:meth:`Deadline.expired`).

Nothing here imports anything: the command line, the engine, the checks and
the in-process monitor all use it.
"""

from __future__ import annotations

import time

__all__ = ["Deadline", "seconds"]

#: Time kept back from a round's deadline to kill workers and print the report,
#: plus this much per check: failing 5000 unfinished checks and printing their
#: report took 0.35 s (70 µs each; 2 shared cores, Python 3.11).
MARGIN, PER_CHECK = 0.05, 0.0001
#: The least time a check is given, so that a check started at the last moment
#: still runs (and reports its own timeout) instead of dividing by nothing.
LEAST = 0.001


def seconds(value: float) -> str:
    """``2`` -> ``2s``, ``0.25`` -> ``250ms``, ``1.25`` -> ``1.25s``: a duration in a message."""
    millis = round(value * 1000)
    return f"{millis}ms" if millis < 1000 else f"{value:.3g}s"


class Deadline:
    """A ``time.monotonic()`` value, the timeout it stands for, and how to word it.

    ``timeout`` is what the messages name: the check's own timeout when the
    round left it whole, else what the round left (``capped``). ``cut`` words
    the round's limit for a capped check: "the run's deadline (2s) passed".
    """

    __slots__ = ("at", "timeout", "capped", "cut")

    def __init__(self, at: float, timeout: float, *, capped: bool = False, cut: str = "") -> None:
        self.at = at
        self.timeout = timeout
        self.capped = capped
        self.cut = cut or f"the run's deadline ({seconds(timeout)}) passed"

    @classmethod
    def after(cls, timeout: float, now: float | None = None) -> Deadline:
        """``timeout`` seconds from now."""
        return cls((time.monotonic() if now is None else now) + timeout, timeout)

    @classmethod
    def for_round(cls, start: float, timeout: float, checks: int, wait_end: float | None = None,
                  wait: float | None = None) -> Deadline:  # fmt: skip
        """The deadline of one round that started at ``start``: its ``--timeout``
        or, when it ends first, the end of ``--wait`` (``wait_end``), less the
        margin for ending the round and reporting ``checks`` checks."""
        margin = MARGIN + PER_CHECK * checks
        at = start + timeout - margin
        if wait_end is not None and wait is not None and wait_end - margin < at:
            return cls(wait_end - margin, timeout, cut=f"the --wait time ({seconds(wait)}) ran out")
        return cls(at, timeout)

    def left(self, now: float | None = None) -> float:
        """Seconds until the deadline, never negative."""
        return max(0.0, self.at - (time.monotonic() if now is None else now))

    def passed(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.at

    def grant(self, timeout: float, now: float | None = None) -> Deadline:
        """A check's deadline: its own ``timeout`` from now, or what is left of
        this one when that comes first (then ``capped``)."""
        now = time.monotonic() if now is None else now
        given = max(LEAST, min(timeout, self.at - now))
        capped = given < timeout
        return Deadline(now + given, given if capped else timeout, capped=capped, cut=self.cut)

    def timed_out(self, elapsed: float) -> str:
        """The failure of a check that ran ``elapsed`` seconds until this deadline."""
        if self.capped:
            return f"timed out: {self.cut} {seconds(elapsed)} into the check"
        return f"timed out after {seconds(self.timeout)}"

    def not_finished(self, doing: str) -> str:
        """The failure of a check the round's deadline stopped before it ran."""
        return f"not finished: {self.cut} while {doing}"

    def expired(self, what: str) -> str:
        """A timed-out step inside a check: "timed out after 2s: connecting to …"."""
        return f"timed out after {seconds(self.timeout)}: {what}"

    @property
    def reason(self) -> str:
        """The result's reason when this deadline ends a check: its own timeout
        (``timeout``) or the round's (``deadline``)."""
        return "deadline" if self.capped else "timeout"

    def __repr__(self) -> str:
        return f"Deadline(left={self.left():.3f}s, timeout={self.timeout}, capped={self.capped})"
