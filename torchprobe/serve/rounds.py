"""The rounds of one set of checks, run by a thread of its own.

Each round is planned afresh (new check instances, as ``--wait`` rounds are)
and runs under a deadline no longer than the interval
(:meth:`~torchprobe.common.deadline.Deadline.for_round`), so a round ends
before the next is due and never overlaps itself; the next starts one
interval after this one started, or at once when this one used all of it.
The two sets never wait for each other: a readiness check that hangs is
killed at its set's deadline while the liveness verdicts go on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from torchprobe import __version__
from torchprobe.base import UsageError
from torchprobe.common.deadline import Deadline, seconds
from torchprobe.results import Report

__all__ = ["Rounds", "Verdict"]


class Verdict:
    """One finished round: its report, when it ended and how long it took."""

    __slots__ = ("report", "ended", "ended_wall", "duration")

    def __init__(self, report: Report, ended: float, ended_wall: float, duration: float) -> None:
        self.report = report
        self.ended = ended  # time.monotonic()
        self.ended_wall = ended_wall  # time.time(), for the timestamp series
        self.duration = duration


class Rounds:
    """The rounds of one set (``probe``: ``live`` or ``ready``) and its last verdict."""

    def __init__(self, probe: str, tokens: list[str], interval: float, stop: threading.Event,
                 fatal: Callable[[str], None], liveness_only: bool = False) -> None:  # fmt: skip
        self.probe = probe
        self.tokens = tokens
        self.interval = interval
        self.stop = stop
        self.fatal = fatal
        self.liveness_only = liveness_only
        self.started = time.monotonic()
        self.rounds = 0
        #: Replaced whole by the rounds' thread; read by the server's (one reference: atomic).
        self.last: Verdict | None = None
        self.thread = threading.Thread(target=self._loop, name=f"rounds-{probe}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        from torchprobe.engine import loop as engine

        while not self.stop.is_set():
            start = time.monotonic()
            try:
                planned = engine.plan(self.tokens, os.environ)
                deadline = Deadline.for_round(start, self.interval, len(planned))
                deadline.cut = (f"the {self.probe} round's deadline "
                                f"(--interval {seconds(self.interval)}) passed")  # fmt: skip
                results = engine.run(planned, deadline, liveness_only=self.liveness_only)
            except UsageError as exc:
                # A plugin's worker refused it (it declares readiness in --live):
                # known only once its code loads, at the first round.
                message = str(exc).replace("--restart-after:", f"serve --{self.probe}:", 1)
                self.fatal(message)
                return
            except Exception as exc:  # noqa: BLE001 - the sidecar ends in one line, exit 1
                from torchprobe.common.errors import describe_exception

                self.fatal(f"internal error in a {self.probe} round: {describe_exception(exc)}")
                return
            ended = time.monotonic()
            report = Report(results, ended - start, __version__, 1)
            self.last = Verdict(report, ended, time.time(), ended - start)
            self.rounds += 1
            self.stop.wait(max(0.0, start + self.interval - time.monotonic()))
