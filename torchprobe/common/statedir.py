"""The state directory: what one probe run leaves for the next.

``--restart-after`` keeps its failure count here and the ``stall=`` option of
the model-server presets its last reading of a server's metrics. Probe runs
are separate processes, so whatever must outlive one run is a file here:
``$TORCHPROBE_STATE_DIR``, else ``/run/torchprobe``, else
``<tempdir>/torchprobe`` (the rule in full: :mod:`torchprobe.common.paths`).
No file here ends in ``.json``: the ``status-file`` check reads every
``*.json`` in ``/run/torchprobe``.

A state belongs to one life of a process (the container's PID 1): a file
that survived a restart of the container describes the previous life and is
read as no state at all.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping

from torchprobe.common.paths import RUN_DIR, fallback_dir
from torchprobe.common.procfs import process_life  # the life a state belongs to
from torchprobe.common.safeio import STATE_CAP, open_locked, read_fd

__all__ = [
    "LOCK_WAIT",
    "RUN_DIR",
    "STATE_ENV",
    "default_state_dir",
    "lock_file",
    "process_life",
    "read_all",
]

STATE_ENV = "TORCHPROBE_STATE_DIR"
#: Overlapping runs hold the lock for a millisecond; past this, give up on this run.
LOCK_WAIT = 1.0


def default_state_dir(environ: Mapping[str, str]) -> str:
    configured = environ.get(STATE_ENV)
    if configured:
        return configured
    # RUN_DIR where it exists and is writable (Dockerfile.example makes it for
    # its user) or can be made; nothing is created before a run needs it.
    usable = os.access(RUN_DIR, os.W_OK | os.X_OK) if os.path.isdir(RUN_DIR) else (
        os.access(os.path.dirname(RUN_DIR), os.W_OK | os.X_OK))  # fmt: skip
    return RUN_DIR if usable else fallback_dir()


def lock_file(path: str, wait: float = LOCK_WAIT, until: float | None = None) -> int:
    """Open and flock a state file (created when missing); returns the descriptor.

    The file must be a regular file (a link or a FIFO planted there is
    refused: see :mod:`torchprobe.common.safeio`). Writers replace it by rename, so a
    lock won on a file that has since been replaced is retried on the new one.
    Raises OSError, also when another run holds the lock for longer than
    ``wait`` seconds or past ``until`` (a ``time.monotonic()`` value: the
    run's deadline), whichever comes first.
    """
    started = time.monotonic()
    give_up = started + wait
    if until is not None:
        give_up = min(give_up, until)
    try:
        # Read-only is enough: the file is only ever replaced, never written in place.
        return open_locked(path, os.O_RDONLY | os.O_CREAT, give_up)
    except OSError as exc:
        if exc.errno == errno.EWOULDBLOCK:
            waited = max(0.0, give_up - started)
            raise OSError(errno.EWOULDBLOCK, f"locked by another run for {waited:.2g}s") from None
        raise


def read_all(fd: int, limit: int = STATE_CAP) -> bytes:
    """What a locked state file holds; more than ``limit`` bytes is an OSError."""
    return read_fd(fd, limit)
