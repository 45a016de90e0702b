"""The state directory: what one probe run leaves for the next.

``--restart-after`` keeps its failure count here and the ``stall=`` option of
the model-server presets its last reading of a server's metrics. Probe runs
are separate processes, so whatever must outlive one run is a file here:
``$TORCHPROBE_STATE_DIR``, else ``/run/torchprobe``, else
``<tempdir>/torchprobe``. No file here ends in ``.json``: the ``status-file``
check reads every ``*.json`` in ``/run/torchprobe``.

A state belongs to one life of a process (the container's PID 1): a file
that survived a restart of the container describes the previous life and is
read as no state at all.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Mapping

__all__ = [
    "LOCK_WAIT",
    "RUN_DIR",
    "STATE_ENV",
    "default_state_dir",
    "lock_file",
    "process_life",
    "read_all",
    "read_text",
]

STATE_ENV = "TORCHPROBE_STATE_DIR"
RUN_DIR = "/run/torchprobe"
#: Overlapping runs hold the lock for a millisecond; past this, give up on this run.
LOCK_WAIT = 1.0


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fp:
            return fp.read()
    except OSError:
        return None


def process_life(pid: int) -> str | None:
    """What tells this life of ``pid`` from any later process with that PID:
    the boot and the start time (/proc/PID/stat field 22). None when it is gone."""
    stat = read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    boot = (read_text("/proc/sys/kernel/random/boot_id") or "").strip()
    return f"{boot}:{fields[19]}"


def default_state_dir(environ: Mapping[str, str]) -> str:
    configured = environ.get(STATE_ENV)
    if configured:
        return configured
    # /run/torchprobe where it exists and is writable (Dockerfile.example makes
    # it for its user) or can be made; nothing is created before a run needs it.
    usable = os.access(RUN_DIR, os.W_OK | os.X_OK) if os.path.isdir(RUN_DIR) else (
        os.access(os.path.dirname(RUN_DIR), os.W_OK | os.X_OK))  # fmt: skip
    return RUN_DIR if usable else os.path.join(tempfile.gettempdir(), "torchprobe")


def lock_file(path: str, wait: float = LOCK_WAIT) -> int:
    """Open and flock a state file (created when missing); returns the descriptor.

    Writers replace the file by rename, so a lock won on a file that has since
    been replaced is retried on the new one. Raises OSError, also when another
    run holds the lock for longer than ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        # Read-only is enough: the file is only ever replaced, never written in place.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise OSError(
                            errno.EWOULDBLOCK, f"locked by another run for {wait:g}s"
                        ) from None
                    time.sleep(0.002)
            try:
                held, current = os.fstat(fd), os.stat(path)
                if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def read_all(fd: int, limit: int = 1 << 20) -> bytes:
    """What a locked state file holds (at most ``limit`` bytes)."""
    data = b""
    while len(data) < limit and (chunk := os.read(fd, 65536)):
        data += chunk
    return data
