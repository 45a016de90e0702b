"""--restart-after: counting failed runs per life of the target process, and
signalling it at the Nth in a row — against real child processes, real
files and locks, and the installed console script.

Every test names its target with --restart-pid (or an explicit pid): on a
machine that looks like a container, the default target is PID 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import alive, clean_env, run_cli

from torchprobe.base import UsageError
from torchprobe.cli import restart
from torchprobe.cli.restart import RestartPolicy, process_life


class Notes(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


class Life:
    """Stands in for the target's start time: a test moves it to a new life."""

    def __init__(self) -> None:
        self.now = "life-1"

    def __call__(self, pid: int) -> str:
        return self.now


def policy(tmp_path: Path, pid: int, after: int = 3, life: Life | None = None) -> RestartPolicy:
    return RestartPolicy(after, pid=pid, state_dir=str(tmp_path / "state"), life=life or Life())


def state(p: RestartPolicy) -> dict[str, object]:
    with open(p.state_path) as fp:
        loaded: dict[str, object] = json.load(fp)
    return loaded


def ended_by_sigterm(child: subprocess.Popen[bytes]) -> bool:
    try:
        return child.wait(timeout=5) == -signal.SIGTERM
    except subprocess.TimeoutExpired:
        return False


# --- options -----------------------------------------------------------------


def test_no_policy_without_restart_after() -> None:
    assert RestartPolicy.from_options(None, "KILL", 0, False, {}) is None


@pytest.mark.parametrize(
    ("after", "signal_name", "pid", "environ", "needle"),
    [
        (0, None, 123, {}, "--restart-after must be at least 1"),
        (2, "NOPE", 123, {}, "unknown signal 'NOPE'"),
        (2, None, 0, {}, "--restart-pid must be"),
        (2, None, 123, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "running under Kubernetes"),
    ],
)
def test_bad_options_are_one_line_usage_errors(
    after: int, signal_name: str | None, pid: int, environ: dict[str, str], needle: str
) -> None:
    with pytest.raises(UsageError, match=needle) as caught:
        RestartPolicy.from_options(after, signal_name, pid, False, environ)
    assert "\n" not in str(caught.value)


def test_kubernetes_is_allowed_with_force() -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    made = RestartPolicy.from_options(2, None, 123, True, environ)
    assert made is not None and made.pid == 123


def test_outside_a_container_only_an_explicit_pid_is_signalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(restart, "in_container", lambda: False)
    with pytest.raises(UsageError, match="not inside a container.*--restart-pid"):
        RestartPolicy.from_options(2, None, None, False, {})
    made = RestartPolicy.from_options(2, None, 4321, False, {})
    assert made is not None and made.pid == 4321


def test_inside_a_container_the_default_target_is_pid_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restart, "in_container", lambda: True)
    made = RestartPolicy.from_options(3, "quit", None, False, {"TORCHPROBE_STATE_DIR": "/x/y"})
    assert made is not None
    assert (made.after, made.signum, made.pid) == (3, signal.SIGQUIT, 1)
    assert made.state_path == "/x/y/restart-1.state"


@pytest.mark.parametrize("name", ["KILL", "sigstop"])
def test_signals_the_kernel_never_delivers_to_pid_1_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(restart, "in_container", lambda: True)
    with pytest.raises(UsageError, match="never delivered to PID 1"):
        RestartPolicy.from_options(2, name, None, False, {})
    assert RestartPolicy.from_options(2, name, 4321, False, {}) is not None


@pytest.mark.parametrize("name", ["TERM", "SIGTERM", "term", " int "])
def test_signal_names_with_or_without_sig_in_any_case(name: str) -> None:
    made = RestartPolicy.from_options(2, name, 123, False, {})
    assert made is not None and made.signum.name in ("SIGTERM", "SIGINT")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({".dockerenv": ""}, True),
        ({"run/.containerenv": ""}, True),
        ({"proc/1/cgroup": "0::/kubepods/burstable/pod1/abc\n"}, True),
        ({"proc/1/cgroup": "12:pids:/docker/0123abcd\n"}, True),
        ({"proc/1/cgroup": "0::/init.scope\n"}, False),
        ({}, False),
        # a system container, or a host that happens to have the marker file
        ({".dockerenv": "", "proc/1/comm": "systemd\n"}, False),
    ],
)
def test_container_detection_needs_positive_evidence(
    tmp_path: Path, files: dict[str, str], expected: bool
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "proc" / "1").mkdir(parents=True, exist_ok=True)
    assert restart.in_container(str(tmp_path / "proc"), str(tmp_path)) is expected


