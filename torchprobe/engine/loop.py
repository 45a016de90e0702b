"""The engine: plans a run, runs every check under its deadline, collects results.

Where deadlines are enforced:

- Checks that need torch, NVML or plugin code run in worker processes
  (:mod:`torchprobe.engine.worker`), one per worker name (all torch checks share one,
  so torch is imported once). The engine kills a worker with SIGKILL when the
  check in it runs past its own timeout or the run's deadline passes — a thread
  could not, since a hung native call may hold the GIL — and starts a fresh
  one for the checks still waiting in it.
- Checks that only do socket I/O (``worker = None``) run in threads here, at
  most :data:`INLINE_THREADS` at a time, each check started by the first
  free thread; they bound their own I/O, and the engine stops waiting for
  them at their timeout. A check still waiting for a thread at the run's
  deadline fails as not started.
- The run's deadline bounds everything, worker start-up and imports included.

Failures are values: an exception, a timeout or a crash of a check becomes
that check's failing result and every other check still reports.
"""

from __future__ import annotations

import collections
import os
import queue
import selectors
import sys
import threading
import time
from typing import TYPE_CHECKING

from torchprobe.base import Interrupted, Outcome, UsageError
from torchprobe.common import scrub
from torchprobe.common.deadline import Deadline
from torchprobe.engine import reap as _reap
from torchprobe.engine.plan import Planned, plan
from torchprobe.engine.runner import execute

if TYPE_CHECKING:
    from torchprobe.engine.workerproc import Janitor, WorkerProcess
from torchprobe.results import Result, distinct_names

__all__ = ["Interrupted", "Planned", "plan", "run"]

#: Extra time an in-process check gets beyond its timeout to report its own,
#: more precise failure before the engine reports a bare timeout.
INLINE_GRACE = 0.2
#: Threads that run in-process checks. A thread per check did not scale:
#: starting 4000 of them, each waiting for the GIL that the running ones
#: contend for, took 6.3 s of a 2 s run (2 cores, Python 3.11). With this many,
#: 5000 checks end in time, and 100 slow checks still run all at once (the
#: concurrency benchmark). Checks beyond this many wait for a free thread.
INLINE_THREADS = 128


def run(planned: list[Planned], deadline: Deadline, liveness_only: bool = False) -> list[Result]:
    """Run every planned check; return results in the order the checks were given.

    Nothing runs past ``deadline`` (the round's: see
    :meth:`~torchprobe.common.deadline.Deadline.for_round`). With
    ``liveness_only`` a plugin's worker refuses a plugin that declares
    readiness (a usage error) before it runs any check.
    """
    return _Run(planned, deadline, liveness_only).go()


