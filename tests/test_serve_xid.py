"""The sidecar's Xid watch: ``torchprobe serve`` (installed, in a subprocess)
against the fake NVML of tests/fakes, whose event set delivers what the test
appends to a file. What a user sees is asserted: /live, /ready, /metrics,
the sidecar's stderr, its processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKES, alive, children, clean_env, fake_nvml_env, run_cli, script
from test_serve import Toggle, get, get_json, prometheus, until

UUID0 = "GPU-5e1f0000-0a1b-4c2d-8e3f-000000000000"  # the fake's first GPU
UUID1 = "GPU-5e1f0001-0a1b-4c2d-8e3f-000000000001"


class Sidecar:
    def __init__(self, proc: subprocess.Popen[str], port: int, events: Path) -> None:
        self.proc, self.port, self.events = proc, port, events

    def inject(self, **event: object) -> None:
        with self.events.open("a") as f:
            f.write(json.dumps(event) + "\n")  # one write: the fake reads whole lines

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = get(self.port, "/metrics")
        assert status == 200
        return prometheus(body.decode())

    def state(self) -> str | None:
        name = "torchprobe_serve_xid_watch_state"
        return next((labels["state"] for n, labels, value in self.metrics()
                     if n == name and value == 1), None)  # fmt: skip

    def count(self, xid: str, gpu: str = UUID0) -> float:
        return next((value for name, labels, value in self.metrics()
                     if name == "torchprobe_gpu_xid_events_total"
                     and labels == {"gpu": gpu, "xid": xid}), 0.0)  # fmt: skip

    def watch_pids(self) -> list[int]:
        found = []
        for pid in children(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"torchprobe.serve.xid" in cmdline:
                found.append(pid)
        return found


@contextmanager
def sidecar(tmp_path: Path, *args: str, scenario: dict[str, Any] | None = None,
            fake: bool = True, watching: bool = True) -> Iterator[Sidecar]:  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.touch()
    scene = tmp_path / "scenario.json"
    scene.write_text(json.dumps({"events": str(events), **(scenario or {})}))
    target = Toggle()
    target.up()
    port = Toggle().port
    env = fake_nvml_env(str(scene)) if fake else clean_env()
    proc = subprocess.Popen(
        [str(script()), "serve", "--listen", f"127.0.0.1:{port}", "--interval", "1",
         "--live", f"tcp:host=127.0.0.1,port={target.port}",
         "--ready", f"tcp:host=127.0.0.1,port={target.port}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    try:
        until(lambda: proc.poll() is not None or get(port, "/")[0] == 200, "serving")
        assert proc.poll() is None, proc.communicate()
        side = Sidecar(proc, port, events)
        until(lambda: get_json(port, "/live")[1].get("healthy") is True, "a first live verdict")
        if watching:  # an event set hears only of what happens after it exists
            until(lambda: side.state() == "watching", "the watch registered its event set")
        yield side
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        target.down()


def stderr_of(side: Sidecar) -> str:
    side.proc.send_signal(signal.SIGTERM)
    _, err = side.proc.communicate(timeout=30)
    assert side.proc.returncode == 0, err
    return err


def test_a_critical_xid_fails_live_and_ready_naming_it_and_is_counted(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        side.inject(device=0, xid=79)
        until(lambda: get(side.port, "/live")[0] == 503, "/live 503 after Xid 79")
        status, body = get_json(side.port, "/live")
        (reason,) = body["xid"]["critical"]
        assert reason.startswith(f"Xid 79 (GPU has fallen off the bus) on {UUID0} at "), reason
        assert reason.endswith("UTC: drain the node"), reason
        assert body["verdict"] == "unhealthy" and body["checks"][0]["status"] == "pass"
        status, body = get_json(side.port, "/ready")
        assert status == 503 and body["xid"]["critical"] == [reason]
        assert get(side.port, "/healthz")[0] == 200  # the sidecar itself is fine
        assert side.count("79") == 1
        assert reason in get(side.port, "/")[1].decode()
        time.sleep(2.5)  # rounds go on passing; the verdict stays (a new pod starts clean)
        assert get(side.port, "/live")[0] == 503
        err = stderr_of(side)
    lines = [line for line in err.splitlines() if "Xid 79" in line]
    assert len(lines) == 1 and lines[0].endswith("/live and /ready fail from now on"), err


def test_an_application_xid_is_counted_and_live_stays(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        side.inject(device=0, xid=13)  # Graphics Engine Exception: the application's
        until(lambda: side.count("13") == 1, "Xid 13 counted")
        status, body = get_json(side.port, "/live")
        assert status == 200 and body["xid"] == {"state": "watching", "critical": []}
        assert get(side.port, "/ready")[0] == 200


def test_xid_ignore_and_xid_fatal_override_the_policy(tmp_path: Path) -> None:
    with sidecar(tmp_path, "--xid-ignore", "79", "--xid-fatal", "13,31") as side:
        side.inject(device=0, xid=79)
        until(lambda: side.count("79") == 1, "Xid 79 counted")
        assert get(side.port, "/live")[0] == 200
        side.inject(device=0, xid=31)
        until(lambda: get(side.port, "/live")[0] == 503, "/live 503 after Xid 31")
        (reason,) = get_json(side.port, "/live")[1]["xid"]["critical"]
        assert reason.startswith("Xid 31 (GPU memory page fault)"), reason


def test_double_bit_ecc_fails_live_and_a_lost_gpu_too(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        side.inject(device=0, type="single_bit_ecc")
        until(lambda: side.count("single_bit_ecc") == 1, "a single-bit ECC error counted")
        assert get(side.port, "/live")[0] == 200  # corrected by the hardware
        side.inject(device=0, type="double_bit_ecc")
        until(lambda: get(side.port, "/live")[0] == 503, "/live 503 after a double-bit error")
        side.inject(error="GPU_IS_LOST")
        until(lambda: side.count("gpu_lost") == 1, "the lost GPU counted")
        critical = get_json(side.port, "/live")[1]["xid"]["critical"]
        assert [r.split(" on ")[0] for r in critical] == [
            "double-bit ECC error", "GPU lost (NVML_ERROR_GPU_IS_LOST)"]  # fmt: skip


def test_xid_gpus_watches_only_the_gpus_named(tmp_path: Path) -> None:
    two = {"devices": [{}, {}]}
    with sidecar(tmp_path, "--xid-gpus", UUID1, scenario=two) as side:
        _, body = get(side.port, "/")
        assert f"xid watch: watching ({UUID1})" in body.decode(), body
        side.inject(device=0, xid=79)  # not watched: never delivered to this event set
        side.inject(device=1, xid=13)  # watched: delivered after the one before
        until(lambda: side.count("13", UUID1) == 1, "Xid 13 on the watched GPU")
        assert side.count("79") == 0 and get(side.port, "/live")[0] == 200
        side.inject(device=1, xid=79)
        until(lambda: get(side.port, "/live")[0] == 503, "/live 503 after Xid 79 on GPU 1")
        (reason,) = get_json(side.port, "/live")[1]["xid"]["critical"]
        assert f" on {UUID1} at " in reason


def test_without_nvml_it_says_so_once_and_live_stays(tmp_path: Path) -> None:
    # The real nvidia-ml-py, on a machine without libnvidia-ml: nvmlInit fails.
    with sidecar(tmp_path, fake=False, watching=False) as side:
        until(lambda: side.state() == "unsupported", "the watch says NVML is missing")
        assert get(side.port, "/live")[0] == 200
        until(lambda: not side.watch_pids(), "the watch process ended")
        time.sleep(1.5)  # not started again: nothing to watch here
        assert not side.watch_pids() and side.state() == "unsupported"
        err = stderr_of(side)
    lines = [line for line in err.splitlines() if "Xid events are not watched" in line]
    assert len(lines) == 1 and "NVML did not start: NVML_ERROR_" in lines[0], err


def test_a_gpu_without_event_sets_is_said_once_and_live_stays(tmp_path: Path) -> None:
    scenario = {"devices": [{"event_types": "NOT_SUPPORTED"}]}
    with sidecar(tmp_path, scenario=scenario, watching=False) as side:
        until(lambda: side.state() == "unsupported", "the watch says it cannot register")
        assert get(side.port, "/live")[0] == 200
        err = stderr_of(side)
    (line,) = [line for line in err.splitlines() if "Xid events are not watched" in line]
    assert "event sets not supported" in line, err


def test_a_hung_nvml_wait_shows_as_stalled_and_never_holds_back_live(tmp_path: Path) -> None:
    # The fake sleeps in libc holding its GIL, as a stuck native NVML call
    # does: in the sidecar's own process it would hold the HTTP thread too.
    scenario = {"hang": {"nvmlEventSetWait_v2": 120}}
    with sidecar(tmp_path, scenario=scenario) as side:
        until(lambda: side.state() == "stalled", "the quiet watch shown as stalled")
        for _ in range(20):
            started = time.monotonic()
            status, body = get_json(side.port, "/live")
            assert status == 200 and body["xid"]["state"] == "stalled"
            assert time.monotonic() - started < 5  # the socket's own timeout bounds it anyway
        assert "an NVML call hangs" in get(side.port, "/")[1].decode()


def test_a_killed_watch_process_is_started_again_and_the_counts_stay(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        side.inject(device=0, xid=13)
        until(lambda: side.count("13") == 1, "Xid 13 counted")
        (first,) = side.watch_pids()
        os.kill(first, signal.SIGKILL)
        until(lambda: side.state() == "failed", "the watch's end seen")
        until(lambda: side.state() == "watching", "a new watch process registered")
        assert first not in side.watch_pids()
        side.inject(device=0, xid=13)
        until(lambda: side.count("13") == 2, "the second Xid 13 added to the first")
        err = stderr_of(side)
    assert "the watch process ended (exit -9)" in err, err


def test_the_watch_process_ends_with_the_sidecar_even_when_killed(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        (pid,) = side.watch_pids()
        side.proc.kill()  # SIGKILL: no handler runs; the child sees its stdin close
        side.proc.wait()
        until(lambda: not alive(pid), "the watch process ended", 15)


def test_sigterm_ends_the_sidecar_and_its_watch_within_a_second(tmp_path: Path) -> None:
    with sidecar(tmp_path) as side:
        (pid,) = side.watch_pids()
        started = time.monotonic()
        side.proc.send_signal(signal.SIGTERM)
        side.proc.wait(timeout=30)
        assert time.monotonic() - started < 1.0 and side.proc.returncode == 0
        until(lambda: not alive(pid), "the watch process ended", 15)


def test_no_xid_starts_no_watch(tmp_path: Path) -> None:
    with sidecar(tmp_path, "--no-xid", watching=False) as side:
        time.sleep(1.0)
        assert side.watch_pids() == []
        assert "xid" not in get_json(side.port, "/live")[1]
        assert not [s for s in side.metrics() if "xid" in s[0]]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--xid-ignore", "79,x"), "--xid-ignore '79,x': expected Xid numbers"),
        (("--xid-fatal", ","), "--xid-fatal ',': expected Xid numbers"),
        (("--xid-fatal", "-1"), "--xid-fatal '-1': expected Xid numbers"),
        (("--xid-gpus", "cuda:0"), "--xid-gpus: 'cuda:0' is neither"),
        (("--xid-gpus", ", ,"), "--xid-gpus ', ,': no GPU named"),
        (("--no-xid", "--xid-fatal", "13"), "--xid-fatal has no effect with --no-xid"),
    ],
)
def test_bad_xid_options_are_one_line_and_exit_1(args: tuple[str, ...], says: str) -> None:
    result = run_cli("serve", "--live", "tcp:host=h,port=1", *args, timeout=30)
    assert result.rc == 1, result
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_dry_run_names_the_watch() -> None:
    result = run_cli("serve", "--live", "tcp:host=h,port=1", "--xid-gpus", UUID0,
                     "--xid-ignore", "109", "--dry-run", timeout=30)  # fmt: skip
    assert result.rc == 0, result
    assert f"xid: {UUID0}; ignore 109" in result.stdout, result.stdout
    result = run_cli("serve", "--live", "tcp:host=h,port=1", "--no-xid", "--dry-run")
    assert "xid: not watched (--no-xid)" in result.stdout, result.stdout


def test_the_fakes_directory_is_what_the_sidecar_imports() -> None:
    """The tests above mean something only if the watch process finds the fake."""
    done = subprocess.run(
        [sys.executable, "-c", "import pynvml; print(pynvml.__file__)"],
        env=fake_nvml_env("{}"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == str(FAKES / "pynvml.py"), done