# --- counting ------------------------------------------------------------------


def test_failures_before_the_first_pass_never_count(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    # a slow model load: failing from the start of this life, never passed yet
    p, notes = policy(tmp_path, target.pid, after=2), Notes()
    for _ in range(5):
        p.after_run(False, notes)
    assert alive(target.pid)
    assert state(p)["armed"] is False and state(p)["failures"] == 0
    assert all("not armed until a run passes" in n for n in notes), notes


def test_n_failures_in_a_row_after_a_pass_send_sigterm_once_and_reset(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    p, notes = policy(tmp_path, target.pid, after=3), Notes()
    p.after_run(True, notes)
    assert notes == [], "a passing run says nothing"
    p.after_run(False, notes)
    p.after_run(False, notes)
    p.after_run(True, notes)  # a pass in between starts the count again
    p.after_run(False, notes)
    p.after_run(False, notes)
    assert alive(target.pid)
    assert notes[-1].endswith(f"2 of 3 failed runs in a row; then SIGTERM to PID {target.pid}")
    p.after_run(False, notes)
    assert ended_by_sigterm(target)
    assert notes[-1] == (f"torchprobe: restart: sending SIGTERM to PID {target.pid} (sleep) "
                         "after 3 failed runs")  # fmt: skip
    assert state(p)["failures"] == 0 and state(p)["signals"] == 1


def test_the_chosen_signal_is_sent(tmp_path: Path) -> None:
    script = "import signal, sys, time\nsignal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\n"
    child = subprocess.Popen([sys.executable, "-c", script + "print(flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline()  # its handler is set
        p = policy(tmp_path, child.pid, after=1)
        p.signum = signal.SIGUSR1
        p.after_run(True, Notes())
        p.after_run(False, Notes())
        assert child.wait(timeout=5) == 7
    finally:
        child.kill()
        child.wait()


def test_a_target_that_survives_the_signal_gets_it_again_after_n_more(tmp_path: Path) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    child = subprocess.Popen([sys.executable, "-c", script + "print(flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline()
        p, notes = policy(tmp_path, child.pid, after=2), Notes()
        p.after_run(True, notes)
        for _ in range(4):
            p.after_run(False, notes)
        assert alive(child.pid)
        sent = [n for n in notes if "sending SIGTERM" in n]
        assert len(sent) == 2, notes
        assert "signal 2 in this life: the earlier did not end it" in sent[1]
    finally:
        child.kill()
        child.wait()


WAITERS = {
    # no handler, nothing blocked: as a namespace's init it would never see SIGTERM
    "bare": ("time.sleep(60)", False),
    "handler": ("signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(60)", True),
    # tini and dumb-init: blocked, then sigtimedwait (which unblocks it meanwhile)
    "sigtimedwait": (
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
        "signal.sigtimedwait({signal.SIGTERM}, 60)",
        True,
    ),
    "blocked": ("signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); time.sleep(60)", True),
}


@pytest.mark.parametrize("kind", sorted(WAITERS))
def test_whether_pid_1_would_get_sigterm_is_read_from_proc(kind: str) -> None:
    code, expected = WAITERS[kind]
    child = subprocess.Popen([sys.executable, "-c", f"import signal, time; {code}"])
    try:
        for _ in range(100):  # until it sleeps where the code puts it
            wchan = Path(f"/proc/{child.pid}/wchan").read_text().strip()
            if wchan not in ("", "0") and ("sigtimedwait" in wchan) == (kind == "sigtimedwait"):
                break
            time.sleep(0.05)
        else:
            pytest.skip(f"/proc/PID/wchan says {wchan!r} here")
        assert restart._receives(child.pid, signal.SIGTERM) is expected
    finally:
        child.kill()
        child.wait()


def test_a_new_life_of_the_target_starts_from_zero_and_unarmed(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    # The state file survives a container restart (it lives on the container's
    # own filesystem or a volume): the count must not carry into the new life.
    life = Life()
    p, notes = policy(tmp_path, target.pid, after=3, life=life), Notes()
    p.after_run(True, notes)
    p.after_run(False, notes)
    p.after_run(False, notes)
    life.now = "life-2"
    for _ in range(4):  # the new life loads its model: failures, never counted
        p.after_run(False, notes)
    assert alive(target.pid)
    assert state(p) | {"updated": 0} == {"life": "life-2", "armed": False, "failures": 0,
                                         "signals": 0, "pid": target.pid, "updated": 0}  # fmt: skip


def test_process_life_tells_a_process_from_a_later_one(target: subprocess.Popen[bytes]) -> None:
    life = process_life(target.pid)
    assert life is not None and life == process_life(target.pid)
    time.sleep(0.05)  # start times count clock ticks (10 ms)
    with subprocess.Popen(["sleep", "60"]) as other:
        assert process_life(other.pid) not in (None, life)
        other.kill()
        time.sleep(0.2)
        assert process_life(other.pid) is None, "a zombie has no life left"
    assert process_life(target.pid) == life


def test_a_target_that_is_gone_is_one_note(tmp_path: Path) -> None:
    # beyond the largest pid_max Linux allows: never a process
    p, notes = RestartPolicy(1, pid=2**22 + 1, state_dir=str(tmp_path)), Notes()
    p.after_run(False, notes)
    assert notes == [f"torchprobe: restart: no process {2**22 + 1} to restart"]


def test_a_corrupt_state_file_starts_over(tmp_path: Path, target: subprocess.Popen[bytes]) -> None:
    p, notes = policy(tmp_path, target.pid, after=1), Notes()
    os.makedirs(p.state_dir)
    Path(p.state_path).write_text('{"life": "life-1", "armed": "yes", "fail')
    p.after_run(False, notes)
    assert alive(target.pid) and "not armed" in notes[0]


OVERLAP = """
import sys
from torchprobe.cli.restart import RestartPolicy
p = RestartPolicy(10**6, pid=int(sys.argv[1]), state_dir=sys.argv[2], life=lambda pid: "L")
for _ in range(int(sys.argv[3])):
    p.after_run(False, print)
"""


def test_overlapping_runs_lose_no_update(tmp_path: Path, target: subprocess.Popen[bytes]) -> None:
    p = RestartPolicy(10**6, pid=target.pid, state_dir=str(tmp_path), life=lambda pid: "L")
    p.after_run(True, Notes())  # armed
    writers, each = 6, 40
    procs = [subprocess.Popen([sys.executable, "-c", OVERLAP, str(target.pid), str(tmp_path),
                               str(each)], stdout=subprocess.PIPE, text=True)
             for _ in range(writers)]  # fmt: skip
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert "cannot keep count" not in "".join(outputs)
    assert state(p)["failures"] == writers * each
    assert sorted(os.listdir(tmp_path)) == [f"restart-{target.pid}.state"], "no temporary left"


# --- the state file cannot be kept ---------------------------------------------------


def test_a_state_dir_that_cannot_be_made_is_one_note_and_no_exception(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    (tmp_path / "file").write_text("")
    p, notes = policy(tmp_path / "file", target.pid), Notes()
    p.after_run(False, notes)
    p2 = RestartPolicy(1, pid=target.pid, state_dir="/proc/torchprobe-state")  # read-only fs
    p2.after_run(False, notes)
    assert len(notes) == 2, notes
    for note in notes:
        assert note.startswith("torchprobe: restart: cannot keep count in ")
        assert "TORCHPROBE_STATE_DIR" in note and "\n" not in note
    assert alive(target.pid)


def run_as_nobody(p: RestartPolicy, runs: list[bool]) -> list[str]:
    """The runs in a forked child that drops root (a probe run as the image's
    user), or here where we are not root already; the notes they made."""
    if os.geteuid() != 0:
        notes = Notes()
        for healthy in runs:
            p.after_run(healthy, notes)
        return notes
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with os.fdopen(writer, "w") as out:
                for healthy in runs:
                    p.after_run(healthy, lambda message: out.write(message + "\n"))
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as fp:
        lines = fp.read().splitlines()
    assert os.waitpid(child, 0)[1] == 0, "after_run raised"
    return lines


def test_a_directory_a_non_root_user_cannot_write_is_one_note_per_run(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    directory = tmp_path / "root-owned"
    directory.mkdir()
    directory.chmod(0o555)  # root ignores the mode: nobody does not
    p = RestartPolicy(1, pid=target.pid, state_dir=str(directory))
    lines = run_as_nobody(p, [True, False])
    assert len(lines) == 2 and all("cannot keep count" in line for line in lines), lines
    assert alive(target.pid)


def test_a_state_file_locked_too_long_is_one_note_not_a_hang(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    p, notes = policy(tmp_path, target.pid), Notes()
    os.makedirs(p.state_dir)
    with open(p.state_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        p.after_run(False, notes)
        assert time.monotonic() - started < restart.LOCK_WAIT + 0.5
    assert len(notes) == 1 and "locked by another run" in notes[0], notes


# --- the command ------------------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that accepts: `tcp` passes on it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_signals_after_n_failed_runs_and_still_exits_1(
    tmp_path: Path, target: subprocess.Popen[bytes], listening: int
) -> None:
    env = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path))
    args = ["--restart-after", "2", "--restart-pid", str(target.pid), "--timeout", "3"]
    passing = f"tcp:host=127.0.0.1,port={listening}"
    failing = f"tcp:host=127.0.0.1,port={closed_port()}"
    assert run_cli(*args, failing, env=env).rc == 1  # not armed yet
    ok = run_cli(*args, passing, env=env)
    assert (ok.rc, ok.stderr) == (0, "")
    first = run_cli(*args, failing, env=env)
    assert first.rc == 1 and "1 of 2 failed runs in a row" in first.stderr
    assert alive(target.pid)
    second = run_cli(*args, failing, env=env)
    assert second.rc == 1, "the probe's verdict stands"
    assert f"torchprobe: restart: sending SIGTERM to PID {target.pid} (sleep)" in second.stderr
    assert ended_by_sigterm(target)


def test_cli_never_counts_a_wait(
    tmp_path: Path, target: subprocess.Popen[bytes], listening: int
) -> None:
    env = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path))
    args = ["--restart-after", "1", "--restart-pid", str(target.pid), "--timeout", "2"]
    assert run_cli(*args, f"tcp:host=127.0.0.1,port={listening}", env=env).rc == 0
    waited = run_cli(*args, "--wait", "1", f"tcp:host=127.0.0.1,port={closed_port()}", env=env)
    assert waited.rc == 1 and "restart" not in waited.stderr
    assert alive(target.pid)


def test_cli_unwritable_state_dir_leaves_the_verdict_alone(
    tmp_path: Path, target: subprocess.Popen[bytes], listening: int
) -> None:
    (tmp_path / "file").write_text("")
    env = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path / "file" / "state"))
    done = run_cli("--restart-after", "1", "--restart-pid", str(target.pid),
                   f"tcp:host=127.0.0.1,port={listening}", env=env)  # fmt: skip
    assert done.rc == 0
    assert done.stderr.count("\n") == 1 and "cannot keep count" in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--restart-after", "0"], {}, "--restart-after"),
        (["--restart-after", "2", "--restart-signal", "NOPE"], {}, "unknown signal"),
        (["--restart-after", "2", "status-file:mode=ready"], {}, "checks readiness"),
        (["--restart-after", "2"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "Kubernetes"),
    ],
)
def test_cli_usage_errors_are_one_line_exit_1_and_count_nothing(
    tmp_path: Path, target: subprocess.Popen[bytes], args: list[str], env: dict[str, str],
    needle: str,
) -> None:  # fmt: skip
    environ = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path), **env)
    done = run_cli(*args, "--restart-pid", str(target.pid), *(["tcp:host=127.0.0.1,port=1"]
                   if "status-file:mode=ready" not in args else []), env=environ)  # fmt: skip
    assert done.rc == 1 and done.stdout == ""
    assert done.stderr.startswith("torchprobe: error:") and needle in done.stderr
    assert done.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == [], "a usage error is never counted"


def test_the_help_lists_the_restart_options() -> None:
    text = run_cli("--help").stdout
    for option in ("--restart-after", "--restart-signal", "--restart-pid", "--restart-force"):
        assert option in text