class _Run:
    def __init__(self, planned: list[Planned], deadline: Deadline,
                 liveness_only: bool = False) -> None:  # fmt: skip
        self.planned = planned
        self.liveness_only = liveness_only
        self.by_index = {p.index: p for p in planned}
        self.clock = deadline
        self.deadline = deadline.at
        self.selector = selectors.DefaultSelector()
        self.workers: list[WorkerProcess] = []
        self.janitor: Janitor | None = None
        self.token = _reap.new_token()
        self.inline_done: queue.Queue[tuple[int, list[Outcome], str | None, float]] = queue.Queue()
        self.inline_waiting: collections.deque[Planned] = collections.deque()
        #: In-process checks running now, by index (only the loop's thread changes it).
        self.inline_running: dict[int, Planned] = {}
        self.inline_started: queue.Queue[Planned] = queue.Queue()
        self.first_open = 0  # planned[:first_open] all have results (see _unfinished)
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
                # grandchild, a daemon (see torchprobe.engine.reap).
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
        for r, name in zip(results, distinct_names([(r.check, r.name) for r in results]),
                           strict=True):  # fmt: skip
            r.name = name
        return results

    # -- starting -------------------------------------------------------------
    def _start(self) -> None:
        groups: dict[str, list[Planned]] = {}
        for p in self.planned:
            if p.worker is None:
                p.phase = f"waiting for a free thread (at most {INLINE_THREADS} at a time)"
                self.inline_waiting.append(p)
            else:
                groups.setdefault(p.worker, []).append(p)
        for key, members in groups.items():
            self._spawn(key, members)
        for n in range(min(INLINE_THREADS, len(self.inline_waiting))):
            threading.Thread(target=self._inline_thread, name=f"checks-{n}", daemon=True).start()

    def _inline_thread(self) -> None:
        """Run waiting in-process checks one after another until none is left."""
        while True:
            with self.ending:
                if self.ended or not self.inline_waiting:
                    return
                now = time.monotonic()
                if now >= self.deadline:
                    return
                p = self.inline_waiting.popleft()
                p.clock = clock = self.clock.grant(p.timeout, now)
                p.started, p.limit, p.phase = now, clock.at + INLINE_GRACE, "running"
                self.inline_started.put(p)
                self._wake()
            assert p.instance is not None
            outcomes, error, duration = execute(p.instance, clock)
            self.inline_done.put((p.index, outcomes, error, duration))
            with self.ending:
                self._wake()

    def _wake(self) -> None:
        """Wake the loop; the caller holds ``ending``. A check abandoned at its
        timeout may finish after the run ended and closed the pipe, whose
        number may be reused."""
        if not self.ended:
            try:
                os.write(self.wake_w, b"x")
            except BlockingIOError:  # full: the loop is woken already
                pass

    def _spawn(self, key: str, members: list[Planned]) -> None:
        # Only a run with worker processes pays for their imports: an http
        # run has none.
        from torchprobe.engine import protocol
        from torchprobe.engine.workerproc import Janitor, WorkerProcess

        items = [
            protocol.JobItem(p.index, p.occurrence.check, p.occurrence.text, p.reference,
                             p.plugin, self.liveness_only)
            for p in members
        ]  # fmt: skip
        job = protocol.Job(items, self.deadline, self.clock.cut)
        for p in members:
            p.phase = "starting its worker process"
        try:
            if self.janitor is None:
                if getattr(sys.modules.get("torchprobe._entry"), "owns_process", bool)():
                    # The console script's process: orphans of the checks'
                    # processes come to it, not to PID 1, until it sweeps.
                    _reap.become_subreaper()
                self.janitor = Janitor(self.token)
            worker = WorkerProcess(key, job, self.token)
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
        # Results are only ever added, so the first open check moves forward:
        # every call together costs one pass over the plan, however many.
        planned = self.planned
        while self.first_open < len(planned) and planned[self.first_open].results is not None:
            self.first_open += 1
        return self.first_open < len(planned)

    def _running(self) -> list[Planned]:
        """The checks whose limits the loop watches: those running in threads
        here and those running in a worker now."""
        running = list(self.inline_running.values())
        for worker in self.workers:
            if worker.current is not None:
                running.append(self.by_index[worker.current])
        return running

    def _loop(self) -> None:
        while self._unfinished():
            now = time.monotonic()
            if now >= self.deadline:
                return
            wake = self.deadline
            for p in self._running():
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
                started = self.inline_started.get_nowait()
            except queue.Empty:
                break
            if started.results is None:
                self.inline_running[started.index] = started
        while True:
            try:
                index, outcomes, error, duration = self.inline_done.get_nowait()
            except queue.Empty:
                return
            p = self.by_index[index]
            self.inline_running.pop(index, None)
            if p.results is None:
                p.finish(outcomes, duration, error)

    def _events(self, worker: WorkerProcess) -> None:
        from torchprobe.engine import protocol

        for event in worker.read_events():
            if isinstance(event, protocol.Usage):
                raise UsageError(event.error)
            if isinstance(event, protocol.Secrets):  # found in the worker (a token file it read)
                scrub.add_forms(event.forms)
                continue
            p = self.by_index.get(event.index)
            if p is None:
                continue
            if isinstance(event, protocol.Valid):
                p.occurrence.shown = event.shown
                if "name" in p.occurrence.shown:
                    p.occurrence.label = event.label or p.occurrence.label
                p.occurrence.secrets.extend(event.secrets)
                for secret in event.secrets:
                    scrub.register(secret)
                p.timeout = float(event.timeout or p.timeout)
                p.declared = event.readiness
            elif isinstance(event, protocol.Setup):
                worker.current = p.index
                p.phase = "setting up (importing its dependencies)"
            elif isinstance(event, protocol.Start):
                now = time.monotonic()
                # The worker granted it from the same round deadline: a
                # timeout of 0 is a check that failed before it could start.
                timeout = float(event.timeout) or p.timeout
                p.clock = Deadline(now + timeout, timeout, capped=event.capped, cut=self.clock.cut)
                p.started, p.limit, p.phase = now, now + timeout, "running"
            elif isinstance(event, protocol.Done):
                p.finish(event.outcomes, float(event.duration), event.error, event.reason)
                worker.current = None
                if p.index in worker.pending:
                    worker.pending.remove(p.index)
        if not worker.stdout_open:
            worker.read_stderr()
            self._unregister(worker)
            worker.kill()
            self._worker_ended(worker, crashed=True)

    def _worker_ended(self, worker: WorkerProcess, crashed: bool, reason: str = "") -> None:
        """A worker is gone: fail the check it was running, restart the rest."""
        from torchprobe.engine.workerproc import describe_exit

        in_flight = worker.current is not None
        if worker.current is not None:
            p = self.by_index[worker.current]
            if p.results is None:
                elapsed = time.monotonic() - (p.started or time.monotonic())
                if crashed:
                    what = describe_exit(worker.proc.returncode)
                    p.fail(f"crashed: its worker process {what} while {_doing(p)}",
                           elapsed, worker.stderr_text() or None, reason="crash")  # fmt: skip
                else:
                    p.fail(reason, elapsed, worker.stderr_text() or None, reason=p.clock.reason)
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
                           (f": {last}" if last else ""), 0.0, tail or None,
                           reason="crash")  # fmt: skip
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
                    reason=p.clock.timed_out(now - (p.started or now))
                + " (its worker process was killed)",
                )  # fmt: skip
        for p in list(self.inline_running.values()):
            if p.results is None and p.limit is not None and now >= p.limit:
                elapsed = now - (p.started or now)
                p.fail(p.clock.timed_out(elapsed), elapsed, reason=p.clock.reason)
                del self.inline_running[p.index]

    def _unregister(self, worker: WorkerProcess) -> None:
        for fd in (worker.stdout_fd, worker.stderr_fd):
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _overdue(self, p: Planned) -> None:
        """A check the run's deadline cut short."""
        now = time.monotonic()
        if p.phase == "running" and p.started is not None:
            # Cut by the round's deadline, whatever its own timeout was.
            cut = Deadline(now, p.timeout, capped=True, cut=self.clock.cut)
            p.fail(cut.timed_out(now - p.started), now - p.started, reason="deadline")
        else:
            p.fail(self.clock.not_finished(_doing(p)), reason="deadline")


def _doing(p: Planned) -> str:
    return "running the check" if p.phase == "running" else p.phase
