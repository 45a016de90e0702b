"""The engine's side of a worker process: start it, read its events, kill it.

Each worker runs in a session (process group) of its own, so a kill takes
any process its checks started with it. Killing is always SIGKILL: a check
stuck in native code would ignore anything gentler, and the probe's caller
is waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from torchprobe.engine import protocol
from torchprobe.engine.reap import MARK

__all__ = ["Janitor", "WorkerProcess", "describe_exit"]

_STDERR_KEEP = 4096


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


# Reads process-group ids until its stdin ends, then kills those groups and
# every process that carries the run's mark (torchprobe.engine.reap). Its stdin
# ends when torchprobe ends, however it ends — SIGKILL included, when nothing
# in torchprobe itself can run any more. A bare interpreter (-S) starts
# fastest; argv: the directory holding the torchprobe package, the run's mark.
_JANITOR = """
import os, signal, sys
groups = [int(line) for line in sys.stdin if line.strip()]
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
try:
    sys.path.insert(0, sys.argv[1])
    from torchprobe.engine import reap as _reap
    _reap.sweep(sys.argv[2])
except Exception:
    pass  # torchprobe is gone: nobody is left to tell
"""


class Janitor:
    """Ends what the workers started, should torchprobe be killed.

    The kernel's parent-death signal ends a worker when torchprobe dies, but
    not the processes a check started inside that worker; those stay in the
    worker's process group, which the janitor kills, or carry the run's mark
    in their environment wherever they went (a new session), which the
    janitor looks for. On a normal end the engine has already killed them all
    and simply dismisses the janitor.
    """

    def __init__(self, token: str) -> None:
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _JANITOR, package_parent, token],
            stdin=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )

    def watch(self, group: int) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{group}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def dismiss(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


class WorkerProcess:
    """One ``python -m torchprobe.engine.worker`` running a list of checks in order."""

    def __init__(self, key: str, job: protocol.Job, token: str) -> None:
        self.key = key
        self.pending = [item.index for item in job.checks]
        self.current: int | None = None
        self.stderr_tail = b""
        self._buffer = b""
        env = dict(os.environ, TORCHPROBE_PARENT_PID=str(os.getpid()), **{MARK: token})
        # The smallest CUDA context torch allows: modules load when first used
        # (the default from CUDA 12.2; opt-in before). Eager loading took
        # twice the memory on an H100. A value the user set is kept.
        env.setdefault("CUDA_MODULE_LOADING", "LAZY")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torchprobe.engine.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout_fd = self.proc.stdout.fileno()
        self.stderr_fd = self.proc.stderr.fileno()
        os.set_blocking(self.stdout_fd, False)
        os.set_blocking(self.stderr_fd, False)
        try:
            # The pipe stays open afterwards: its end tells the worker that
            # torchprobe is gone, where the parent-death signal is missing.
            self.proc.stdin.write(job.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.stdout_open = True
        self.stderr_open = True
        self.closed = False

    def read_events(self) -> list[protocol.Event]:
        """Events available now; sets ``stdout_open`` False at end of stream."""
        while True:
            try:
                chunk = os.read(self.stdout_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.stdout_open = False
                break
            self._buffer += chunk
        events = []
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = protocol.decode_event(line)
            if event is not None:
                events.append(event)
        return events

    def read_stderr(self) -> None:
        while not self.closed:
            try:
                chunk = os.read(self.stderr_fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.stderr_open = False
                return
            self.stderr_tail = (self.stderr_tail + chunk)[-_STDERR_KEEP:]

    def stderr_text(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace").strip()

    def kill(self) -> None:
        """SIGKILL the worker's whole process group and reap it.

        Also after a normal exit: whatever a check started in the group and
        left behind goes too."""
        if self.closed:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
