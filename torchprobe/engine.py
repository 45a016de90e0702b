"""The engine: plans a run, runs every check under its deadline, collects results.

Where deadlines are enforced:

- Checks that need torch, NVML or plugin code run in worker processes
  (:mod:`torchprobe.worker`), one per worker name (all torch checks share one,
  so torch is imported once). The engine kills a worker with SIGKILL when the
  check in it runs past its own timeout or the run's deadline passes — a thread
  could not, since a hung native call may hold the GIL — and starts a fresh
  one for the checks still waiting in it.
- Checks that only do socket I/O (``worker = None``) run in threads here; they
  bound their own I/O, and the engine stops waiting for them at their timeout.
- The run's deadline bounds everything, worker start-up and imports included.

Failures are values: an exception, a timeout or a crash of a check becomes
that check's failing result and every other check still reports.
"""

from __future__ import annotations

import os
import queue
import selectors
import sys
import threading
import time
from typing import Any

from . import _reap
from .base import Interrupted, Outcome, Status, UsageError
from .plan import Planned, plan
from .results import Result
from .runner import execute

__all__ = ["Interrupted", "Planned", "plan", "run"]

#: Extra time an in-process check gets beyond its timeout to report its own,
#: more precise failure before the engine reports a bare timeout.
INLINE_GRACE = 0.2


def run(planned: list[Planned], deadline: float, budget: float) -> list[Result]:
    """Run every planned check; return results in the order the checks were given.

    ``deadline`` is a ``time.monotonic()`` value: nothing runs past it.
    ``budget`` is the run's whole timeout, for messages.
    """
    return _Run(planned, deadline, budget).go()


