"""The ASGI adapter, served by uvicorn and probed over real HTTP, with urllib
and with the installed ``torchprobe`` command.

One Starlette app (apps/tp_asgi_app.py) uses all three pieces: ``routes()`` at
the default paths, ``health_app()`` mounted at ``/probe`` with custom paths, and
the middleware. It runs as one uvicorn process, so a test talks to the very
process whose monitor it changes, and it writes its status file, which is the
only place a blocked event loop can be seen while it is blocked.
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
from typing import Any

import pytest
from conftest import clean_env, needs_torch, require, run_cli

from torchprobe import __version__

from .apps.serving import Reply, Served, uvicorn


@pytest.fixture(scope="module")
@needs_torch  # the app's monitor runs tensor:device=cpu
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    missing = [m for m in ("starlette", "uvicorn", "prometheus_client")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    require(not missing, f"not installed: {missing} (pip install starlette uvicorn)")
    tmp = tmp_path_factory.mktemp("asgi")
    env = clean_env(TP_INTERVAL="0.25", TP_MAX_BUSY="1", TP_STATUS_DIR=str(tmp / "status"))
    served = Served(uvicorn("tp_asgi_app"), env, tmp / "uvicorn.log")
    try:
        served.start().wait_up()
        yield served
    finally:
        served.close()


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def status_file(server: Served) -> dict[str, Any]:
    assert server.proc is not None
    path = Path(server.env["TP_STATUS_DIR"]) / f"{server.proc.pid}.json"
    return dict(json.loads(path.read_text()))


# --- live and ready -----------------------------------------------------------------


def test_model_not_loaded_yet_is_live_but_not_ready(server: Served) -> None:
    served = server.fresh(breaks=False)
    for live, ready in (("/health", "/ready"), ("/probe/livez", "/probe/readyz")):
        assert served.get(live).json["status"] == "ok"
        reply = served.get(ready)
        assert (reply.status, reply.json["status"]) == (503, "not_ready")
        assert any("not loaded yet" in r for r in reply.json["reasons"]), reply.json
    run = run_cli(f"http:url={served.url}/health", f"http:url={served.url}/ready,status=503")
    assert run.rc == 0, run.stdout + run.stderr


def test_loaded_model_answers_200_with_the_pid_of_the_process(server: Served) -> None:
    served = server.loaded()
    assert served.proc is not None
    for path in ("/health", "/ready", "/probe/livez", "/probe/readyz"):
        reply = served.get(path)
        assert reply.status == 200, (path, reply.body)
        body = reply.json
        assert (body["status"], body["live"], body["ready"]) == ("ok", True, True)
        assert body["pid"] == served.proc.pid  # uvicorn without --workers: the process itself
        assert body["torchprobe_version"] == __version__
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["cache-control"] == "no-store"
    run = run_cli(f'http:url={served.url}/probe/readyz,contains="status":"ok"')
    assert run.rc == 0, run.stdout + run.stderr


def test_loading_makes_ready_503_and_loaded_makes_it_200_again(server: Served) -> None:
    served = server.loaded()
    served.post("/_test/lifecycle/loading")
    reply = served.get("/ready")
    assert (reply.status, reply.json["status"]) == (503, "not_ready")
    assert any(r.startswith("model loading for") for r in reply.json["reasons"])
    assert served.get("/health").status == 200
    served.post("/_test/lifecycle/loaded")
    assert served.get("/ready").status == 200


def test_mounted_app_routes_only_its_paths_and_methods(server: Served) -> None:
    served = server.loaded()
    assert served.get("/probe/nothing").status == 404
    assert served.post("/probe/livez").status == 405
    head = served.request("HEAD", "/probe/livez")
    assert (head.status, head.body) == (200, b"")
    assert int(head.headers["content-length"]) > 0  # what a GET would carry


# --- stuck --------------------------------------------------------------------------


def test_request_awaiting_beyond_max_busy_makes_health_503_while_health_answers(
    server: Served,
) -> None:
    served = server.loaded()
    served.broken = True  # until the held request is released
    held: list[Reply] = []
    holder = threading.Thread(target=lambda: held.append(served.get("/_test/hold", timeout=40)))
    holder.start()
    try:
        reply = served.until("/health", 503, timeout=10)
        body = reply.json
        assert any(r.startswith("a request in flight for") for r in body["reasons"]), body
        # Only the held request is in flight: the health requests, at either
        # mount, end their own tracking.
        assert body["busy"]["in_flight"] == 1
        mounted = served.get("/probe/livez")
        assert (mounted.status, mounted.json["busy"]["in_flight"]) == (503, 1)
        run = run_cli(f"http:url={served.url}/health,timeout=2")
        assert run.rc == 1 and "HTTP 503" in run.stdout, run.stdout + run.stderr
    finally:
        served.post("/_test/release")
        holder.join(timeout=30)
    assert held and held[0].json["released"] is True
    assert served.until("/health", 200, timeout=5).json["busy"]["in_flight"] == 0
    served.broken = False


def test_blocked_event_loop_shows_in_the_status_file_and_then_in_health(server: Served) -> None:
    served = server.loaded()
    served.broken = True
    blocker = threading.Thread(target=lambda: served.get("/_test/block?seconds=4", timeout=30))
    blocker.start()
    try:
        # While the loop is blocked nothing on it answers, /health included; the
        # monitor's thread still sees the lag and writes it down.
        deadline = time.monotonic() + 3.8
        state = status_file(served)
        while not any(r.startswith("event loop blocked") for r in state["reasons"]["live"]):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
            state = status_file(served)
        assert state["live"] is False
        assert state["busy"]["loop_lag_seconds"] > 1.0
        # exclude_paths: the blocking request itself is not tracked.
        assert state["busy"]["in_flight"] == 0
    finally:
        blocker.join(timeout=30)
    served.until("/health", 200, timeout=5)  # the loop runs again: healthy again
    lag = families(served.get("/metrics").text)["torchprobe_event_loop_lag_seconds"]
    assert len(lag) == 1 and lag[0][1] < 1.0
    served.broken = False


# --- metrics --------------------------------------------------------------------------


def test_metrics_parse_and_carry_the_monitor_gauges(server: Served) -> None:
    served = server.loaded()
    deadline = time.monotonic() + 20  # the first check round imports torch
    while served.get("/health").json["last_round"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in ("/metrics", "/probe/prom"):  # one collector serves both
        found = families(served.get(path).text)
        assert found["torchprobe_live"] == [({}, 1.0)]
        assert found["torchprobe_ready"] == [({}, 1.0)]
        assert found["torchprobe_info"] == [({"version": __version__}, 1.0)]
        assert found["torchprobe_check_up"] == [({"check": "tensor", "name": "tensor[cpu]"}, 1.0)]
        assert found["torchprobe_requests_in_flight"] == [({}, 0.0)]
    openmetrics = served.get("/metrics", Accept="application/openmetrics-text")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")


def test_completed_counter_counts_served_requests_and_never_the_probes(server: Served) -> None:
    served = server.loaded()

    def completed() -> float:
        found = families(served.get("/metrics").text)
        ((labels, value),) = found["torchprobe_requests_completed"]
        return value

    before = completed()
    for path in ("/health", "/ready", "/metrics", "/probe/livez", "/probe/prom"):
        served.get(path)
    assert completed() == before, "a probe's request is no completed work"
    for _ in range(3):
        assert served.get("/predict").status == 200
    assert completed() == before + 3
    text = served.get("/metrics").text
    assert "# TYPE torchprobe_requests_completed_total counter" in text


# --- broken for good ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["assert", "code"], ids=["message", "error_code"])
def test_sticky_cuda_error_makes_health_and_ready_503(server: Served, kind: str) -> None:
    served = server.fresh()
    served.post("/_test/lifecycle/loaded")
    assert served.post(f"/_test/crash/{kind}").status == 500
    for path in ("/health", "/ready", "/probe/livez"):
        reply = served.get(path)
        assert (reply.status, reply.json["status"]) == (503, "unhealthy"), path
        assert reply.json["sticky"]["code"] == 710
    assert families(served.get("/metrics").text)["torchprobe_sticky_error"] == [({}, 1.0)]
    run = run_cli(f"http:url={served.url}/health")
    assert run.rc == 1 and "HTTP 503" in run.stdout, run.stdout + run.stderr


def test_load_failure_makes_health_and_ready_503(server: Served) -> None:
    served = server.fresh()
    served.post("/_test/lifecycle/failed")
    health, ready = served.get("/health"), served.get("/ready")
    assert (health.status, ready.status) == (503, 503)
    reason = "model failed to load: OSError: model.pt: unexpected end of file"
    assert reason in health.json["reasons"], health.json


# --- optional dependencies ------------------------------------------------------------

_IMPORTS = {
    "torchprobe, torchprobe.monitor": ("flask", "starlette", "prometheus_client", "torch"),
    "torchprobe.integrations.asgi": ("flask", "starlette", "prometheus_client", "torch"),
}


@pytest.mark.parametrize("modules", list(_IMPORTS))
def test_importing_torchprobe_imports_no_framework_and_no_torch(modules: str) -> None:
    code = (
        f"import sys, json, {modules}\n"
        f"print(json.dumps([m for m in {_IMPORTS[modules]!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60, check=True)  # fmt: skip
    assert json.loads(done.stdout) == []
