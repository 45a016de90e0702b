"""Docker's health of the example image, decided by its HEALTHCHECK — torchprobe —
through each way a model server goes fake-dead.

Each test follows ``docker inspect -f '{{json .State.Health}}'`` and records the
transitions (printed with ``-s``); faults are applied from the host or through
the app's fault routes (TORCHPROBE_EXAMPLE_FAULTS=1). Probe timings are
shortened with ``docker run --health-*``; the probe command is the image's own
unless a test says otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAST, ROOT, Container, detection_bound, docker

pytestmark = pytest.mark.e2e

#: The model's cluster centres (examples/flask_app/make_model.py): centre k is class k.
CENTRES = [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]]
#: Docker keeps this much of a probe's output.
DOCKER_OUTPUT_LIMIT = 4096
#: MONITOR_INTERVAL=1 in the tests: status-file's default max-age is three intervals.
MAX_AGE = 3.0
#: Booting gunicorn, importing torch in two workers and loading the model, on 2 cores.
BOOT = 120


def last_output(container: Container) -> str:
    log = container.health()["Log"]
    output: str = log[-1]["Output"]
    assert len(output.encode()) <= DOCKER_OUTPUT_LIMIT
    assert not output.endswith("..."), "Docker truncated the report"
    return output


def show(title: str, container: Container) -> None:
    print(f"\n[e2e] {title}\n{container.report()}")


def ns_pid(host_pid: int) -> int:
    """The PID a host process has inside its container (the last NSpid field)."""
    with open(f"/proc/{host_pid}/status") as fp:
        for line in fp:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


def test_starting_then_healthy_and_serving(run_container: Any) -> None:
    c = run_container("healthy")
    assert c.watch({"starting", "healthy"}, deadline=10) == "starting"
    c.watch({"healthy"}, deadline=BOOT, avoid={"unhealthy"})
    show("starting -> healthy", c)
    output = last_output(c)
    assert re.search(r"^PASS\s+status-file\s+2 worker\(s\), 2 ready", output, re.M), output
    assert re.search(r"^PASS\s+http\s", output, re.M), output
    status, body = c.http("/predict", {"inputs": CENTRES})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == [0, 1, 2]


def test_frozen_worker_turns_unhealthy_within_the_bound(run_container: Any) -> None:
    c = run_container("sigstop")
    c.watch({"healthy"}, deadline=BOOT, avoid={"unhealthy"})
    workers = c.gunicorn_workers()
    assert len(workers) == 2, c.host_processes()
    frozen = workers[0]
    # SIGSTOP freezes the whole worker, its monitor thread too: a deadlock
    # that nothing inside the process can report. Its status file goes stale.
    os.kill(frozen, signal.SIGSTOP)
    fault_at = time.monotonic() - c.started
    c.watch({"unhealthy"}, deadline=detection_bound(MAX_AGE) + 10)
    show(f"worker frozen with SIGSTOP at {fault_at:.1f}s", c)
    took = c.since("unhealthy") - fault_at
    bound = detection_bound(MAX_AGE)
    assert took <= bound, f"unhealthy {took:.1f}s after the fault, bound {bound:.1f}s"
    output = last_output(c)
    assert re.search(rf"^FAIL\s+status-file .*pid {ns_pid(frozen)} stale", output, re.M), output
    print(f"[e2e] unhealthy {took:.1f}s after SIGSTOP (bound {bound:.0f}s)")


def test_deadlocked_handler_turns_unhealthy_while_the_monitor_runs_on(
    run_container: Any,
) -> None:
    max_busy = 3.0
    c = run_container(
        "deadlock", env={"TORCHPROBE_EXAMPLE_FAULTS": "1", "MONITOR_MAX_BUSY": str(max_busy)}
    )
    c.watch({"healthy"}, deadline=BOOT, avoid={"unhealthy"})
    # A request that never returns: sent from inside, detached.
    docker("exec", "-d", c.name, "python", "-c",
           "import urllib.request as u; u.urlopen(u.Request("
           "'http://127.0.0.1:8000/faults/deadlock', b'{}',"
           " {'Content-Type': 'application/json'}), timeout=600)")  # fmt: skip
    fault_at = time.monotonic() - c.started
    c.watch({"unhealthy"}, deadline=detection_bound(max_busy) + 10)
    show(f"request handler deadlocked on a lock at {fault_at:.1f}s", c)
    took = c.since("unhealthy") - fault_at
    bound = detection_bound(max_busy)
    assert took <= bound, f"unhealthy {took:.1f}s after the fault, bound {bound:.1f}s"
    output = last_output(c)
    # the worker's monitor thread still runs: its file is fresh and says why
    assert re.search(r"^FAIL\s+status-file .*not ready: a request in flight for \d+s", output,
                     re.M), output  # fmt: skip
    assert "stale" not in output
    print(f"[e2e] unhealthy {took:.1f}s after the deadlock (bound {bound:.0f}s)")


def _model_bytes(image: str) -> bytes:
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "cat", "/models/model.pt"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_corrupt_model_file_is_never_healthy_and_the_log_says_why(
    run_container: Any, image: str, tmp_path: Path
) -> None:
    model = _model_bytes(image)
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(model[: len(model) // 2])  # a truncated download
    corrupt.chmod(0o644)
    c = run_container("corrupt", "-v", f"{corrupt}:/models/model.pt:ro", start_period=5)
    c.watch({"unhealthy"}, deadline=BOOT, avoid={"healthy"})
    show("corrupt model file", c)
    output = last_output(c)
    assert re.search(r"^FAIL\s+status-file .*model failed to load: \w+", output, re.M), output


def test_model_that_fails_to_load_keeps_serving_200_but_is_unready_and_unhealthy(
    run_container: Any,
) -> None:
    # The image's own default, DEVICE=cuda, on a machine with no GPU: the load
    # fails, the error is caught, and the process serves on.
    c = run_container("noload", env={"DEVICE": "cuda"}, start_period=5)
    c.watch({"unhealthy"}, deadline=BOOT, avoid={"healthy"})
    show("model fails to load (DEVICE=cuda, no GPU)", c)
    status, body = c.http("/predict", {"inputs": CENTRES})
    assert (status, body) == (200, {"predictions": []}), "the soft failure: 200, empty"
    for path in ("/ready", "/health"):
        status, body = c.http(path)
        assert status == 503, (path, body)
        assert any("model failed to load" in r for r in body["reasons"]), body
    output = last_output(c)
    assert re.search(r"^FAIL\s+status-file .*model failed to load: .*CUDA", output, re.M), output
    assert re.search(r"^FAIL\s+http .*HTTP 503", output, re.M), output


def test_sticky_cuda_error_in_one_of_two_workers_turns_unhealthy(run_container: Any) -> None:
    c = run_container("sticky", env={"TORCHPROBE_EXAMPLE_FAULTS": "1"})
    c.watch({"healthy"}, deadline=BOOT, avoid={"unhealthy"})
    assert len(c.gunicorn_workers()) == 2
    status, body = c.http("/faults/sticky-cuda-error", {})
    assert status == 500 and "device-side assert" in body["raised"], body
    fault_at = time.monotonic() - c.started
    poisoned = body["pid"]
    c.watch({"unhealthy"}, deadline=detection_bound(0) + 10)
    show(f"sticky CUDA error in worker {poisoned} at {fault_at:.1f}s", c)
    took = c.since("unhealthy") - fault_at
    # the monitor publishes a sticky error at once: no max-age to wait for
    assert took <= detection_bound(0), took
    output = last_output(c)
    assert re.search(rf"^FAIL\s+status-file\s+2 worker\(s\), 1 ready; pid {poisoned} not ready: "
                     r"sticky CUDA error 710", output, re.M), output  # fmt: skip
    print(f"[e2e] unhealthy {took:.1f}s after the sticky error in one of two workers")


def probe_processes(container: Container) -> list[tuple[str, str, str]]:
    """Everything inside but the init, gunicorn and our own ps: what a probe left."""
    return [
        (stat, comm, args)
        for stat, comm, args in container.processes()
        if comm not in ("docker-init", "ps") and "gunicorn" not in args
    ]


def wait_no_probe_processes(container: Container, within: float) -> list[Any]:
    end = time.monotonic() + within
    while True:
        left = probe_processes(container)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def test_hanging_check_ends_at_torchprobes_deadline_and_leaves_nothing(
    run_container: Any, test_plugins: Path
) -> None:
    # gilhang (tests/plugins) blocks in native code holding the GIL, like a
    # hung driver call. torchprobe's deadline (2 s) is below Docker's timeout
    # (4 s): each probe ends by itself and reports. Docker 20.10 kills nothing
    # at its timeout, so anything a probe left behind would pile up here.
    timings = {"interval": 2.0, "timeout": 4.0, "retries": 100}
    c = run_container(
        "hang", "-v", f"{test_plugins}:/plugins:ro",
        env={"PYTHONPATH": "/plugins"}, health=timings, start_period=0,
        health_cmd="torchprobe --timeout 2 gilhang:seconds=60",
    )  # fmt: skip
    seen: set[str] = set()
    rounds = 0
    deadline = time.monotonic() + 60
    while rounds < 3:
        assert time.monotonic() < deadline, c.report()
        log = c.health().get("Log") or []
        new = [e for e in log if e["End"] not in seen]
        if not new:
            time.sleep(0.05)
            continue
        for entry in new:
            seen.add(entry["End"])
            # torchprobe's own verdict (1), not Docker's "exceeded timeout" (-1)
            assert entry["ExitCode"] == 1, entry
            assert re.search(r"^FAIL\s+gilhang\s", entry["Output"], re.M), entry["Output"]
        rounds += len(new)
        left = wait_no_probe_processes(c, within=1.0)
        assert not left, f"after round {rounds}: {left}"
    show("a check that hangs, three rounds", c)
    print(f"[e2e] last probe output:\n{c.health()['Log'][-1]['Output']}")

    # SIGKILL torchprobe mid-check, from the host (as Docker 23+ does at its
    # timeout): its worker and janitor must not outlive it.
    killed = None
    end = time.monotonic() + 30
    while killed is None and time.monotonic() < end:
        procs = c.host_processes()
        probe = [p for p in procs if p[2] == "torchprobe"]
        workers = [p for p in procs if "torchprobe.engine.worker" in p[3]]
        if probe and workers:
            os.kill(probe[0][0], signal.SIGKILL)
            killed = probe[0][0]
        else:
            time.sleep(0.05)
    assert killed is not None, "never caught a probe mid-check"
    time.sleep(1.0)  # the time the requirement allows
    left = probe_processes(c)
    live = [p for p in left if not p[0].startswith("Z")]
    zombies = [p for p in left if p[0].startswith("Z")]
    print(f"[e2e] 1 s after kill -9 of torchprobe: live {live}, zombies {zombies}")
    assert not live, live
    # --init reaps whatever was re-parented to it
    assert not zombies, zombies


def test_ci_smoke_script_passes_on_a_healthy_image_and_fails_loudly_otherwise(
    image: str,
) -> None:
    fast = (
        f"--network none -e MONITOR_INTERVAL=1 --health-interval {FAST['interval']}s "
        f"--health-timeout {FAST['timeout']}s --health-retries {FAST['retries']}"
    )
    script = str(ROOT / "examples" / "ci-smoke.sh")
    base = dict(os.environ, IMAGE=image, SKIP_BUILD="1", DEADLINE=str(BOOT))
    done = subprocess.run(
        ["bash", script], env=dict(base, RUN_ARGS=f"{fast} -e DEVICE=cpu"),
        capture_output=True, text=True, timeout=BOOT + 60,
    )  # fmt: skip
    print(f"\n[e2e] ci-smoke.sh, healthy image:\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: healthy after" in done.stdout
    # the image's default DEVICE=cuda on a machine with no GPU: the job fails
    done = subprocess.run(
        ["bash", script],
        env=dict(base, RUN_ARGS=f"{fast} --health-start-period 5s"),
        capture_output=True, text=True, timeout=BOOT + 60,
    )  # fmt: skip
    print(f"[e2e] ci-smoke.sh, model fails to load:\n{done.stdout}{done.stderr[-1500:]}")
    assert done.returncode == 1
    assert "FAIL: the container turned unhealthy" in done.stderr
    assert "model failed to load" in done.stderr, "the health log is printed"
    leftovers = docker("ps", "-aq", "--filter", "name=torchprobe-smoke-").stdout.split()
    assert not leftovers, "ci-smoke.sh removes its container"
