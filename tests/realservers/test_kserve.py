"""The ``kserve`` preset against a real KServe 0.21 Python model server (apps/kserve_app.py).

One server for the module, HTTP only (gRPC disabled), with two models: ``tiny``
(a torch model, ready) and ``broken`` (registered, its ``load()`` failed: not
ready); any other name is unknown. KServe answers (0.21.0):

- ``/v2/health/live`` 200 ``{"live":true}``; ``/v2/health/ready`` 200
  ``{"ready":true}`` whatever the models say (a plain predictor's server-level
  readiness is always true);
- ``/v2/models/tiny/ready`` and ``/v1/models/tiny`` 200 ``{"name":"tiny","ready":true}``;
- ``broken``: both 503 ``{"error":"Model with name broken is not ready."}``;
- unknown: both 404 ``{"error":"Model with name ghost does not exist."}``;
- ``/v2/models/NAME/versions/V/ready``: 501 ``{"error":"Model versioning not
  supported yet."}`` for every model and version.

KServe's model server has no authentication of its own (it is left to the
ingress in front of it), so there is no token test here; a token is sent and
must not be printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, run_cli
from standins import load

from .canary import Target, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "kserve-token-7d41c2"


@dataclass
class KServe:
    server: ServerProcess
    url: str
    switches: Path

    def probe(self, *options: str) -> Run:
        spec = ",".join([f"url={self.url}", *options, "timeout=2"])
        return run_cli(f"kserve:{spec}")

    def up(self) -> None:
        self.server.wait_http(f"{self.url}/v2/models/tiny/ready", timeout=60)


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KServe]:
    python = server_venv("kserve")
    port = free_port()
    switches = tmp_path_factory.mktemp("kserve-switches")
    server = ServerProcess(
        [str(python), str(APPS / "kserve_app.py"), str(port)],
        name="kserve",
        env={"CANARY_SWITCHES": str(switches)},
    )
    server.start()
    try:
        ks = KServe(server, f"http://127.0.0.1:{port}", switches)
        server.wait_http(f"{ks.url}/v2/models/tiny/ready", timeout=180)
        yield ks
    finally:
        server.stop()


def test_server_states(kserve: KServe) -> None:
    """What the real server answers: the ground the other tests stand on."""
    base = kserve.url
    assert http_get(f"{base}/v2/health/live") == (200, b'{"live":true}')
    assert http_get(f"{base}/v2/health/ready") == (200, b'{"ready":true}')
    ready = b'{"name":"tiny","ready":true}'
    assert http_get(f"{base}/v2/models/tiny/ready") == (200, ready)
    assert http_get(f"{base}/v1/models/tiny") == (200, ready)
    not_ready = b'{"error":"Model with name broken is not ready."}'
    assert http_get(f"{base}/v2/models/broken/ready") == (503, not_ready)
    assert http_get(f"{base}/v1/models/broken") == (503, not_ready)
    unknown = b'{"error":"Model with name ghost does not exist."}'
    assert http_get(f"{base}/v2/models/ghost/ready") == (404, unknown)
    assert http_get(f"{base}/v1/models/ghost") == (404, unknown)
    assert http_get(f"{base}/v2/models/tiny/versions/1/ready")[0] == 501


def test_ready(kserve: KServe) -> None:
    runs = {
        "server": kserve.probe(),
        "v2": kserve.probe("model=tiny"),
        "v2 explicit": kserve.probe("protocol=v2", "model=tiny"),
        "v1": kserve.probe("protocol=v1", "model=tiny"),
        "live": kserve.probe("mode=live"),
        "token": kserve.probe("model=tiny", f"token={SECRET}"),
    }
    for what, run in runs.items():
        assert run.rc == 0, (what, run.stdout, run.stderr)


def test_model_not_ready(kserve: KServe) -> None:
    endpoints = {"v2": "/v2/models/broken/ready", "v1": "/v1/models/broken"}
    for protocol, endpoint in endpoints.items():
        run = kserve.probe(f"protocol={protocol}", "model=broken", f"token={SECRET}")
        assert run.rc == 1, (protocol, run.stdout)
        assert "'broken'" in run.stdout, (protocol, run.stdout)
        assert SECRET not in run.stdout + run.stderr, run.stdout
        # "names the endpoint and what it said": both answer 503 {"error": "... not ready."}
        assert endpoint in run.stdout and "503" in run.stdout, (protocol, run.stdout)


def test_unknown_model(kserve: KServe) -> None:
    for protocol in ("v2", "v1"):
        run = kserve.probe(f"protocol={protocol}", "model=ghost")
        assert run.rc == 1, (protocol, run.stdout)
        assert "ghost" in run.stdout, (protocol, run.stdout)


def test_live_passes_while_model_not_ready(kserve: KServe) -> None:
    for protocol in ("v2", "v1"):
        run = kserve.probe("mode=live", f"protocol={protocol}", "model=broken")
        assert run.rc == 0, (protocol, run.stdout, run.stderr)


def test_version_not_supported(kserve: KServe) -> None:
    # KServe's model server answers 501 to every versioned ready: never healthy.
    run = kserve.probe("model=tiny", "version=1")
    assert run.rc == 1, run.stdout
    assert "501" in run.stdout, run.stdout


def test_canary_idle_busy_wedged_soft_failed(kserve: KServe) -> None:
    # tiny's predict() takes v1 instances; its inference runs in a thread, one at
    # a time, so a wedged one leaves the event loop (and the health endpoints) free.
    kserve.up()
    url = f"kserve:url={kserve.url},protocol=v1,model=tiny"
    target = Target(
        name="kserve",
        ready=url,
        live=f"{url},mode=live",
        infer_url=f"{kserve.url}/v1/models/tiny:predict",
        sample={"instances": [[1.0, 2.0, 3.0, 4.0]]},
        path="predictions.0.0",
        switches=kserve.switches,
        refuses_stall=True,
    )
    walk(target)


def test_a_synchronous_predict_makes_a_busy_server_look_dead(kserve: KServe) -> None:
    # KServe runs a non-async predict() on its event loop: while it computes, even
    # /v2/health/live waits. No probe can tell that busy server from a dead one;
    # the model must compute off the loop (tiny does, in a thread).
    kserve.up()
    (kserve.switches / "slow").write_text("4")
    try:
        body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
        with load(f"{kserve.url}/v1/models/blocking:predict", body, clients=1) as statuses:
            time.sleep(1)  # the request is in predict()
            blocked = kserve.probe("mode=live")  # timeout=2
        free = kserve.probe("mode=live")  # the client's last predict() has returned
    finally:
        (kserve.switches / "slow").unlink()
    assert blocked.rc == 1, blocked.stdout
    assert "GET /v2/health/live: timed out after 2s" in blocked.stdout, blocked.stdout
    assert free.rc == 0, free.stdout  # it answers once predict() returns
    assert set(statuses) == {200}


def test_frozen_times_out(kserve: KServe) -> None:
    kserve.server.freeze()
    try:
        assert http_get(f"{kserve.url}/v2/health/live", timeout=1)[0] == 0
        options = [("model=tiny",), ("mode=live",), ("protocol=v1", "model=tiny")]
        with ThreadPoolExecutor(len(options)) as pool:  # side by side: each waits its timeout
            runs = list(pool.map(lambda o: kserve.probe(*o), options))
    finally:
        kserve.server.thaw()
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "timed out" in run.stdout, run.stdout
        assert run.elapsed < 6, run.elapsed
    kserve.up()
    assert kserve.probe("model=tiny").rc == 0


def test_stopped_is_refused(kserve: KServe) -> None:  # last: it stops the shared server
    kserve.server.stop()
    for options in (("model=tiny",), ("mode=live",), ("protocol=v1", "model=tiny")):
        run = kserve.probe(*options)
        assert run.rc == 1, (options, run.stdout)
        assert "connection refused" in run.stdout, (options, run.stdout)
