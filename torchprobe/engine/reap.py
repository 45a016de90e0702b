"""Ending whatever a run's checks started, however it hid from its process
group: a ``setsid`` grandchild, a double-forked daemon.

Two things find such processes:

- **A mark in the environment.** Every worker process gets
  ``TORCHPROBE_RUN=<token>``, a token new for each run, and everything it
  starts inherits it (``/proc/PID/environ`` keeps the environment a process
  was started with), whatever session or process group it moves to.
- **The subreaper.** Where torchprobe owns its process (the console
  script), it becomes a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``):
  a descendant whose parent dies is re-parented to torchprobe instead of
  PID 1, so at the end of the run its children are its own workers and
  such orphans, even one that cleared its environment.

The engine sweeps both at the end of every run that started a worker; the
janitor (:mod:`torchprobe.engine.workerproc`) sweeps the marked ones when torchprobe
itself is killed. Standard library and :mod:`torchprobe.common.procfs`
only: the janitor imports this module into a bare ``python -S`` interpreter.
"""

import os
import signal
import sys
import time

from torchprobe.common import procfs

MARK = "TORCHPROBE_RUN"
PR_SET_CHILD_SUBREAPER = 36
#: Sweeps until nothing marked is left: a process killed while it forks can
#: leave a child that the next sweep finds.
ROUNDS = 20

_subreaper = False


def new_token() -> str:
    return f"{os.getpid()}-{os.urandom(6).hex()}"


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux 3.4+); False where it cannot."""
    global _subreaper
    if _subreaper:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
    return _subreaper


def marked(token: str) -> list[int]:
    """Live processes whose environment carries this run's mark."""
    needle = f"{MARK}={token}".encode()
    found = []
    for pid in procfs.pids():
        environ = procfs.environ(pid)
        if environ is not None and needle in environ:  # None: gone, or another user's
            found.append(pid)
    return found


def adopted() -> list[int]:
    """This process's children, where it is a subreaper (else none)."""
    if not _subreaper:
        return []
    me = os.getpid()
    found = []
    for pid in procfs.pids():
        stat = procfs.stat(pid)
        if stat is not None and stat.ppid == me and not stat.ended:
            found.append(pid)
    return found


def sweep(token: str, keep: frozenset[int] = frozenset()) -> int:
    """SIGKILL every marked process (and every adopted child not in ``keep``)
    until none is left; reap those that are this process's children. Returns
    how many were killed."""
    killed: set[int] = set()
    for _ in range(ROUNDS):
        victims = [p for p in {*marked(token), *adopted()} if p not in keep and p != os.getpid()]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.002)
        _reap(killed)
    _reap(killed)
    return len(killed)


def _reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours: its own parent (or PID 1) reaps it
            pass
        except OSError:
            pass