class _Run:
    def __init__(self, planned: list[Planned], deadline: float, budget: float) -> None:
        self.planned = planned
        self.by_index = {p.index: p for p in planned}
        self.deadline = deadline
        self.budget = budget
        self.selector = selectors.DefaultSelector()
        self.workers: list[Any] = []
        self.janitor: Any = None
        self.token = _reap.new_token()
        self.inline_done: queue.Queue[tuple[int, list[Outcome], str | None, float]] = queue.Queue()
        self.ending = threading.Lock()
        self.ended = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)

    def go(self) -> list[Result]:
        try:
            self._start()
            self._loop()
        finally:
            for worker in self.workers:
                worker.kill()
            if self.janitor is not None:
                self.janitor.dismiss()
                # What hid from the process groups just killed: a setsid
                # grandchild, a daemon (see torchprobe._reap).
                _reap.sweep(self.token)
            self.selector.close()
            with self.ending:
                self.ended = True
                os.close(self.wake_r)
                os.close(self.wake_w)
        for p in self.planned:
            if p.results is None:
                self._overdue(p)
        results: list[Result] = []
        for p in self.planned:
            results.extend(p.results or ())
        _scrub(results, [s for p in self.planned for s in p.occurrence.secrets])
        return results

    # -- starting -------------------------------------------------------------
    def _start(self) -> None:
        groups: dict[str, list[Planned]] = {}
        for p in self.planned:
            if p.worker is None:
                self._start_inline(p)
            else:
                groups.setdefault(p.worker, []).append(p)
        for key, members in groups.items():
            self._spawn(key, members)

    def _start_inline(self, p: Planned) -> None:
        assert p.instance is not None
        now = time.monotonic()
        timeout = max(0.001, min(p.timeout, self.deadline - now))
        p.capped = timeout < p.timeout
        p.started, p.limit, p.phase = now, now + timeout + INLINE_GRACE, "running"
        instance = p.instance

        def work() -> None:
            outcomes, error, duration = execute(instance, timeout)
            self.inline_done.put((p.index, outcomes, error, duration))
            with self.ending:
                # A check abandoned at its timeout may finish after the run
                # ended and closed the pipe, whose number may be reused.
                if not self.ended:
                    try:
                        os.write(self.wake_w, b"x")
                    except BlockingIOError:  # full: the loop is woken already
                        pass

        threading.Thread(target=work, name=f"check-{p.occurrence.label}", daemon=True).start()

    def _spawn(self, key: str, members: list[Planned]) -> None:
        from .workerproc import Janitor, WorkerProcess

        job = [
            {"index": p.index, "check": p.occurrence.check, "token": p.occurrence.text,
             "ref": p.reference, "plugin": p.plugin}
            for p in members
        ]  # fmt: skip
        for p in members:
            p.phase = "starting its worker process"
        try:
            if self.janitor is None:
                if getattr(sys.modules.get("torchprobe._entry"), "owns_process", bool)():
                    # The console script's process: orphans of the checks'
                    # processes come to it, not to PID 1, until it sweeps.
                    _reap.become_subreaper()
                self.janitor = Janitor(self.token)
            worker = WorkerProcess(key, job, self.deadline, self.token)
            self.janitor.watch(worker.proc.pid)
        except OSError as exc:
            for p in members:
                p.fail(f"could not start a worker process: {exc}")
            return
        self.workers.append(worker)
        self.selector.register(worker.stdout_fd, selectors.EVENT_READ, (worker, "out"))
        self.selector.register(worker.stderr_fd, selectors.EVENT_READ, (worker, "err"))

    # -- the loop -------------------------------------------------------------
    def _unfinished(self) -> bool:
        return any(p.results is None for p in self.planned)

    def _loop(self) -> None:
        while self._unfinished():
            now = time.monotonic()
            if now >= self.deadline:
                return
            wake = self.deadline
            for p in self.planned:
                if p.results is None and p.limit is not None:
                    wake = min(wake, p.limit)
            for key, _ in self.selector.select(timeout=max(0.0, wake - now)):
                if key.data is None:
                    self._drain_inline()
                else:
                    worker, stream = key.data
                    if worker.closed:
                        continue  # ended earlier in this batch of events
                    if stream == "err":
                        worker.read_stderr()
                        if not worker.stderr_open:
                            self.selector.unregister(worker.stderr_fd)
                    else:
                        self._events(worker)
            self._enforce(time.monotonic())

    def _drain_inline(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                index, outcomes, error, duration = self.inline_done.get_nowait()
            except queue.Empty:
                return
            p = self.by_index[index]
            if p.results is None:
                p.finish(outcomes, duration, error)

    def _events(self, worker: Any) -> None:
        for event in worker.read_events():
            kind = event.get("t")
            p = self.by_index.get(event.get("index", -1))
            if kind == "usage":
                raise UsageError(str(event.get("error")))
            if p is None:
                continue
            if kind == "valid":
                p.occurrence.shown = event.get("shown") or {}
                if "name" in p.occurrence.shown:
                    p.occurrence.label = event.get("label") or p.occurrence.label
                p.occurrence.secrets.extend(event.get("secrets") or ())
                p.timeout = float(event.get("timeout") or p.timeout)
            elif kind == "setup":
                worker.current = p.index
                p.phase = "setting up (importing its dependencies)"
            elif kind == "start":
                now = time.monotonic()
                timeout = float(event.get("timeout") or 0) or p.timeout
                p.started, p.limit, p.phase = now, now + timeout, "running"
                p.capped = timeout < p.timeout - 0.001
            elif kind == "result":
                outcomes = [
                    Outcome(Status(o["status"]), o.get("message", ""), o.get("details"),
                            o.get("target"))
                    for o in event.get("outcomes") or ()
                ]  # fmt: skip
                p.finish(outcomes, float(event.get("duration") or 0.0), event.get("error"))
                worker.current = None
                if p.index in worker.pending:
                    worker.pending.remove(p.index)
        if not worker.stdout_open:
            worker.read_stderr()
            self._unregister(worker)
            worker.kill()
            self._worker_ended(worker, crashed=True)

    def _worker_ended(self, worker: Any, crashed: bool, reason: str = "") -> None:
        """A worker is gone: fail the check it was running, restart the rest."""
        from .workerproc import describe_exit

        in_flight = worker.current is not None
        if worker.current is not None:
            p = self.by_index[worker.current]
            if p.results is None:
                elapsed = time.monotonic() - (p.started or time.monotonic())
                if crashed:
                    what = describe_exit(worker.proc.returncode)
                    p.fail(f"crashed: its worker process {what} while {_doing(p)}",
                           elapsed, worker.stderr_text() or None)  # fmt: skip
                else:
                    p.fail(reason, elapsed, worker.stderr_text() or None)
            worker.pending = [i for i in worker.pending if i != worker.current]
            worker.current = None
        rest = [self.by_index[i] for i in worker.pending if self.by_index[i].results is None]
        worker.pending = []
        if not rest:
            return
        if crashed and not in_flight:
            # It died before reaching a check: something is wrong with the
            # worker itself (a broken install); restarting would loop.
            what = describe_exit(worker.proc.returncode)
            tail = worker.stderr_text()
            last = tail.splitlines()[-1] if tail else ""
            for p in rest:
                if p.results is None:
                    p.fail(f"worker process {what} before the check ran" +
                           (f": {last}" if last else ""), 0.0, tail or None)  # fmt: skip
            return
        if time.monotonic() < self.deadline:
            self._spawn(worker.key, rest)

    def _enforce(self, now: float) -> None:
        for worker in list(self.workers):
            if worker.current is None:
                continue
            p = self.by_index[worker.current]
            if p.results is None and p.limit is not None and now >= p.limit:
                self._unregister(worker)
                worker.kill()
                self._worker_ended(
                    worker, crashed=False,
                    reason=self._timed_out(p, now) + " (its worker process was killed)",
                )  # fmt: skip
        for p in self.planned:
            if p.worker is None and p.results is None and p.limit is not None and now >= p.limit:
                p.fail(self._timed_out(p, now), now - (p.started or now))

    def _timed_out(self, p: Planned, now: float) -> str:
        if p.capped:
            return (f"timed out: the run's deadline ({_secs(self.budget)}) passed "
                    f"{_secs(now - (p.started or now))} into the check")  # fmt: skip
        return f"timed out after {_secs(p.timeout)}"

    def _unregister(self, worker: Any) -> None:
        for fd in (worker.stdout_fd, worker.stderr_fd):
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _overdue(self, p: Planned) -> None:
        """A check the run's deadline cut short."""
        now = time.monotonic()
        if p.phase == "running" and p.started is not None:
            p.fail(f"timed out: the run's deadline ({_secs(self.budget)}) passed "
                   f"{_secs(now - p.started)} into the check", now - p.started)  # fmt: skip
        else:
            p.fail(f"not finished: the run's deadline ({_secs(self.budget)}) passed "
                   f"while {_doing(p)}")  # fmt: skip


def _doing(p: Planned) -> str:
    return "running the check" if p.phase == "running" else p.phase


def _secs(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.3g}s"


def _scrub(results: list[Result], secrets: list[str]) -> None:
    """Belt and braces: no secret value appears anywhere in the output, even
    where a check or an exception message echoed it."""
    secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    if not secrets:
        return

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    for r in results:
        r.message = clean(r.message)
        r.details = clean(r.details)
        r.error = clean(r.error)
        r.options = clean(r.options)
