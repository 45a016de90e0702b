"""The Flask adapter, served by gunicorn (gthread) and probed over real HTTP,
with urllib and with the installed ``torchprobe`` command.

Three servers start once for the module, each on its own port: ``main``
(defaults, prometheus_client), ``custom`` (custom paths, no prometheus_client)
and ``multi`` (two workers, aggregated metrics from the status directory).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import children, clean_env, needs_torch, require, run_cli

from torchprobe import __version__

from .apps.serving import Reply, Served, gunicorn

APP = "tp_flask_app"


@pytest.fixture(scope="module")
@needs_torch  # each app's monitor runs tensor:device=cpu
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    missing = [m for m in ("flask", "gunicorn", "prometheus_client")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    require(not missing, f"not installed: {missing} (pip install flask gunicorn)")
    tmp = tmp_path_factory.mktemp("flask")
    env = clean_env(TP_INTERVAL="0.25", TP_MAX_BUSY="1")
    made = {
        "main": Served(gunicorn(APP), env, tmp / "main.log"),
        "custom": Served(
            gunicorn(APP),
            {**env, "TP_PATHS": "/livez,/readyz,/-/metrics", "TP_NO_PROMETHEUS": "1"},
            tmp / "custom.log",
            probe="/livez",
        ),
        "multi": Served(
            gunicorn(APP, workers=2),
            {**env, "TP_STATUS_DIR": str(tmp / "status"), "TP_AGGREGATE": "1"},
            tmp / "multi.log",
        ),
    }
    try:
        for server in made.values():  # all start at once, then each is waited for
            server.start()
        for server in made.values():
            server.wait_up()
        yield made
    finally:
        for server in made.values():
            server.close()


@pytest.fixture
def main(servers: dict[str, Served]) -> Served:
    return servers["main"]


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def worker_pid(server: Served, reply: Reply) -> int:
    assert server.proc is not None
    pid = reply.json["pid"]
    assert pid in children(server.proc.pid), "the pid in the body is not a gunicorn worker"
    return int(pid)


# --- live and ready -----------------------------------------------------------------


def test_model_not_loaded_yet_is_live_but_not_ready(main: Served) -> None:
    server = main.fresh(breaks=False)
    health, ready = server.get("/health"), server.get("/ready")
    assert (health.status, health.json["status"], health.json["live"]) == (200, "ok", True)
    assert (ready.status, ready.json["status"], ready.json["ready"]) == (503, "not_ready", False)
    assert ready.json["lifecycle"]["state"] == "waiting"
    assert any("not loaded yet" in r for r in ready.json["reasons"]), ready.json
    # The chain a probe uses: the installed command against the real server.
    run = run_cli(f"http:url={server.url}/health", f"http:url={server.url}/ready,status=503")
    assert run.rc == 0, run.stdout + run.stderr


def test_loaded_model_answers_200_with_pid_version_and_no_caching(main: Served) -> None:
    server = main.loaded()
    for path in ("/health", "/ready"):
        reply = server.get(path)
        assert reply.status == 200, reply.body
        body = reply.json
        assert (body["status"], body["live"], body["ready"], body["reasons"]) == (
            "ok", True, True, [],
        )  # fmt: skip
        assert body["torchprobe_version"] == __version__
        assert body["gpu"] is None  # the device is the CPU here
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.headers["Cache-Control"] == "no-store"
        worker_pid(server, reply)
    run = run_cli(f'http:url={server.url}/ready,contains="status":"ok"')
    assert run.rc == 0, run.stdout + run.stderr


def test_loading_makes_ready_503_and_loaded_makes_it_200_again(main: Served) -> None:
    server = main.loaded()
    server.post("/_test/lifecycle/loading")
    ready = server.get("/ready")
    assert (ready.status, ready.json["status"]) == (503, "not_ready")
    assert any(r.startswith("model loading for") for r in ready.json["reasons"]), ready.json
    assert server.get("/health").status == 200  # loading is not dead
    server.post("/_test/lifecycle/loaded")
    assert server.get("/ready").status == 200


def test_request_stuck_beyond_max_busy_makes_health_503_while_health_answers(
    main: Served,
) -> None:
    server = main.loaded()
    server.broken = True  # until the held request is released
    held: list[Reply] = []
    holder = threading.Thread(target=lambda: held.append(server.get("/_test/hold", timeout=40)))
    holder.start()
    try:
        started = time.monotonic()
        reply = server.until("/health", 503, timeout=10)
        assert time.monotonic() - started >= 1.0  # not before max_busy (1 s)
        body = reply.json
        assert body["status"] == "unhealthy"
        assert any(r.startswith("a request in flight for") for r in body["reasons"]), body
        # Only the held request is in flight: the health requests are not counted.
        assert body["busy"]["in_flight"] == 1
        assert server.get("/ready").status == 503
        run = run_cli(f"http:url={server.url}/health,timeout=2")
        assert run.rc == 1 and "HTTP 503" in run.stdout, run.stdout + run.stderr
    finally:
        server.post("/_test/release")
        holder.join(timeout=30)
    assert held and held[0].status == 200 and held[0].json["released"] is True
    assert server.until("/health", 200, timeout=5).json["busy"]["in_flight"] == 0
    server.broken = False


# --- metrics --------------------------------------------------------------------------


def test_metrics_parse_and_carry_the_monitor_gauges(main: Served) -> None:
    server = main.loaded()
    deadline = time.monotonic() + 20  # the first check round imports torch
    while server.get("/health").json["last_round"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    reply = server.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    found = families(reply.text)
    assert found["torchprobe_live"] == [({}, 1.0)]
    assert found["torchprobe_ready"] == [({}, 1.0)]
    assert found["torchprobe_sticky_error"] == [({}, 0.0)]
    assert found["torchprobe_info"] == [({"version": __version__}, 1.0)]
    assert found["torchprobe_check_up"] == [({"check": "tensor", "name": "tensor[cpu]"}, 1.0)]
    assert "torchprobe_check_duration_seconds" in found
    assert "python_gc_objects_collected" in found  # the app's registry, served whole
    openmetrics = server.get("/metrics", Accept="application/openmetrics-text")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_custom_paths_and_metrics_without_prometheus_client(servers: dict[str, Served]) -> None:
    server = servers["custom"].loaded()
    assert server.get("/livez").status == 200
    assert server.get("/readyz").status == 200
    assert server.get("/health").status == 404
    reply = server.get("/-/metrics")
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = families(reply.text)
    assert found["torchprobe_live"] == [({}, 1.0)]
    assert found["torchprobe_ready"] == [({}, 1.0)]
    assert not any(name.startswith("python_") for name in found)  # rendered by hand
    # The hand-written counter reads back as prometheus_client's would.
    assert "# TYPE torchprobe_requests_completed_total counter" in reply.text
    ((labels, completed),) = found["torchprobe_requests_completed"]
    assert labels == {} and completed >= 1  # at least the lifecycle request of loaded()


def test_aggregated_metrics_report_every_worker_from_the_status_dir(
    servers: dict[str, Served], tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = servers["multi"]
    if server.broken:
        server.restart()
    server.broken = True
    assert server.proc is not None
    status_dir = Path(server.env["TP_STATUS_DIR"])
    deadline = time.monotonic() + 20
    while True:
        workers = set(children(server.proc.pid))
        written = {int(p.stem) for p in status_dir.glob("*.json")}
        if len(workers) == 2 and workers <= written or time.monotonic() > deadline:
            assert len(workers) == 2 and workers <= written, (workers, written)
            break
        time.sleep(0.1)
    failed = server.post("/_test/lifecycle/failed").json["pid"]
    # The monitor writes its file from a thread of its own, soon after the news.
    written_by_failed = status_dir / f"{failed}.json"
    deadline = time.monotonic() + 20
    while json.loads(written_by_failed.read_text())["live"]:
        assert time.monotonic() < deadline, "the failed worker's file never said so"
        time.sleep(0.05)
    for _ in range(4):  # whichever worker answers the scrape, it reports both
        live = families(server.get("/metrics").text)["torchprobe_live"]
        assert {int(labels["pid"]): value for labels, value in live} == {
            pid: (0.0 if pid == failed else 1.0) for pid in workers
        }


# --- broken for good ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["assert", "code"], ids=["message", "error_code"])
def test_sticky_cuda_error_makes_health_and_ready_503(main: Served, kind: str) -> None:
    server = main.fresh()
    server.post("/_test/lifecycle/loaded")
    assert server.post(f"/_test/crash/{kind}").status == 500
    health = server.get("/health")
    assert (health.status, health.json["status"], health.json["live"]) == (503, "unhealthy", False)
    assert health.json["sticky"]["code"] == 710
    assert health.json["reasons"][0].startswith("sticky CUDA error 710"), health.json
    worker_pid(server, health)
    assert server.get("/ready").json["status"] == "unhealthy"
    assert families(server.get("/metrics").text)["torchprobe_sticky_error"] == [({}, 1.0)]
    run = run_cli(f"http:url={server.url}/health")
    assert run.rc == 1 and "HTTP 503" in run.stdout, run.stdout + run.stderr


def test_load_failure_makes_health_and_ready_503(main: Served) -> None:
    server = main.fresh()
    server.post("/_test/lifecycle/failed")
    health, ready = server.get("/health"), server.get("/ready")
    assert (health.status, ready.status) == (503, 503)
    assert health.json["lifecycle"]["state"] == "failed"
    reason = "model failed to load: OSError: model.pt: unexpected end of file"
    assert reason in health.json["reasons"], health.json


# --- optional dependencies ------------------------------------------------------------


def test_importing_the_flask_adapter_imports_no_other_framework() -> None:
    require(importlib.util.find_spec("flask") is not None, "flask is not installed")
    code = (
        "import sys, json, torchprobe.integrations.flask\n"
        "print(json.dumps(sorted(m for m in ('starlette', 'prometheus_client', 'torch')"
        " if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60, check=True)  # fmt: skip
    assert json.loads(done.stdout) == []
