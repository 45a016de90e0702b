"""Deadlines that hold: real GIL-holding hangs, real crashes, real kills.

Every scenario runs the installed console script with the misbehaving test
plugins of tests/plugins.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import alive, children, clean_env, run_cli, script

pytestmark = [pytest.mark.usefixtures("plugins"), pytest.mark.slow]


def test_a_gil_holding_hang_is_killed_at_its_timeout_and_others_still_report() -> None:
    result = run_cli("gilhang:seconds=30,timeout=1", "ok", "--timeout", "10")
    assert result.rc == 1
    assert result.elapsed < 3, result.elapsed
    assert "FAIL  gilhang  timed out after 1s (its worker process was killed)" in result.stdout
    assert "PASS  ok" in result.stdout


def test_the_run_deadline_bounds_everything_whatever_the_checks_do() -> None:
    result = run_cli("gilhang:seconds=60,timeout=60", "importhang", "ok", "--timeout", "2")
    assert result.rc == 1
    assert result.elapsed < 2.6, result.elapsed
    assert "the run's deadline (2s) passed" in result.stdout
    assert "PASS  ok" in result.stdout


def test_the_deadline_covers_imports_in_the_worker() -> None:
    # importhang hangs while its module is imported, before the check starts.
    result = run_cli("importhang", "--timeout", "1500ms")
    assert result.rc == 1 and result.elapsed < 2.1
    assert "not finished: the run's deadline (1.5s) passed" in result.stdout


@pytest.mark.parametrize(
    ("check", "how"),
    [("segfault", "killed by SIGSEGV"), ("abort", "killed by SIGABRT"),
     ("exits:code=3", "exited with code 3")],
)  # fmt: skip
def test_a_crash_is_that_checks_failure_naming_the_signal(check: str, how: str) -> None:
    result = run_cli(check, "ok")
    assert result.rc == 1
    line = result.lines[0]
    assert line.startswith("FAIL") and f"crashed: its worker process {how}" in line
    assert "PASS  ok" in result.stdout


def test_checks_after_a_crash_in_the_same_worker_still_run() -> None:
    # Three occurrences of one plugin share a worker; the middle one crashes
    # it, and the last one runs in a fresh worker.
    result = run_cli("--format", "json", "exits:code=0,name=a", "exits:code=4,name=b",
                     "segfault", "ok")  # fmt: skip
    data = json.loads(result.stdout)
    assert [c["status"] for c in data["checks"]] == ["fail", "fail", "fail", "pass"]
    assert "exited with code 0" in data["checks"][0]["message"]


def test_verbose_crash_report_shows_the_workers_dying_words() -> None:
    result = run_cli("-v", "segfault")
    assert "Fatal Python error: Segmentation fault" in result.stdout
    assert len(result.stdout.encode()) <= 4096


def test_a_plugin_that_fails_to_import_is_that_checks_failure() -> None:
    result = run_cli("importfail", "ok")
    assert result.rc == 1
    assert "FAIL  importfail  plugin failed to load: ModuleNotFoundError" in result.stdout
    assert "PASS  ok" in result.stdout


def test_a_bad_plugin_option_is_a_usage_error_even_though_it_is_checked_in_the_worker() -> None:
    result = run_cli("ok", "rich:items=99", "gilhang:seconds=30")
    assert result.rc == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "torchprobe: error: check 'rich': option 'items': '99' is above the maximum 10"
    )
    assert result.elapsed < 5


def _wait_for(path: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(script()), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip


def _all_gone(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_sigkill_of_torchprobe_ends_its_workers_and_their_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    proc = _start(f"spawn:pidfile={pidfile}", "gilhang:seconds=60", "--timeout", "60")
    try:
        _wait_for(pidfile)
        time.sleep(0.3)
        descendants = children(proc.pid)
        grandchild = int(pidfile.read_text())
        assert grandchild in descendants
        assert len(descendants) >= 3  # two workers, the spawned sleep (and the janitor)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _all_gone(descendants, within=1.0) == []
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_ends_workers_and_exits_1_with_one_line(
    tmp_path: Path, signum: signal.Signals
) -> None:
    pidfile = tmp_path / "child.pid"
    proc = _start(f"spawn:pidfile={pidfile}", "--timeout", "60")
    _wait_for(pidfile)
    descendants = children(proc.pid)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 1
    assert err.strip() == (f"torchprobe: interrupted by {signum.name}: "
                           "checks stopped, workers ended")  # fmt: skip
    assert _all_gone(descendants, within=1.0) == []


def test_a_finished_run_leaves_no_process_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result = run_cli(f"spawn:pidfile={pidfile},seconds=30,timeout=1", "ok")
    assert result.rc == 1
    assert not alive(int(pidfile.read_text()))


@pytest.mark.torch
def test_torch_checks_share_one_worker_process(tmp_path: Path) -> None:
    # Both torch checks run in one worker: the worker's pid is the same.
    result = run_cli("--format", "json", "cuda", "tensor:device=cpu", timeout=120)
    data = json.loads(result.stdout)
    assert [c["check"] for c in data["checks"]] == ["cuda", "tensor"]
    assert data["checks"][1]["status"] == "pass"
    assert os.environ.get("TORCHPROBE_PARENT_PID") is None


@pytest.mark.torch
def test_torch_is_imported_once_per_run_and_never_by_torchprobe_itself(tmp_path: Path) -> None:
    # A sitecustomize on PYTHONPATH runs in every interpreter the run starts
    # (workers included); its import hook records each process that imports
    # torch. (Workers are killed once their results are in: no atexit there.)
    log = tmp_path / "imports.log"
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        f"            with open({str(log)!r}, 'a') as fp:\n"
        "                fp.write(f\"{os.getpid()} {' '.join(sys.argv)}\\n\")\n"
        "        return None\n"
        "sys.meta_path.insert(0, Spy())\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = run_cli("cuda", "tensor:device=cpu", "tensor:device=cpu,name=again",
                     env=clean_env(PYTHONPATH=path), timeout=120)  # fmt: skip
    assert [line.split()[0] for line in result.lines] == ["FAIL", "PASS", "PASS", "UNHEALTHY:"]
    records = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert len({pid for pid, _ in records}) == 1, records  # one process imported torch
    assert all(
        argv.endswith(("torchprobe.engine.worker", "torchprobe/engine/worker.py"))
        for _, argv in records
    )


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_thousands_of_in_process_checks_end_by_the_deadline(kind: str) -> None:
    # A listener that never accepts: once its backlog is full, every further
    # connection waits for an answer that never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        check = (f"tcp:address=127.0.0.1:{port}" if kind == "tcp"
                 else f"http:url=http://127.0.0.1:{port}/health")  # fmt: skip
        result = run_cli("--timeout", "2", "--format", "json", *[check] * 5000, timeout=120)
    assert result.rc == 1 and result.stderr == ""
    assert result.elapsed < 2 + 1, result.elapsed
    checks = json.loads(result.stdout)["checks"]
    assert len(checks) == 5000
    failed = [c for c in checks if c["status"] == "fail"]
    # The backlog may take a connection or two, which then pass.
    assert len(failed) >= 4990
    assert all(c["message"].startswith(("timed out", "not finished")) for c in failed)
    waiting = [c for c in failed if "while waiting for a free thread" in c["message"]]
    assert waiting, "more checks than threads: some never started"


def test_more_checks_than_the_documented_maximum_is_a_usage_error() -> None:
    result = run_cli("--timeout", "2", *["tcp:address=127.0.0.1:1"] * 5001, timeout=120)
    assert result.rc == 1 and result.stdout == ""
    assert result.stderr == "torchprobe: error: 5001 checks: at most 5000 in one run\n"
