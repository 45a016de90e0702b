"""The ``triton`` and ``kserve`` presets against a real MLServer 1.7 (apps/mlserver_app.py).

MLServer speaks the Open Inference (KServe v2) protocol that Triton speaks, so the
``triton`` preset is tested against it, and the ``kserve`` preset (v2) too. One
server for the module: a custom runtime whose ``load()`` builds a torch model,
``tiny`` (version ``1``) loaded at start; ``broken`` (``load()`` returns False)
loaded through the model repository API by the tests that need it. MLServer
answers (1.7.1), every ``ready``/``live`` answer with an empty body:

- ``/v2/health/live`` 200 while the process serves;
- ``/v2/health/ready`` 200 when every loaded model is ready (and when none is
  loaded at all), 400 while ``broken`` is loaded;
- ``/v2/models/tiny/ready`` and ``/v2/models/tiny/versions/1/ready`` 200;
- ``/v2/models/broken/ready`` 400 once loaded (``POST
  /v2/repository/models/broken/load`` answers 200 although the model is not ready);
- unknown or unloaded: 404 ``{"error":"Model ghost not found"}``; an unknown
  version: 404 ``{"error":"Model tiny with version 2 not found"}``;
- ``/v1/models/NAME``: 404 ``{"detail":"Not Found"}`` (no v1 protocol).

MLServer has no authentication of its own, so there is no token test here; a
token is sent and must not be printed.

Its metrics (``/metrics`` on the metrics port) are not Triton's, so the ``triton``
preset's ``stall=`` does not apply; the ``progress`` check reads MLServer's own:
``rest_server_requests_in_progress`` (a gauge per method, starlette_exporter's
middleware, ``mlserver/rest/app.py``) and ``model_infer_request_success`` (a
counter per model and version, ``mlserver/handlers/dataplane.py``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, run_cli

from . import stallwalk
from .canary import Target, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "mlserver-token-3f9a60"
SAMPLE = {
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]
}


def post(url: str, timeout: float = 30) -> int:
    """The status of a bodyless POST (the model repository API)."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class MLServer:
    server: ServerProcess
    url: str
    switches: Path
    metrics_url: str

    def probe(self, preset: str, *options: str) -> Run:
        spec = ",".join([f"url={self.url}", *options, "timeout=2"])
        return run_cli(f"{preset}:{spec}")

    def repository(self, name: str, action: str) -> int:
        return post(f"{self.url}/v2/repository/models/{name}/{action}")

    def ready(self, name: str) -> int:
        return http_get(f"{self.url}/v2/models/{name}/ready")[0]

    def reset(self) -> None:
        """The start state, whatever an earlier test left: tiny ready, broken not loaded."""
        if self.ready("broken") != 404:
            assert self.repository("broken", "unload") == 200
        if self.ready("tiny") != 200:
            assert self.repository("tiny", "load") == 200
        assert http_get(f"{self.url}/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    python = server_venv("mlserver")
    state = tmp_path_factory.mktemp("mlserver")
    ports: list[int] = []
    while len(ports) < 3:
        if (port := free_port()) not in ports:
            ports.append(port)
    http, grpc, metrics = ports
    command = [str(python), str(APPS / "mlserver_app.py"), str(http), str(grpc), str(state),
               str(metrics)]  # fmt: skip
    switches = tmp_path_factory.mktemp("mlserver-switches")
    env = {"CANARY_SWITCHES": str(switches)}
    server = ServerProcess(command, name="mlserver", cwd=state, env=env)
    server.start()
    try:
        ml = MLServer(server, f"http://127.0.0.1:{http}", switches,
                      f"http://127.0.0.1:{metrics}/metrics")  # fmt: skip
        server.wait_http(f"{ml.url}/v2/models/tiny/ready", timeout=180)
        yield ml
    finally:
        server.stop()


def test_ready(mlserver: MLServer) -> None:
    mlserver.reset()
    base = mlserver.url
    assert http_get(f"{base}/v2/health/live") == (200, b"")
    assert http_get(f"{base}/v2/models/tiny/ready") == (200, b"")
    assert http_get(f"{base}/v2/models/tiny/versions/1/ready") == (200, b"")
    runs = {
        "triton": mlserver.probe("triton"),
        "triton model": mlserver.probe("triton", "model=tiny"),
        "triton version": mlserver.probe("triton", "model=tiny", "version=1"),
        "triton live": mlserver.probe("triton", "mode=live"),
        "triton token": mlserver.probe("triton", "model=tiny", f"token={SECRET}"),
        "kserve": mlserver.probe("kserve"),
        "kserve model": mlserver.probe("kserve", "model=tiny"),
        "kserve v2 model": mlserver.probe("kserve", "protocol=v2", "model=tiny"),
        "kserve live": mlserver.probe("kserve", "mode=live"),
    }
    for what, run in runs.items():
        assert run.rc == 0, (what, run.stdout, run.stderr)


def test_model_not_ready(mlserver: MLServer) -> None:
    mlserver.reset()
    assert mlserver.repository("broken", "load") == 200
    try:
        assert http_get(f"{mlserver.url}/v2/models/broken/ready") == (400, b"")
        assert http_get(f"{mlserver.url}/v2/health/ready") == (400, b"")
        named = [
            mlserver.probe("triton", "model=broken", f"token={SECRET}"),
            mlserver.probe("kserve", "model=broken", f"token={SECRET}"),
        ]
        server = mlserver.probe("triton")  # the server is not ready while broken is loaded
        # ... but tiny still serves, and model=tiny asks about tiny alone
        neighbour = [mlserver.probe(p, "model=tiny") for p in ("triton", "kserve")]
        live = [mlserver.probe(p, "mode=live", "model=broken") for p in ("triton", "kserve")]
    finally:
        assert mlserver.repository("broken", "unload") == 200
    assert server.rc == 1, server.stdout
    assert "/v2/health/ready" in server.stdout, server.stdout
    for run in [*live, *neighbour]:
        assert run.rc == 0, (run.stdout, run.stderr)
    for run in named:
        assert run.rc == 1, run.stdout
        assert SECRET not in run.stdout + run.stderr, run.stdout
        assert "'broken'" in run.stdout, run.stdout  # "a model ... not ready is named"


def test_unknown_model(mlserver: MLServer) -> None:
    mlserver.reset()
    assert http_get(f"{mlserver.url}/v2/models/ghost/ready") == (
        404,
        b'{"error":"Model ghost not found"}',
    )
    for preset in ("triton", "kserve"):
        run = mlserver.probe(preset, "model=ghost")
        assert run.rc == 1, (preset, run.stdout)
        assert "ghost" in run.stdout, (preset, run.stdout)


def test_unknown_version(mlserver: MLServer) -> None:
    mlserver.reset()
    assert http_get(f"{mlserver.url}/v2/models/tiny/versions/2/ready")[0] == 404
    run = mlserver.probe("triton", "model=tiny", "version=2")
    assert run.rc == 1, run.stdout
    assert "tiny" in run.stdout, run.stdout


def test_unloaded_model(mlserver: MLServer) -> None:
    mlserver.reset()
    assert mlserver.repository("tiny", "unload") == 200
    try:
        assert mlserver.ready("tiny") == 404
        runs = [
            mlserver.probe("triton", "model=tiny"),
            mlserver.probe("triton", "model=tiny", "version=1"),
            mlserver.probe("kserve", "model=tiny"),
        ]
        live = mlserver.probe("triton", "mode=live", "model=tiny")
    finally:
        assert mlserver.repository("tiny", "load") == 200
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "tiny" in run.stdout, run.stdout
    assert live.rc == 0, (live.stdout, live.stderr)
    assert mlserver.probe("triton", "model=tiny").rc == 0  # loaded again


def test_canary_idle_busy_wedged_soft_failed(mlserver: MLServer) -> None:
    # tiny's inference runs in a thread, one at a time: a wedged one leaves the
    # event loop, and with it every health endpoint, answering.
    mlserver.reset()
    url = f"triton:url={mlserver.url},model=tiny"
    target = Target(
        name="mlserver",
        ready=url,
        live=f"{url},mode=live",
        infer_url=f"{mlserver.url}/v2/models/tiny/infer",
        sample=SAMPLE,
        path="outputs.0.data.0",
        switches=mlserver.switches,
    )
    walk(target)


def test_stall_with_the_progress_check_idle_busy_wedged(mlserver: MLServer, tmp_path: Path) -> None:
    # The counter moves when a request completes; busy, one request of 2 s runs
    # at a time, so any DURATION well above 2 s holds. POST only: the probes'
    # GETs of the health endpoints are in progress too while they run.
    mlserver.reset()
    spec = (f"progress:url={mlserver.metrics_url},"
            'pending=rest_server_requests_in_progress{method="POST"},'
            'done=model_infer_request_success{model="tiny"},stall=8s')  # fmt: skip
    target = stallwalk.StallTarget(
        name="mlserver",
        spec=spec,
        stall=8.0,
        infer_url=f"{mlserver.url}/v2/models/tiny/infer",
        sample=SAMPLE,
        switches=mlserver.switches,
        state=tmp_path / "state",
    )
    stallwalk.walk(target)
    # triton's stall= reads Triton's series, which MLServer does not have.
    run = run_cli(f"triton:url={mlserver.url},mode=live,stall=8s,"
                  f"metrics-url={mlserver.metrics_url}")  # fmt: skip
    assert run.rc == 1, run.stdout
    assert "the metrics show no nv_inference_pending_request_count" in run.stdout, run.stdout


def test_frozen_times_out(mlserver: MLServer) -> None:
    mlserver.reset()
    mlserver.server.freeze()
    try:
        assert http_get(f"{mlserver.url}/v2/health/live", timeout=1)[0] == 0
        probes = [("triton", "model=tiny"), ("triton", "mode=live"), ("kserve", "model=tiny")]
        with ThreadPoolExecutor(len(probes)) as pool:  # side by side: each waits its timeout
            runs = list(pool.map(lambda p: mlserver.probe(*p), probes))
    finally:
        mlserver.server.thaw()
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "timed out" in run.stdout, run.stdout
        assert run.elapsed < 6, run.elapsed
    mlserver.server.wait_http(f"{mlserver.url}/v2/models/tiny/ready", timeout=60)
    assert mlserver.probe("triton", "model=tiny").rc == 0


def test_stopped_is_refused(mlserver: MLServer) -> None:  # last: it stops the shared server
    mlserver.server.stop()
    for preset, options in (("triton", ("model=tiny",)), ("triton", ("mode=live",)),
                            ("kserve", ("model=tiny",))):  # fmt: skip
        run = mlserver.probe(preset, *options)
        assert run.rc == 1, (preset, options, run.stdout)
        assert "connection refused" in run.stdout, (preset, options, run.stdout)
