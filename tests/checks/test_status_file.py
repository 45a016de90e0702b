"""status-file against real serving processes (tests/monitor_worker.py): the
installed command reads what their monitors wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TESTS, Run, clean_env, run_cli

pytestmark = pytest.mark.usefixtures("plugins")

Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def status_dir(tmp_path: Path) -> Path:
    return tmp_path / "status"


@pytest.fixture
def start(status_dir: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[str]] = []

    def launch(*flags: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "monitor_worker.py"), str(status_dir), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env(),
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        path = status_dir / f"{proc.pid}.json"
        deadline = time.monotonic() + 10
        while not (path.exists() and json.loads(path.read_text())["last_round"]):
            assert time.monotonic() < deadline, "the monitor wrote no status file"
            time.sleep(0.05)
        return proc

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait()


def probe(status_dir: Path, *options: str) -> Run:
    spec = ",".join([f"path={status_dir}", *options])
    return run_cli("--format", "json", f"status-file:{spec}", env=clean_env())


def verdict(result: Run) -> dict:  # type: ignore[type-arg]
    check = json.loads(result.stdout)["checks"][0]
    assert result.rc == (0 if check["status"] == "pass" else 1)
    return check  # type: ignore[no-any-return]


def test_a_healthy_worker_passes(start: Start, status_dir: Path) -> None:
    proc = start()
    check = verdict(probe(status_dir))
    assert check["status"] == "pass"
    assert check["message"] == f"1 worker(s), 1 live (pid {proc.pid})"


def test_ready_mode_waits_for_the_model_live_mode_does_not(start: Start, status_dir: Path) -> None:
    start("--not-loaded")
    assert verdict(probe(status_dir))["status"] == "pass"
    check = verdict(probe(status_dir, "mode=ready"))
    assert check["status"] == "fail" and "not ready: model loading for" in check["message"]


def test_a_soft_load_failure_fails_live_and_ready(start: Start, status_dir: Path) -> None:
    proc = start("--load-failed")
    for mode in ("live", "ready"):
        check = verdict(probe(status_dir, f"mode={mode}"))
        assert check["status"] == "fail"
        assert f"pid {proc.pid} not {mode}: model failed to load: OSError" in check["message"]


def test_a_sticky_cuda_error_in_the_server_fails_the_probe(start: Start, status_dir: Path) -> None:
    proc = start("--sticky")
    check = verdict(probe(status_dir))
    assert check["status"] == "fail"
    assert f"pid {proc.pid} not live: sticky CUDA error 710" in check["message"]


def test_a_deadlocked_handler_fails_while_the_monitor_runs_on(
    start: Start, status_dir: Path
) -> None:
    start("--stuck")
    time.sleep(0.8)  # past max-busy (0.5 s), and past one write of the file
    # Every probe fails; on a loaded machine one may find the file stale (its
    # writer late past max-age 0.9 s) before one finds it fresh and naming the request.
    deadline = time.monotonic() + 30
    while True:
        check = verdict(probe(status_dir))
        assert check["status"] == "fail", check
        if "a request in flight for" in check["message"]:
            break
        assert "stale: last written" in check["message"], check
        assert time.monotonic() < deadline, check


def test_a_frozen_process_goes_stale(start: Start, status_dir: Path) -> None:
    proc = start()
    proc.send_signal(signal.SIGSTOP)
    time.sleep(1.2)  # max-age is 3 x 0.3 s
    check = verdict(probe(status_dir))
    assert check["status"] == "fail"
    assert f"pid {proc.pid} stale: last written" in check["message"]
    proc.send_signal(signal.SIGCONT)
    time.sleep(0.5)
    assert verdict(probe(status_dir))["status"] == "pass"


def test_a_crashed_worker_is_seen_then_forgotten(start: Start, status_dir: Path) -> None:
    survivor = start()
    crashed = start()
    crashed.kill()
    crashed.wait()
    check = verdict(probe(status_dir, "grace=2s"))
    assert check["status"] == "fail" and f"pid {crashed.pid} exited" in check["message"]
    time.sleep(2.2)
    check = verdict(probe(status_dir, "grace=2s"))
    assert check["status"] == "pass"
    assert check["message"] == f"1 worker(s), 1 live (pid {survivor.pid})"


def test_one_poisoned_worker_of_four_fails_the_probe_every_time(
    start: Start, status_dir: Path
) -> None:
    healthy = [start() for _ in range(3)]
    poisoned = start("--sticky")
    for _ in range(3):
        check = verdict(probe(status_dir))
        assert check["status"] == "fail"
        assert check["message"].startswith("4 worker(s), 3 live; ")
        assert f"pid {poisoned.pid} not live" in check["message"]
    assert {w["pid"] for w in check["details"]["workers"]} == {p.pid for p in [*healthy, poisoned]}


def test_max_age_can_be_set(start: Start, status_dir: Path) -> None:
    start()
    check = verdict(probe(status_dir, "max-age=1ms"))
    assert check["status"] == "fail" and "max-age 0.001s" in check["message"]


def test_no_directory_no_file_and_a_broken_file_fail_clearly(tmp_path: Path) -> None:
    check = verdict(probe(tmp_path / "missing"))
    assert check["message"].startswith(f"status directory {tmp_path / 'missing'} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no status file of a running process" in verdict(probe(empty))["message"]
    (empty / "123.json").write_text("{not json")
    assert "123.json: unreadable (JSONDecodeError)" in verdict(probe(empty))["message"]


def test_one_file_can_be_named(start: Start, status_dir: Path) -> None:
    proc = start()
    result = run_cli(f"status-file:path={status_dir / f'{proc.pid}.json'}", env=clean_env())
    assert result.rc == 0, result.stdout


def test_the_default_place_is_TORCHPROBE_STATUS_DIR(start: Start, status_dir: Path) -> None:
    start()
    result = run_cli("status-file", env=clean_env(TORCHPROBE_STATUS_DIR=str(status_dir)))
    assert result.rc == 0, result.stdout
    assert os.environ.get("TORCHPROBE_STATUS_DIR") is None


@pytest.mark.parametrize(
    ("updated", "says"),
    [
        (None, "s in the future (more than the 5s two clocks may differ)"),
        ("NaN", "'updated' is not a time (nan)"),
        ("1e999", "'updated' is not a time (inf)"),
    ],
    ids=["a-year-ahead", "nan", "infinite"],
)
def test_an_updated_time_ahead_or_not_finite_fails_naming_the_file(
    tmp_path: Path, updated: str | None, says: str
) -> None:
    # Written for this test's own process, which is alive: only the time is wrong.
    when = updated or repr(time.time() + 365 * 86400)
    name = f"{os.getpid()}.json"
    (tmp_path / name).write_text(
        f'{{"pid": {os.getpid()}, "updated": {when}, "interval": 1, "live": true, "ready": true}}'
    )
    check = verdict(probe(tmp_path))
    assert check["status"] == "fail"
    assert f"{name}: " in check["message"] and says in check["message"]


def test_an_updated_time_a_little_ahead_is_a_clock_difference(tmp_path: Path) -> None:
    ahead = time.time() + 2  # within FUTURE_SKEW (5 s)
    (tmp_path / f"{os.getpid()}.json").write_text(
        f'{{"pid": {os.getpid()}, "updated": {ahead!r}, "interval": 10, "live": true}}'
    )
    assert verdict(probe(tmp_path))["status"] == "pass"
