"""Reading ``/proc``: the one parser of ``/proc/PID/stat`` and the bounded
reads of the other files torchprobe looks at there.

``/proc/PID/stat`` is ``PID (COMM) STATE PPID ...``, and COMM is whatever
the process named itself (``prctl(PR_SET_NAME)``): spaces, parentheses and a
``)`` included. Only the *last* ``)`` ends it, since nothing after COMM can
hold one (proc(5): a state letter and numbers), so that is where the line is
split.

A process's *life* is its start time (field 22, clock ticks since boot) on
this boot (``/proc/sys/kernel/random/boot_id``): what tells it from any later
process that reuses its PID, also across a reboot.

Every read is bounded by a cap of its kind and goes through
:func:`torchprobe.common.safeio.read_head` (non-blocking, regular files only).
Standard library only, like :mod:`torchprobe.common.safeio`: the janitor
(:mod:`torchprobe.engine.reap`) imports this into a bare ``python -S``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from torchprobe.common.safeio import read_head

__all__ = [
    "ENVIRON_CAP",
    "PROC",
    "STAT_CAP",
    "TEXT_CAP",
    "Stat",
    "boot_id",
    "comm",
    "environ",
    "parse_stat",
    "pids",
    "process_life",
    "read_text",
    "stat",
]

PROC = "/proc"
#: ``/proc/PID/stat``: 52 fields of at most 20 digits each after a COMM of at
#: most 64 bytes (TASK_COMM_LEN is 16; a kernel thread's name, 64): under 1.2 KiB.
STAT_CAP = 4096
#: The small text files: comm, status (about 1.5 KiB), wchan, cgroup, boot_id.
TEXT_CAP = 64 * 1024
#: ``/proc/PID/environ``: the environment a process was started with. execve
#: takes at most 6 MiB of arguments and environment together (three quarters
#: of _STK_LIM, 8 MiB: fs/exec.c since Linux 4.13), so this cap never cuts one.
ENVIRON_CAP = 8 * 1024 * 1024
#: States of a process that has ended: a zombie (Z) or one being freed (X).
ENDED = frozenset({"Z", "X"})


class Stat(NamedTuple):
    """The fields of ``/proc/PID/stat`` that torchprobe reads."""

    comm: str
    #: Field 3: R, S, D, Z, X, T, ...
    state: str
    #: Field 4.
    ppid: int
    #: Field 22: clock ticks since boot.
    start_time: int

    @property
    def ended(self) -> bool:
        """A zombie or a process being freed: nothing that still runs."""
        return self.state in ENDED


def parse_stat(line: str) -> Stat | None:
    """The fields of one ``/proc/PID/stat`` line; None when it is not one."""
    head, close, rest = line.rpartition(")")
    start = head.find("(")
    if not close or start < 0:
        return None
    fields = rest.split()  # fields[0] is field 3 of proc(5); field N is fields[N - 3]
    if len(fields) < 20:
        return None
    try:
        return Stat(head[start + 1 :], fields[0], int(fields[1]), int(fields[19]))
    except ValueError:
        return None


def read_text(path: str, cap: int = TEXT_CAP) -> str | None:
    """The first ``cap`` bytes of a /proc file as text; None when it cannot be read."""
    try:
        return read_head(path, cap).decode("utf-8", errors="replace")
    except OSError:
        return None


def stat(pid: int, proc: str = PROC) -> Stat | None:
    """A process's stat line, parsed; None when it is gone or unreadable."""
    line = read_text(f"{proc}/{pid}/stat", STAT_CAP)
    return None if line is None else parse_stat(line)


def boot_id(proc: str = PROC) -> str:
    """This boot's id; empty where the kernel does not say."""
    return (read_text(f"{proc}/sys/kernel/random/boot_id") or "").strip()


def process_life(pid: int) -> str | None:
    """What tells this life of ``pid`` from any later process with that PID:
    the boot and the start time (/proc/PID/stat field 22). None when it is gone."""
    found = stat(pid)
    if found is None or found.ended:
        return None
    return f"{boot_id()}:{found.start_time}"


def comm(pid: int, proc: str = PROC) -> str | None:
    """A process's name (``/proc/PID/comm``), or None where it is not visible:
    gone, or a PID of another PID namespace."""
    text = read_text(f"{proc}/{pid}/comm")
    return None if text is None else text.strip()


def environ(pid: int, proc: str = PROC) -> list[bytes] | None:
    """The environment a process was started with, one ``NAME=value`` each;
    None when it cannot be read (gone, or another user's)."""
    try:
        return read_head(f"{proc}/{pid}/environ", ENVIRON_CAP).split(b"\0")
    except OSError:
        return None


def pids(proc: str = PROC) -> list[int]:
    """Every process ID visible here; none where there is no procfs."""
    try:
        return [int(entry) for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return []
