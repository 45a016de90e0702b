"""The ``litserve`` preset against a real LitServe 0.2 server (apps/litserve_app.py).

One server for the module: one inference worker, one API server process, and
``LIT_SERVER_API_KEY`` set, which LitServe checks on every endpoint, /health
included, in the header ``X-API-Key``. LitServe answers (0.2.19):

- ``/health`` 200 ``ok`` once every worker's ``setup()`` is done and
  ``LitAPI.health()`` is true; else 503 ``not ready``
- a wrong ``X-API-Key``: 401 ``{"detail":"Invalid API Key. Check that you are
  passing a correct 'X-API-Key' in your header."}``; none (an ``Authorization:
  Bearer`` header included): 401 ``{"detail":"Not authenticated"}``
- while its only worker's ``setup()`` runs, nothing: ``LitServer.run`` binds
  the port but starts uvicorn (listens) only after one worker is READY, so a
  connect is refused.

The server starts with its setup held back by a marker file; the first test
sees that state, every other test releases it first (``ready()``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, require, run_cli

from .canary import Target, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_KEY = "lit-key-5b8e21"
WRONG = "lit-wrong-c94d07"
KEY = f"token={API_KEY}"  # litserve sends token= as X-API-Key


@dataclass
class Lit:
    server: ServerProcess
    url: str
    gate: Path
    not_healthy: Path

    def probe(self, *options: str) -> Run:
        spec = ",".join([f"url={self.url}", *options])
        return run_cli(f"litserve:{spec}")

    def health(self, key: str = API_KEY, timeout: float = 5) -> tuple[int, bytes]:
        return http_get(f"{self.url}/health", timeout=timeout, headers={"X-API-Key": key})

    def ready(self) -> None:
        """Let setup() finish and wait until /health answers 200."""
        self.gate.unlink(missing_ok=True)
        self.server.wait_http(f"{self.url}/health", timeout=60, headers={"X-API-Key": API_KEY})


@pytest.fixture(scope="module")
def lit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lit]:
    python = server_venv("litserve")
    state = tmp_path_factory.mktemp("litserve")
    port = free_port()
    gate = state / "setup-gate"
    gate.touch()
    env = {
        "LIT_SERVER_API_KEY": API_KEY,
        "LITSERVE_APP_SETUP_GATE": str(gate),
        "LITSERVE_APP_NOT_HEALTHY": str(state / "not-healthy"),
        "CANARY_SWITCHES": str(state),
    }
    command = [str(python), str(APPS / "litserve_app.py"), "--port", str(port)]
    server = ServerProcess(command, name="litserve", cwd=state, env=env)
    server.start()
    try:
        started = Path(f"{gate}.started")  # the worker has imported torch, entered setup()
        deadline = time.monotonic() + 180
        while not started.exists():
            require(server.running(), f"litserve exited while starting:\n{server.log()}")
            require(time.monotonic() < deadline, f"litserve: no setup() in 180 s:\n{server.log()}")
            time.sleep(0.25)
        yield Lit(server, f"http://127.0.0.1:{port}", gate, state / "not-healthy")
    finally:
        server.stop()


def test_setup_running_is_not_ready(lit: Lit) -> None:  # first: the server is still in setup()
    if not lit.gate.exists():
        pytest.skip("setup() was already released by an earlier test")
    assert lit.health() == (0, b"")
    runs = [lit.probe(f"mode={mode}", KEY, "timeout=2") for mode in ("ready", "live")]
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "connection refused" in run.stdout, run.stdout
    lit.ready()
    assert lit.probe(KEY, "timeout=2").rc == 0


def test_ready(lit: Lit) -> None:
    lit.ready()
    assert lit.health() == (200, b"ok")
    for mode in ("ready", "live"):
        run = lit.probe(f"mode={mode}", KEY, "timeout=2")
        assert run.rc == 0, (mode, run.stdout, run.stderr)


def test_missing_or_wrong_key_is_unauthorized(lit: Lit) -> None:
    lit.ready()
    assert lit.health(WRONG)[0] == 401
    assert http_get(f"{lit.url}/health")[0] == 401
    runs = {
        "no key": lit.probe("timeout=2"),
        "wrong key": lit.probe(f"header=X-API-Key: {WRONG}", "timeout=2"),
        "wrong token": lit.probe(f"token={WRONG}", "timeout=2"),
        # A bearer token is no key to LitServe: its key goes in X-API-Key.
        "key as bearer": lit.probe(f"header=Authorization: Bearer {API_KEY}", "timeout=2"),
    }
    for what, run in runs.items():
        assert run.rc == 1, (what, run.stdout)
        assert "unauthorized" in run.stdout.lower(), (what, run.stdout)
    for secret, run in ((WRONG, runs["wrong token"]), (API_KEY, runs["key as bearer"])):
        assert secret not in run.stdout + run.stderr, run.stdout
    with_header = lit.probe(f"header=X-API-Key: {API_KEY}", "timeout=2")
    assert with_header.rc == 0 and API_KEY not in with_header.stdout


def test_not_healthy(lit: Lit) -> None:
    lit.ready()
    lit.not_healthy.touch()
    try:
        assert lit.health() == (503, b"not ready")
        runs = [lit.probe(f"mode={mode}", KEY, "timeout=2") for mode in ("ready", "live")]
    finally:
        lit.not_healthy.unlink()
    for run in runs:  # LitServe has one endpoint for both
        assert run.rc == 1, run.stdout
        assert "/health" in run.stdout and "503" in run.stdout, run.stdout


def test_canary_idle_busy_wedged_soft_failed(lit: Lit) -> None:
    lit.ready()
    url = f"litserve:url={lit.url},{KEY}"
    target = Target(
        name="litserve",
        ready=url,
        live=f"{url},mode=live",
        infer_url=f"{lit.url}/predict",
        sample={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
        path="labels.0",
        switches=lit.gate.parent,
        headers={"X-API-Key": API_KEY},
        refuses_stall=True,
    )
    walk(target)


def test_frozen_times_out(lit: Lit) -> None:
    lit.ready()
    lit.server.freeze()
    try:
        assert lit.health(timeout=1)[0] == 0
        runs = [lit.probe(f"mode={mode}", KEY, "timeout=2") for mode in ("ready", "live")]
    finally:
        lit.server.thaw()
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "timed out" in run.stdout, run.stdout
        assert run.elapsed < 6, run.elapsed
    lit.ready()
    assert lit.probe(KEY, "timeout=2").rc == 0


def test_stopped_is_refused(lit: Lit) -> None:  # last: it stops the shared server
    lit.ready()
    lit.server.stop()
    for mode in ("ready", "live"):
        run = lit.probe(f"mode={mode}", KEY, "timeout=2")
        assert run.rc == 1, run.stdout
        assert "connection refused" in run.stdout, run.stdout
