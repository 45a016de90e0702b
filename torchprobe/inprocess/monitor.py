"""The in-process monitor: the serving process's own view of its health.

A separate probe process gets a fresh CUDA context and cannot see the
server's: after an illegal memory access or a device-side assert the server's
context is poisoned for good while a fresh probe passes. Only the server can
see it. The monitor runs the CLI's checks inside the server's process (in a
thread of its own, at most once per ``interval``), learns of the app's model
loading and of its errors, measures whether requests are stuck, and answers
"live?" and "ready?" from that state in microseconds. Optionally it writes the
state to ``<status_dir>/<pid>.json`` for the ``status-file`` CLI check, so an
exec probe sees the server's own context without HTTP and without torch.
With a CUDA device it also holds an NVML event set for its GPU, so that a
critical GPU event (Xid) makes the process not live as it happens
(:mod:`torchprobe.gpu.xidwatch`, judged by :mod:`torchprobe.gpu.xid`).

Start it in each serving process after any fork (gunicorn: ``post_fork``);
it also starts lazily on first use. One per process: a second one is an
error when it is made (two would write one status file). Nothing a request
calls waits for the file system: the status file is written from a thread
of its own (:mod:`torchprobe.inprocess.statuswriter`). See docs/monitor-contract.md
for the state document.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from torchprobe import __version__
from torchprobe.base import Check, Status, UsageError
from torchprobe.common.deadline import Deadline
from torchprobe.common.status_doc import (
    SCHEMA_VERSION,
    CheckEntry,
    GpuMemory,
    Lifecycle,
    StatusDocument,
    Sticky,
    XidDocument,
)
from torchprobe.common.statusdir import pid_start
from torchprobe.gpu.xidstate import XidState
from torchprobe.gpu.xidwatch import GpuEvent, XidWatch, watch_targets
from torchprobe.inprocess.statuswriter import StatusWriter
from torchprobe.inprocess.sticky import StickyError, classify, classify_text

if TYPE_CHECKING:
    import asyncio

__all__ = ["Monitor", "Verdict"]

log = logging.getLogger("torchprobe")
F = TypeVar("F", bound=Callable[..., Any])
#: How often the event-loop lag probe ticks (seconds).
LOOP_TICK = 0.5
#: How long stop() waits for a write under way before it returns anyway.
STOP_WAIT = 2.0

#: The process's monitor, while one exists and is not stopped.
_current: weakref.ref[Monitor] | None = None
_current_lock = threading.Lock()


def _claim(monitor: Monitor) -> None:
    global _current
    with _current_lock:
        other = _current() if _current is not None else None
        if other is not None and not other._stopped:
            raise RuntimeError(
                f"torchprobe: this process already has a Monitor (made at {other._made_at}); "
                "make one per process and share it (it is fork-aware: a forked child uses "
                "the parent's), or stop() the first one before making another"
            )
        _current = weakref.ref(monitor)


def _before_fork() -> None:
    monitor = _current() if _current is not None else None
    if monitor is not None:
        monitor._before_fork()


# Registered once for the module, not per monitor: a callback would keep its
# monitor alive for good, and a dropped monitor must not block a new one.
os.register_at_fork(before=_before_fork)


class Verdict:
    """The answer to "live?" or "ready?": truthy when ``ok``, with reasons when not."""

    __slots__ = ("ok", "reasons")

    def __init__(self, ok: bool, reasons: list[str]) -> None:
        self.ok = ok
        self.reasons = reasons

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"Verdict({self.ok}, {self.reasons!r})"


class _Guard:
    """``with monitor.guard():`` — one request in flight, its errors recorded."""

    __slots__ = ("monitor", "token")

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.token = 0

    def __enter__(self) -> None:
        self.token = self.monitor._begin()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.monitor._end(self.token)
        if exc is not None and isinstance(exc, Exception):
            self.monitor.record_error(exc)

    def cancel(self) -> None:
        """Stop tracking the request without counting it as completed (a probe's
        own request, which an adapter recognises only once it is under way)."""
        self.monitor._end(self.token, completed=False)


class Monitor:
    """One per serving process. See the module docstring and docs/monitor.md."""

    def __init__(
        self,
        checks: Sequence[str] | None = None,
        *,
        device: str | None = None,
        interval: float = 10.0,
        max_busy: float = 60.0,
        status_dir: str | os.PathLike[str] | bool | None = None,
        xid: bool = True,
        xid_ignore: Iterable[int] = (),
        xid_fatal: Iterable[int] = (),
    ) -> None:
        if not interval > 0 or not max_busy > 0:
            raise ValueError("interval and max_busy must be greater than zero")
        self.interval = float(interval)
        self.max_busy = float(max_busy)
        self.device = device
        self._specs = list(checks) if checks is not None else None
        self.xid = xid
        self._xid_sets = (tuple(xid_ignore), tuple(xid_fatal))
        XidState(*self._xid_sets)  # a bad Xid number fails here, at once
        self._xid_watch: XidWatch | None = None
        self._checks: list[Check] | None = None
        self._status_setting = status_dir
        self._writer: StatusWriter | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._owner: int | None = None
        self._stopped = False
        self._counter = itertools.count(1)
        self._lifecycle: Lifecycle = {"state": "waiting", "error": None, "since": time.time()}
        self._sticky: Sticky | None = None
        self._reset()
        self._pid_start: int | None = pid_start(os.getpid())
        if self._specs is not None:
            self._checks = self._build(self._specs)  # bad CHECK strings fail here, at once
        caller = sys._getframe(1)  # for the message of a second Monitor
        self._made_at = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        _claim(self)

    @property
    def status_dir(self) -> str | None:
        """Where this process's status file goes (known once its writer started)."""
        writer = self._writer
        return writer.directory if writer is not None else None

    # -- life of the monitor -----------------------------------------------------
    def _reset(self) -> None:
        """Forget what belongs to one process (a forked child starts afresh);
        what the app said of its model, and a sticky error, are kept."""
        self._inflight: dict[int, float] = {}
        #: Requests that left guard() in this process, returned or raised.
        self._completed = 0
        self._completed_lock = threading.Lock()
        self._loops: set[int] = set()
        self._pid_start = None  # read again by the monitor's thread: /proc is a file
        self._results: list[CheckEntry] = []
        self._round_failed: list[str] = []
        self._running: tuple[str, float, float] | None = None  # label, started, timeout
        self._last_round: float | None = None
        self._loop_expected: float | None = None
        self._loop_lag: float | None = None
        self._gpu: GpuMemory | None = None
        # Counts since this process's monitor started: a restarted (or forked)
        # process starts clean.
        self._xid = XidState(*self._xid_sets)

    def start(self) -> Monitor:
        """Start the monitor's thread in this process (idempotent, fork-aware)."""
        with self._lock:
            pid = os.getpid()
            if self._owner == pid or self._stopped:
                return self
            if self._owner is not None:  # a forked child: the parent's threads are not here
                self._reset()
            self._owner = pid
            # Both threads start here, where the first request may be: neither
            # this nor anything else a request calls touches a file.
            self._writer = None
            if self._status_setting is not False:
                self._writer = StatusWriter(self._status_setting, self.state, self._warn_write)
        threading.Thread(target=self._run, name="torchprobe-monitor", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop the threads and remove this process's status file (waiting at
        most STOP_WAIT seconds for a write under way: the file system may hang)."""
        with self._lock:
            self._stopped = True
            writer = self._writer if self._owner == os.getpid() else None
            watch, self._xid_watch = self._xid_watch, None
        if watch is not None:
            watch.stop()
        self._wake.set()
        if writer is not None:
            writer.stop(STOP_WAIT)

    def _before_fork(self) -> None:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        initialised = getattr(cuda, "is_initialized", lambda: False)
        if self._owner == os.getpid() and initialised():
            log.warning(
                "torchprobe: forking after the monitor initialised CUDA in this process: the "
                "child cannot use CUDA. Start the monitor after the fork (gunicorn: post_fork; "
                "no --preload with a CUDA device)"
            )

    def _ensure(self) -> None:
        if self._owner != os.getpid() and not self._stopped:
            self.start()

    # -- the app's life ----------------------------------------------------------------
    def loading(self) -> None:
        self._set_lifecycle("loading", None)

    def loaded(self) -> None:
        self._set_lifecycle("ready", None)

    def load_failed(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._set_lifecycle("failed", " ".join(text.split())[:500])
        if isinstance(error, BaseException):
            self.record_error(error)

    def _set_lifecycle(self, state: str, error: str | None) -> None:
        # Does not start the monitor: an app preloaded in gunicorn's master
        # reports its model there, and nothing may touch CUDA before the fork.
        with self._lock:
            self._lifecycle = {"state": state, "error": error, "since": time.time()}
        self._publish()

    # -- errors and requests -------------------------------------------------------
    def record_error(self, exc: BaseException) -> bool:
        """Note an error the app saw; True when it is a sticky CUDA error, which
        makes this process not live for good."""
        sticky = classify(exc)
        if sticky is not None:
            self._mark_sticky(sticky)
        return sticky is not None

    def _mark_sticky(self, sticky: StickyError) -> None:
        with self._lock:
            if self._sticky is not None:
                return
            self._sticky = sticky.as_dict(time.time())
        log.error("torchprobe: sticky CUDA error %s (%s): this process must be restarted",
                  sticky.code, sticky.message)  # fmt: skip
        self._publish()

    def guard(self) -> _Guard:
        """``with monitor.guard():`` around a request's work: its age is watched
        against ``max_busy`` and its exceptions are recorded (then re-raised)."""
        self._ensure()
        return _Guard(self)

    def guarded(self, function: F) -> F:
        """Decorator form of :meth:`guard`, for plain and ``async`` functions."""
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self.guard():
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self.guard():
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    def _begin(self) -> int:
        token = next(self._counter)
        self._inflight[token] = time.monotonic()
        return token

    def _end(self, token: int, completed: bool = True) -> None:
        self._inflight.pop(token, None)
        if completed:
            with self._completed_lock:
                self._completed += 1

    def track_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Measure the lag of the running event loop (call from inside it): a
        handler that blocks the loop blocks every request, health ones included."""
        import asyncio

        self._ensure()
        loop = loop or asyncio.get_running_loop()
        with self._lock:
            # One tick chain per loop: a second would hide the first one's lag.
            if id(loop) in self._loops:
                return
            self._loops.add(id(loop))

        def tick() -> None:
            now = time.monotonic()
            if self._loop_expected is not None:
                self._loop_lag = max(0.0, now - self._loop_expected)
            if not self._stopped:
                self._loop_expected = now + LOOP_TICK
                loop.call_later(LOOP_TICK, tick)

        loop.call_soon_threadsafe(tick)

    # -- answers -----------------------------------------------------------------------
    def live(self) -> Verdict:
        self._ensure()
        return Verdict(*self._live(time.monotonic()))

    def ready(self) -> Verdict:
        self._ensure()
        ok, reasons = self._live(time.monotonic())
        lifecycle = self._lifecycle
        if lifecycle["state"] != "ready":
            ago = time.time() - lifecycle["since"]
            reasons = reasons + [_not_ready(lifecycle["state"], ago)]
        return Verdict(ok and lifecycle["state"] == "ready", reasons)

    def _live(self, now: float) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        sticky = self._sticky
        if sticky is not None:
            reasons.append(f"sticky CUDA error {sticky['code']} ({sticky['message'][:200]}): "
                           "restart the process")  # fmt: skip
        lifecycle = self._lifecycle
        if lifecycle["state"] == "failed":
            reasons.append(f"model failed to load: {lifecycle['error']}")
        reasons.extend(self._xid.reasons())
        reasons.extend(self._round_failed)
        running = self._running
        if running is not None and now - running[1] > running[2]:
            reasons.append(f"periodic check {running[0]} running for {now - running[1]:.0f}s "
                           f"(timeout {running[2]:g}s)")  # fmt: skip
        oldest = min(self._inflight.values(), default=None)
        if oldest is not None and now - oldest > self.max_busy:
            reasons.append(f"a request in flight for {now - oldest:.0f}s "
                           f"(max-busy {self.max_busy:g}s)")  # fmt: skip
        lag = self._current_lag(now)
        if lag is not None and lag > self.max_busy:
            reasons.append(f"event loop blocked for {lag:.0f}s (max-busy {self.max_busy:g}s)")
        return not reasons, reasons

    def _current_lag(self, now: float) -> float | None:
        if self._loop_expected is None:
            return None
        overdue = now - self._loop_expected
        return max(self._loop_lag or 0.0, overdue) if overdue > 0 else self._loop_lag

    def state(self) -> StatusDocument:
        """A JSON-able snapshot: the document the status file holds."""
        self._ensure()
        now_mono, now = time.monotonic(), time.time()
        live_ok, live_reasons = self._live(now_mono)
        ready = self.ready()
        running = self._running
        oldest = min(self._inflight.values(), default=None)
        return {
            "schema_version": SCHEMA_VERSION,
            "torchprobe_version": __version__,
            "pid": os.getpid(),
            "pid_start": self._pid_start,
            "updated": now,
            "interval": self.interval,
            "max_busy": self.max_busy,
            "live": live_ok,
            "ready": ready.ok,
            "reasons": {"live": live_reasons, "ready": ready.reasons},
            "lifecycle": self._lifecycle.copy(),
            "sticky": self._sticky.copy() if self._sticky else None,
            "busy": {
                "in_flight": len(self._inflight),
                "completed": self._completed,
                "oldest_seconds": round(now_mono - oldest, 3) if oldest is not None else 0.0,
                "loop_lag_seconds": self._current_lag(now_mono),
            },
            "running_since": now - (now_mono - running[1]) if running else None,
            "last_round": self._last_round,
            "checks": list(self._results),
            "gpu": self._gpu,
            # Built in gpu/, which knows nothing of this module: the same fields.
            "xid": cast(XidDocument, self._xid.document()),
        }

    # -- the thread --------------------------------------------------------------------
    def _build(self, specs: Sequence[str]) -> list[Check]:
        from torchprobe.engine.plan import plan

        planned = plan(specs, os.environ)
        built: list[Check] = []
        for p in planned:
            instance = p.instance
            if instance is None:  # a plugin: parsed against its own declarations now
                from torchprobe.engine.plan import instantiate
                from torchprobe.engine.plugins import load_plugin

                cls = load_plugin(p.occurrence.check, p.reference)
                instance, _ = instantiate(cls, p.occurrence.text, os.environ)
            instance.label = p.occurrence.label  # type: ignore[attr-defined]
            built.append(instance)
        return built

    def _default_checks(self) -> list[Check]:
        device = self.device
        if device is None:
            try:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            except ImportError:
                device = "cpu"
        return self._build([f"tensor:device={device}"])

    def _run(self) -> None:
        owner = os.getpid()
        self._pid_start = pid_start(owner)
        if self.xid:
            # A thread of its own: finding the device may import torch, which
            # would hold back the first status file by seconds.
            threading.Thread(target=self._watch_xid, name="torchprobe-xid", daemon=True).start()
        round_thread: threading.Thread | None = None
        next_round = time.monotonic()
        while not self._stopped and self._owner == owner:
            if (round_thread is None or not round_thread.is_alive()) and (
                time.monotonic() >= next_round
            ):
                round_thread = threading.Thread(target=self._round, name="torchprobe-round",
                                                daemon=True)  # fmt: skip
                round_thread.start()
                next_round = time.monotonic() + self.interval
                round_thread.join(timeout=min(self.interval, 5.0))
            self._publish()
            self._wake.wait(timeout=max(0.05, min(self.interval, next_round - time.monotonic())))
            self._wake.clear()

    def _cuda_device(self) -> str | None:
        """The monitor's CUDA device, or None for a CPU monitor. Without
        ``device=``, CUDA is asked of the torch the app loaded (or of torch
        itself when the monitor runs its default, torch, checks)."""
        device = self.device
        if device is None:
            torch = sys.modules.get("torch")
            if torch is None and self._specs is None:
                try:
                    # Not `import torch`: that would rebind the name taken from
                    # sys.modules above, which mypy rejects where torch is absent.
                    torch = importlib.import_module("torch")
                except ImportError:
                    torch = None
            try:
                device = "cuda" if torch is not None and torch.cuda.is_available() else None
            except Exception:  # noqa: BLE001 - a broken CUDA install: no GPU to watch
                device = None
        return device if device is not None and device.startswith("cuda") else None

    def _watch_xid(self) -> None:
        """The Xid watch, in this thread, while the monitor runs in this process."""
        device = self._cuda_device()
        if device is None:
            return  # a CPU monitor watches nothing; "off" says so
        targets = watch_targets(device, os.environ)
        self._xid.gpus = targets
        if not targets:
            # Said here, where the reason is known: the watch itself would only
            # say it has no GPU to watch.
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self._on_xid_state("unsupported", f"{device} is not among CUDA_VISIBLE_DEVICES="
                                              f"{visible!r}: no GPU to watch")  # fmt: skip
            return
        self._xid.on_state("starting", None)
        watch = XidWatch(targets, self._on_gpu_event, self._on_xid_state)
        with self._lock:
            if self._stopped:
                return
            self._xid_watch = watch
        self._publish()
        watch.run()

    def _on_xid_state(self, state: str, note: str | None) -> None:
        watch = self._xid_watch
        if state == "watching" and watch is not None:
            self._xid.gpus = list(watch.watched)
        self._xid.on_state(state, note)
        if note and state != "watching":
            log.warning("torchprobe: Xid events are not watched: %s", note)
        self._publish()

    def _on_gpu_event(self, event: GpuEvent) -> None:
        reason = self._xid.on_event(event)
        if reason is not None:
            log.error("torchprobe: %s: this process is not live", reason)
        self._publish()

    def _round(self) -> None:
        from torchprobe.engine.runner import capture, execute

        try:
            if self._checks is None:
                self._checks = self._default_checks()
        except (UsageError, ImportError, ValueError) as exc:
            self._round_failed = [f"monitor checks: {exc}"]
            return
        results: list[CheckEntry] = []
        failed: list[str] = []
        for check in self._checks:
            label = getattr(check, "label", check.name)
            if not getattr(check, "_torchprobe_setup", False):
                outcomes, _ = capture(check.setup)
                if outcomes is not None:
                    failed.append(f"{label}: {outcomes[0].message}")
                    continue
                check._torchprobe_setup = True  # type: ignore[attr-defined]
            self._running = (label, time.monotonic(), check.timeout)
            try:
                outcomes_, _, duration = execute(check, Deadline.after(check.timeout))
            finally:
                self._running = None
            for o in outcomes_:
                name = label if o.target is None else f"{label}[{o.target}]"
                results.append({"check": check.name, "name": name, "status": o.status.value,
                                "message": o.message, "duration": round(duration, 6),
                                "details": o.details})  # fmt: skip
                if o.status is Status.FAIL:
                    failed.append(f"check {name} failed: {o.message}")
                    code = classify_text(o.details.get("error_code"), o.details.get("error", ""))
                    if code is not None:
                        self._mark_sticky(StickyError(code, str(o.details.get("error_type")),
                                                      str(o.details.get("error", ""))))  # fmt: skip
                self._gpu_from(o.details)
        self._results, self._round_failed = results, failed
        self._last_round = time.time()
        self._publish()

    def _gpu_from(self, details: dict[str, Any]) -> None:
        if "memory_total" not in details:
            return
        total, free = details["memory_total"], details.get("memory_free", 0)
        self._gpu = {"device": details.get("device"), "name": details.get("name"),
                     "memory_used": total - free, "memory_total": total}  # fmt: skip

    def _publish(self) -> None:
        """Have the status file rewritten soon; never waits, never raises."""
        writer = self._writer
        if writer is not None and self._owner == os.getpid() and not self._stopped:
            writer.publish()

    @staticmethod
    def _warn_write(directory: str, error: str) -> None:
        log.warning("torchprobe: cannot write the status file in %s: %s", directory, error)


def _not_ready(state: str, ago: float) -> str:
    if state == "loading":
        return f"model loading for {ago:.0f}s"
    if state == "failed":
        return "model failed to load"
    return "model not loaded yet (the app has not called monitor.loaded())"
