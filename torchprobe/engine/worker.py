"""The worker process: where checks that may hang or crash run, so they can be killed.

The engine starts it as ``python -m torchprobe.engine.worker`` — a fresh interpreter,
never a fork, because a forked CUDA process is unusable and a hung native call
(NVML, a CUDA driver call) can hold the GIL, which no thread can interrupt.

It reads one :class:`~torchprobe.engine.protocol.Job` on stdin and writes
its events on the original stdout (:mod:`torchprobe.engine.protocol`).
Whatever the checks print goes to stderr, which the engine keeps for ``-v``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
from typing import IO

from torchprobe.base import Check, Outcome, UsageError
from torchprobe.common import scrub
from torchprobe.common.deadline import Deadline
from torchprobe.common.errors import describe_exception
from torchprobe.engine import protocol
from torchprobe.engine.plan import instantiate, readiness_refused
from torchprobe.engine.protocol import JobItem
from torchprobe.engine.runner import capture, execute

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """End this worker when torchprobe ends, even by SIGKILL.

    The kernel's parent-death signal works while this process is stuck in
    native code; the stdin watchdog below is the fallback where prctl is
    missing (it cannot fire while a native call holds the GIL).
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != parent:
        # The parent died before the signal was armed.
        os._exit(1)


def _watch_stdin() -> None:
    sys.stdin.buffer.read()
    os._exit(1)


class _Channel:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()  # a check's thread may send (a secret it found)

    def send(self, event: protocol.Event) -> None:
        line = protocol.encode(event)
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


def _load(item: JobItem) -> type[Check]:
    if item.plugin:
        from torchprobe.engine.plugins import load_plugin

        return load_plugin(item.check, item.ref)
    from torchprobe.engine.registry import load

    loaded: type[Check] = load(item.ref)
    return loaded


Failure = tuple[list[Outcome], str | None]


def _prepare(item: JobItem, channel: _Channel) -> tuple[Check | None, Failure | None]:
    """Import and validate one check. A bad option raises UsageError; a plugin
    that fails to import becomes that check's failure, not the run's."""
    loaded: list[type[Check]] = []
    failure, error = capture(lambda: loaded.append(_load(item)))
    if failure is not None:
        failure[0].message = f"plugin failed to load: {failure[0].message}"
        return None, (failure, error)
    check, occurrence = instantiate(loaded[0], item.token, os.environ)
    if item.plugin:
        readiness = _readiness(check)
        if item.liveness_only and readiness is not False:
            if readiness is None:
                raise UsageError(
                    f"--restart-after: plugin check {occurrence.check!r} cannot say whether "
                    "it checks readiness: its checks_readiness() raised"
                )
            raise readiness_refused(occurrence, check)
        channel.send(
            protocol.Valid(item.index, occurrence.label, occurrence.shown, occurrence.secrets,
                           check.timeout, readiness)
        )  # fmt: skip
    return check, None


def _readiness(check: Check) -> bool | None:
    """The plugin's own declaration; None when asking it raised."""
    try:
        return bool(check.checks_readiness())
    except Exception:  # noqa: BLE001 - a plugin's bug is reported, never a crash
        return None


def describe_plugins() -> int:
    """``--describe``: the ``--list`` entries of the plugins named on stdin."""
    from torchprobe.engine.plugins import load_plugin
    from torchprobe.engine.registry import describe

    plugins: dict[str, str] = json.loads(sys.stdin.read() or "{}")
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    for name, reference in plugins.items():
        source = f"plugin {reference}"
        try:
            entry = describe(load_plugin(name, reference), source)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed as broken
            entry = {
                "name": name,
                "source": source,
                "description": "",
                "options": [],
                "timeout": None,
                "runs_in": "worker process",
                "error": f"plugin failed to load: {describe_exception(exc)}",
            }
        # One line per plugin, as soon as it is ready: a later plugin that
        # hangs at import costs only its own entry.
        out.write(json.dumps(entry, default=str) + "\n")
        out.flush()
    return 0


def main() -> int:
    if sys.argv[1:] == ["--describe"]:
        return describe_plugins()
    _die_with_parent(int(os.environ.get("TORCHPROBE_PARENT_PID", "0") or 0))
    faulthandler.enable()
    channel = _Channel(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    # A secret registered here (a token file read by a check) is sent home at
    # once, before anything the check prints or returns can carry it, and
    # even when the check is killed afterwards.
    scrub.listen(lambda forms: channel.send(protocol.Secrets(list(forms))))
    os.dup2(2, 1)
    job = protocol.Job.decode(sys.stdin.readline())
    threading.Thread(target=_watch_stdin, daemon=True).start()
    # The round's deadline: the engine's clock is this process's clock too.
    round_clock = Deadline(job.deadline, 0.0, cut=job.cut)

    prepared: list[tuple[JobItem, Check | None, Failure | None]] = []
    for item in job.checks:
        try:
            check, failure = _prepare(item, channel)
        except UsageError as exc:
            channel.send(protocol.Usage(str(exc)))
            return 0
        prepared.append((item, check, failure))

    for item, check, failure in prepared:
        index = item.index
        channel.send(protocol.Setup(index))
        if check is not None:
            outcomes, error = capture(check.setup)
            failure = None if outcomes is None else (outcomes, error)
        if failure is not None or check is None:
            assert failure is not None
            channel.send(protocol.Start(index, 0.0))
            channel.send(protocol.Done(index, failure[0], failure[1], 0.0))
            continue
        clock = round_clock.grant(check.timeout)
        channel.send(protocol.Start(index, clock.timeout, clock.capped))
        outcomes, error, duration = execute(check, clock)
        channel.send(protocol.Done(index, outcomes, error, duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
