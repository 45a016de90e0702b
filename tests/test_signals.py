"""Signals at any point of a run, and processes that try to outlive it —
through the installed command.

A signal's effect depends on when it lands, which depends on the machine's
speed: every assertion here is on the set of outcomes allowed at any moment,
never on which one a given delay produced.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import alive, clean_env, script

pytestmark = [pytest.mark.usefixtures("plugins"), pytest.mark.slow]

TIMEOUT = 5.0
#: Delays after torchprobe's handlers are in place: start-up (imports), the
#: worker's start, the checks, the report and the exit all fall in this range.
DELAYS = [i * 0.015 for i in range(21)]
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(scope="module")
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def caught(pid: int) -> int | None:
    """The process's mask of caught signals (SigCgt), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return None


def handlers_installed(pid: int) -> bool:
    """True once torchprobe's own handlers are in place: the interpreter
    catches SIGINT from its start, SIGTERM and SIGHUP only torchprobe does."""
    wanted = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    while True:
        mask = caught(pid)
        if mask is None:
            return False
        if mask & wanted == wanted:
            return True
        time.sleep(0.001)


@dataclass
class Outcome:
    signum: signal.Signals
    delay: float
    sent: bool
    rc: int
    stdout: str
    stderr: str
    elapsed: float


def signalled_run(signum: signal.Signals, delay: float, args: list[str]) -> Outcome:
    started = time.monotonic()
    proc = subprocess.Popen([str(script()), "--timeout", str(TIMEOUT), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    sent = False
    if handlers_installed(proc.pid):
        time.sleep(delay)
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
                sent = True
            except ProcessLookupError:
                pass
    out, err = proc.communicate(timeout=TIMEOUT + 10)
    return Outcome(signum, delay, sent, proc.returncode, out, err, time.monotonic() - started)


def allowed(o: Outcome) -> str | None:
    """Why the outcome breaks a promise, or None."""
    if o.rc not in (0, 1):
        return f"exit status {o.rc}"
    if "Traceback" in o.stderr or "KeyboardInterrupt" in o.stderr:
        return "a traceback"
    if o.elapsed > TIMEOUT + 1:
        return f"took {o.elapsed:.1f}s"
    verdict = "healthy: 2 passed, 0 failed, 0 skipped"
    lines = o.stderr.splitlines()
    if o.rc == 0:
        # Only once the verdict is out may the run still end 0.
        if verdict not in o.stdout:
            return "exit 0 without the verdict"
        if lines:  # a signal that landed at all ends the run with 1
            return f"stderr {lines}"
        return None
    if not o.sent:
        return "exit 1 though no signal was sent and the run was healthy"
    if len(lines) != 1 or not lines[0].startswith("torchprobe: "):
        return f"not one line on stderr: {lines}"
    name = o.signum.name
    if lines[0] not in (f"torchprobe: error: interrupted by {name} while starting; exit status 1",
                        f"torchprobe: error: interrupted by {name} while ending the checks; "
                        "exit status 1",
                        f"torchprobe: interrupted by {name}: checks stopped, workers ended",
                        # where code on the way swallowed the signal's exception
                        f"torchprobe: interrupted by {name}: checks stopped",
                        f"torchprobe: error: interrupted by {name} after the verdict; "
                        "exit status 1"):  # fmt: skip
        return f"an unexpected line: {lines[0]}"
    return None


@pytest.mark.parametrize("signum", HANDLED, ids=lambda s: s.name)
def test_a_signal_at_any_point_of_a_run_ends_it_with_0_or_1_and_one_line(
    signum: signal.Signals, listening: int
) -> None:
    # `ok` runs in a worker process (started, imported, killed), `tcp` in a
    # thread of torchprobe: the delays cover the run's every phase.
    args = ["ok", f"tcp:host=127.0.0.1,port={listening}"]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda d: signalled_run(signum, d, args), DELAYS))
    broken = [(o.delay, why, o.rc, o.stderr[-300:]) for o in outcomes if (why := allowed(o))]
    assert broken == []
    assert any(o.sent for o in outcomes), "no signal ever reached a running torchprobe"


