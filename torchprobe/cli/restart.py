"""``--restart-after N``: under plain Docker, end a container that has been
fake-dead for N probe runs in a row, so that its restart policy restarts it.

Plain Docker only marks a container unhealthy (Swarm, Kubernetes and Podman's
``--health-on-failure`` act on it). With this option the probe counts its own
failures in a state file and, at the Nth in a row, sends SIGTERM (or
``--restart-signal``) to the container's main process, PID 1 (or
``--restart-pid``). The probe still exits 1; a ``restart: unless-stopped`` or
``always`` policy then starts the container again.

No restart loop: the count belongs to one life of the target process (its
start time, and the boot), so a restarted container starts from zero even
where the state file survives the restart; it arms only after the first
passing run of that life, so a slow model load never counts.

The state file: ``$TORCHPROBE_STATE_DIR/restart-<pid>.state``, else
``/run/torchprobe``, else ``<tempdir>/torchprobe``. Not ``.json``: the
``status-file`` check reads every ``*.json`` in ``/run/torchprobe``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchprobe.base import Interrupted, UsageError
from torchprobe.common import procfs
from torchprobe.common.procfs import process_life
from torchprobe.common.safeio import replace_atomically
from torchprobe.common.statedir import (  # noqa: F401 - LOCK_WAIT: still read as restart.*
    LOCK_WAIT,
    STATE_ENV,
    default_state_dir,
    lock_file,
    read_all,
)

if TYPE_CHECKING:
    from torchprobe.engine.plan import Planned

__all__ = ["STATE_ENV", "RestartPolicy", "in_container", "process_life"]

#: Process names of a service manager as PID 1: a system container or a host,
#: whose PID 1 is not "the app" and must never be sent SIGTERM by default.
SYSTEM_INITS = frozenset({"systemd", "init", "upstart", "launchd"})
CGROUP_HINTS = ("docker", "containerd", "kubepods", "libpod", "lxc", "crio")

Note = Callable[[str], None]


def in_container(proc: str = procfs.PROC, root: str = "/") -> bool:
    """True only on positive evidence of a container whose PID 1 is the app
    (or its init), never a service manager: a wrong yes would SIGTERM a host."""
    comm = procfs.comm(1, proc) or ""
    if comm in SYSTEM_INITS:
        return False
    if any(os.path.exists(os.path.join(root, m)) for m in (".dockerenv", "run/.containerenv")):
        return True
    cgroup = procfs.read_text(f"{proc}/1/cgroup") or ""
    return any(hint in cgroup for hint in CGROUP_HINTS)


def parse_signal(name: str) -> signal.Signals:
    key = name.strip().upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    try:
        return signal.Signals[key]
    except KeyError:
        raise UsageError(
            f"--restart-signal: unknown signal {name!r} (e.g. TERM, INT, QUIT, HUP)"
        ) from None


def _receives(pid: int, signum: int) -> bool | None:
    """Whether a namespace's init gets the signal: the kernel drops it unless
    the process catches it (SigCgt), blocks it to take it later (SigBlk:
    signalfd), or sleeps in sigtimedwait for it (tini, dumb-init: the wait
    unblocks it, so it shows in neither mask). None when it cannot be told."""
    masks: dict[str, int] = {}
    for line in (procfs.read_text(f"{procfs.PROC}/{pid}/status") or "").splitlines():
        key, _, value = line.partition(":")
        if key in ("SigCgt", "SigBlk"):
            masks[key] = int(value, 16)
    if len(masks) < 2:
        return None
    if (masks["SigCgt"] | masks["SigBlk"]) >> (signum - 1) & 1:
        return True
    wchan = (procfs.read_text(f"{procfs.PROC}/{pid}/wchan") or "").strip()
    if "sigtimedwait" in wchan:
        return True
    return None if wchan in ("", "0") else False


@dataclass
class RestartPolicy:
    """Counts failed runs per life of the target process and signals it at ``after``."""

    after: int
    signum: signal.Signals = signal.SIGTERM
    pid: int = 1
    state_dir: str = field(default_factory=lambda: default_state_dir(os.environ))
    #: The target's current life (see process_life); injectable for tests.
    life: Callable[[int], str | None] = process_life

    @classmethod
    def from_options(cls, after: int | None, signal_name: str | None, pid: int | None,
                     force: bool, environ: Mapping[str, str]) -> RestartPolicy | None:  # fmt: skip
        if after is None:
            return None
        if after < 1:
            raise UsageError("--restart-after must be at least 1")
        signum = parse_signal(signal_name or "TERM")
        if pid is not None and pid < 1:
            raise UsageError("--restart-pid must be a process ID (1 or more)")
        if environ.get("KUBERNETES_SERVICE_HOST") and not force:
            raise UsageError(
                "--restart-after: running under Kubernetes (KUBERNETES_SERVICE_HOST is set), "
                "which restarts containers on its own livenessProbe; use that, or --restart-force"
            )
        if pid is None and not in_container():
            raise UsageError(
                "--restart-after: not inside a container (no /.dockerenv, /run/.containerenv "
                "or container cgroup): name the process to signal with --restart-pid"
            )
        target = 1 if pid is None else pid
        if target == 1 and signum in (signal.SIGKILL, signal.SIGSTOP):
            # The kernel never delivers these to a PID namespace's init from inside it.
            raise UsageError(
                f"--restart-signal {signum.name[3:]}: never delivered to PID 1 from inside "
                "its container; use TERM (the default), INT or QUIT"
            )
        return cls(after, signum, target, default_state_dir(environ))

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, f"restart-{self.pid}.state")

    def refuse_readiness(self, planned: Sequence[Planned]) -> None:
        """A usage error for any check whose configuration judges readiness: not
        ready (a model loading, a server at capacity) is no reason to restart.

        Each check says so itself (:meth:`Check.checks_readiness`). A plugin's
        code is never imported here: its worker asks it, and refuses before
        any check in that worker runs (see the engine's ``liveness_only``)."""
        from torchprobe.engine.plan import readiness_refused

        for p in planned:
            if p.readiness and p.instance is not None:
                raise readiness_refused(p.occurrence, p.instance)

    def after_run(self, healthy: bool, note: Note, undeclared: Sequence[str] = (),
                  until: float | None = None) -> None:  # fmt: skip
        """Count this run and act at the Nth failure in a row. Never raises:
        whatever goes wrong is one note, and the probe's result stands.

        ``undeclared``: plugin checks that never said whether they check
        readiness (they did not load). A failed run with one is not counted:
        a readiness check must never drive a restart. ``until`` (a
        ``time.monotonic()`` value: the run's deadline) bounds the wait for
        the state file's lock, as LOCK_WAIT always does."""
        if undeclared and not healthy:
            names = ", ".join(repr(name) for name in undeclared)
            note(f"torchprobe: restart: this run not counted: plugin check {names} did not load, "
                 "so it never said whether it checks readiness")  # fmt: skip
            return
        try:
            self._count(healthy, note, until)
        except Interrupted:
            raise
        except OSError as exc:
            note(f"torchprobe: restart: cannot keep count in {self.state_path}: "
                 f"{exc.strerror or exc}; this run not counted "
                 f"(set {STATE_ENV} to a writable directory)")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - never let a side job change the verdict
            note(f"torchprobe: restart: internal error, this run not counted: {exc!r}")

    def _count(self, healthy: bool, note: Note, until: float | None) -> None:
        life = self.life(self.pid)
        if life is None:
            if not healthy:
                note(f"torchprobe: restart: no process {self.pid} to restart")
            return
        os.makedirs(self.state_dir, exist_ok=True)
        fd = lock_file(self.state_path, until=until)
        try:
            state = _load(fd, life)
            if healthy:
                state.update(armed=True, failures=0)
            elif state["armed"]:
                state["failures"] += 1
            act = state["failures"] >= self.after
            if act:
                state.update(failures=0, signals=state["signals"] + 1)
            state.update(pid=self.pid, updated=time.time())
            # Written before the signal: with no record of it there is no signal.
            _write(self.state_path, state)
            if healthy:
                return
            if act:
                self._signal(state["signals"], note)
            elif state["armed"]:
                note(f"torchprobe: restart: {state['failures']} of {self.after} failed runs in "
                     f"a row; then {self.signum.name} to PID {self.pid}")  # fmt: skip
            else:
                note(f"torchprobe: restart: not armed until a run passes in this life of "
                     f"PID {self.pid}")  # fmt: skip
        finally:
            os.close(fd)

    def _signal(self, times: int, note: Note) -> None:
        name = procfs.comm(self.pid)
        name = "?" if name is None else name
        runs = "run" if self.after == 1 else "runs"
        what = f"{self.signum.name} to PID {self.pid} ({name}) after {self.after} failed {runs}"
        extra = (f" (signal {times} in this life: the earlier did not end it; does PID "
                 f"{self.pid} act on {self.signum.name}?)" if times > 1 else "")  # fmt: skip
        if self.pid == 1 and _receives(1, self.signum) is False:
            extra += (f"; but PID 1 neither catches nor waits for {self.signum.name}, so the "
                      "kernel drops it: run the container with --init")  # fmt: skip
        # Said before it is done: a container that stops at once takes this
        # probe with it, and the line must already be on its way to Docker.
        note(f"torchprobe: restart: sending {what}{extra}")
        try:
            os.kill(self.pid, self.signum)
        except OSError as exc:
            note(f"torchprobe: restart: could not send {self.signum.name} to PID {self.pid}: "
                 f"{exc.strerror}")  # fmt: skip


def _load(fd: int, life: str) -> dict[str, Any]:
    """The count so far in this life; zero for a new life of the target (the
    file survived a restart) and for a file that cannot be read as one."""
    fresh: dict[str, Any] = {"life": life, "armed": False, "failures": 0, "signals": 0}
    try:
        data = read_all(fd)
        state = json.loads(data) if data else {}
        if isinstance(state, dict) and state.get("life") == life:
            fresh.update(armed=state["armed"] is True, failures=int(state["failures"]),
                         signals=int(state["signals"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        pass  # unreadable (or larger than any state this writes): start over rather than guess
    return fresh


def _write(path: str, state: dict[str, Any]) -> None:
    replace_atomically(path, json.dumps(state))
