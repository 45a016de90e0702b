"""The status directory: where each serving process's monitor leaves its
state as ``<pid>.json``, and how the ``status-file`` check finds it.

The place: ``$TORCHPROBE_STATUS_DIR``, else ``/run/torchprobe``, else
``<tempdir>/torchprobe``; a reader and a writer differ in when
``/run/torchprobe`` counts as usable (both rules: :mod:`torchprobe.common.paths`).
A probe and the server it watches resolve it the same way, so neither needs
configuring in the common case.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torchprobe.common import procfs
from torchprobe.common.paths import RUN_DIR, fallback_dir
from torchprobe.common.safeio import remove_quietly, replace_atomically

__all__ = [
    "ENV",
    "configured_status_dir",
    "default_status_dir",
    "pid_alive",
    "pid_start",
    "remove_quietly",
    "replace_atomically",
    "resolve_status_dir",
    "write_atomically",
]

ENV = "TORCHPROBE_STATUS_DIR"


def _usable(directory: str) -> bool:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def default_status_dir() -> str:
    """Where the status files are when nothing says otherwise (for readers:
    creates nothing; see :mod:`torchprobe.common.paths`)."""
    configured = os.environ.get(ENV)
    if configured:
        return configured
    if os.path.isdir(RUN_DIR):
        return RUN_DIR
    return fallback_dir()


def configured_status_dir(setting: Any = None) -> str | None:
    """The place a writer was told (an explicit path, else the environment),
    or None; touches no file."""
    if setting not in (None, True):
        return str(os.fspath(setting))
    return os.environ.get(ENV) or None


def resolve_status_dir(setting: Any = None) -> str:
    """Where this process writes (for writers): an explicit path, else the
    environment, else the first of /run/torchprobe and the temp directory that
    can be created and written. An explicit place is returned even when it is
    unusable: writing there then warns once."""
    configured = configured_status_dir(setting)
    if configured:
        return configured
    if _usable(RUN_DIR):
        return RUN_DIR
    return fallback_dir()


def write_atomically(path: str, document: Mapping[str, object]) -> str | None:
    """Write JSON to ``path`` atomically, creating its directory. Returns the
    error as text instead of raising."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        from torchprobe.common.jsonout import dumps

        replace_atomically(path, dumps(document))
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (from /proc), which
    tells a live process from a later one that reused its PID."""
    found = procfs.stat(pid)
    return None if found is None else found.start_time


def pid_alive(pid: int, started: int | None) -> bool:
    """True while the process that wrote a status file still runs (not a zombie,
    not another process that has since taken its PID)."""
    line = procfs.read_text(f"{procfs.PROC}/{pid}/stat", procfs.STAT_CAP)
    if line is None:
        if not os.path.isdir("/proc/self"):  # no procfs: ask the kernel directly
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    found = procfs.parse_stat(line)
    if found is None:
        return True  # a line this cannot read: no evidence that the process is gone
    if found.ended:
        return False
    return started is None or found.start_time == started