@pytest.mark.parametrize("signum", HANDLED, ids=lambda s: s.name)
def test_a_signal_while_checks_run_stops_them_in_one_line(signum: signal.Signals) -> None:
    proc = subprocess.Popen([str(script()), "--timeout", "30", "sleeps:seconds=30"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    assert handlers_installed(proc.pid)
    time.sleep(1.5)  # imports done, the worker started: the check is running
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert err == f"torchprobe: interrupted by {signum.name}: checks stopped, workers ended\n"


def test_a_second_signal_while_ending_exits_at_once_with_1(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(script()), "--timeout", "30", "gilhang:seconds=30"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    assert handlers_installed(proc.pid)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    lines = err.splitlines()
    # Two signals pending at once arrive lowest number first (INT); sent apart, in order.
    assert len(lines) == 1 and lines[0] in (
        f"torchprobe: error: interrupted by {a}, then {b} while ending the checks; exit status 1"
        for a, b in (("SIGINT", "SIGTERM"), ("SIGTERM", "SIGINT"))
    ), lines


@pytest.mark.parametrize("kind", ["direct", "via -m"])
def test_the_old_entry_point_and_python_m_still_run_the_command(kind: str) -> None:
    command = ([sys.executable, "-c", "from torchprobe.cli.command import main; main()"]
               if kind == "direct" else [sys.executable, "-m", "torchprobe"])  # fmt: skip
    done = subprocess.run([*command, "ok", "fails"], capture_output=True, text=True, timeout=30,
                          env=clean_env())  # fmt: skip
    assert done.returncode == 1 and "FAIL  fails" in done.stdout, done
    ok = subprocess.run([*command, "ok"], capture_output=True, text=True, timeout=30,
                        env=clean_env())  # fmt: skip
    assert (ok.returncode, ok.stderr) == (0, ""), ok


# --- processes that leave their process group -------------------------------------


def with_marker(marker: str) -> list[int]:
    """Live processes with ``marker`` among their arguments."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fp:
                args = fp.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in args and alive(int(entry)):
            found.append(int(entry))
    return found


def gone(marker: str, within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (left := with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_for(path: Path, within: float = 20) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


ESCAPES = [
    ("setsid", "return", "keep"),
    ("setsid", "hang", "keep"),
    ("daemon", "return", "keep"),
    ("daemon", "hang", "keep"),
    ("daemon", "return", "clear"),  # no mark in its environment: the subreaper finds it
]


@pytest.mark.parametrize("how,then,env", ESCAPES)
def test_a_process_that_left_the_checks_session_ends_with_the_run(
    tmp_path: Path, how: str, then: str, env: str
) -> None:
    marker = f"torchprobe-test-escape-{uuid.uuid4().hex}"
    pidfile = tmp_path / "escaped.pid"
    started = time.monotonic()
    done = subprocess.run(
        [str(script()), "--timeout", "4",
         f"escapes:marker={marker},pidfile={pidfile},how={how},then={then},env={env},timeout=2"],
        capture_output=True, text=True, timeout=30, env=clean_env(),
    )  # fmt: skip
    try:
        assert time.monotonic() - started < 4 + 1
        escaped = int(pidfile.read_text())
        assert done.returncode == (0 if then == "return" else 1), done
        assert "Traceback" not in done.stderr
        assert gone(marker, within=1.0) == [], f"pid {escaped} outlived the run"
    finally:
        for pid in with_marker(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["setsid", "daemon"])
def test_a_process_that_left_the_checks_session_ends_when_torchprobe_is_killed(
    tmp_path: Path, how: str
) -> None:
    marker = f"torchprobe-test-escape-{uuid.uuid4().hex}"
    pidfile = tmp_path / "escaped.pid"
    proc = subprocess.Popen(
        [str(script()), "--timeout", "60",
         f"escapes:marker={marker},pidfile={pidfile},how={how},then=hang,timeout=60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=clean_env(),
    )  # fmt: skip
    try:
        escaped = wait_for(pidfile)
        assert with_marker(marker) == [escaped]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert gone(marker, within=2.0) == [], f"pid {escaped} outlived SIGKILL of torchprobe"
    finally:
        proc.kill()
        proc.wait()
        for pid in with_marker(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("healthy", [True, False])
def test_a_signal_after_the_verdict_is_one_line_and_exit_1(
    tmp_path: Path, listening: int, healthy: bool
) -> None:
    # A log another process keeps locked holds the run after its report,
    # waiting for the lock until the deadline: the signal lands there.
    import fcntl

    log = tmp_path / "probe.log"
    with open(log, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        port = listening if healthy else closed_port()
        proc = subprocess.Popen([str(script()), "--timeout", "20", "--log", str(log),
                                 f"tcp:host=127.0.0.1,port={port}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
        assert proc.stdout is not None
        summary = ""
        while not summary.lower().startswith(("healthy:", "unhealthy:")):
            summary = proc.stdout.readline()
            assert summary, "the report ended without a verdict"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    # Healthy or not, a run interrupted while it ends exits 1 and says so.
    assert proc.returncode == 1
    assert err == "torchprobe: error: interrupted by SIGTERM after the verdict; exit status 1\n"
    assert log.read_text() == ""


def closed_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return int(unused.getsockname()[1])


def test_a_signal_that_lands_where_no_exception_can_leave_is_raised_again_outside() -> None:
    # A __del__ (like a weakref callback inside an import) swallows any
    # exception raised in it; the handler's must still stop the run, and
    # silently: no "Exception ignored in" on stderr.
    code = textwrap.dedent("""
        import os, signal, time
        from torchprobe import _entry
        class Stop(Exception):
            pass
        def stop(name):
            raise Stop(name)
        _entry.running(stop, Stop)
        class Victim:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
        try:
            Victim()
            time.sleep(5)
            print("never raised again")
        except Stop as exc:
            print("raised again:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=clean_env())  # fmt: skip
    assert (done.stdout, done.stderr) == ("raised again: SIGTERM\n", ""), done
