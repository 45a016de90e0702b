"""The ``torchserve`` preset against a real TorchServe 0.12.0 (token auth ON, its default).

One server for the whole module (tests/realservers/apps/torchserve_app.py, from
the ``torchserve`` venv): model ``tiny`` (a TorchScript ``nn.Linear``) loaded
with one worker; ``idle.mar`` archived for the tests to register with 0
workers, and ``broken.mar``, whose handler raises while loading. TorchServe
writes ``key_file.json`` into its working directory::

    {"management": {"key": "...", "expiration time": "...Z"},
     "inference":  {"key": "...", "expiration time": "...Z"},
     "API":        {"key": "..."}}

The inference key opens 8080, the management key 8081 (each rejects the
other), and every wrong or missing token gets 400 ``InvalidKeyException``.
The test that stops the server is the last of the module.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, require, run_cli

from .canary import Target, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny"
SPARE = "idle"
BROKEN = "broken"
WRONG_TOKEN = "wrong-Qx7vT2kd"


@dataclass
class TorchServe:
    server: ServerProcess
    url: str
    management_url: str
    key_file: Path

    def keys(self) -> dict[str, str]:
        data = json.loads(self.key_file.read_text())
        return {kind: data[kind]["key"] for kind in ("inference", "management", "API")}

    def spec(self, token_file: bool = True, **options: str) -> str:
        """``torchserve:url=...,management-url=...[,token-file=...],OPTIONS``."""
        parts = {"url": self.url, "management-url": self.management_url}
        if token_file:
            parts["token-file"] = str(self.key_file)
        parts.update({key.replace("_", "-"): value for key, value in options.items()})
        return "torchserve:" + ",".join(f"{key}={value}" for key, value in parts.items())

    def manage(self, method: str, path: str, key: str = "management") -> tuple[int, str]:
        """(status, body) of a management API call with a key of key_file.json."""
        request = urllib.request.Request(
            self.management_url + path,
            method=method,
            headers={"Authorization": f"Bearer {self.keys()[key]}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def workers(self, model: str) -> list[str]:
        status, body = self.manage("GET", f"/models/{model}")
        if status != 200:
            return []
        return [worker["status"] for worker in json.loads(body)[0]["workers"]]


def assert_no_keys(run: Run, ts: TorchServe, *extra: str) -> None:
    output = run.stdout + run.stderr
    for secret in (*ts.keys().values(), *extra):
        assert secret not in output, "a token leaked into the output"


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    python = server_venv("torchserve")
    workdir = tmp_path_factory.mktemp("torchserve")
    (workdir / "switches").mkdir()
    port, management = free_port(), free_port()
    server = ServerProcess(
        [
            str(python), str(APPS / "torchserve_app.py"),
            "--workdir", str(workdir),
            "--inference-port", str(port),
            "--management-port", str(management),
            "--model", MODEL,
            "--spare", SPARE,
            "--broken", BROKEN,
            "--switches", str(workdir / "switches"),
        ],
        name="torchserve",
    )  # fmt: skip
    ts = TorchServe(
        server,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{management}",
        workdir / "key_file.json",
    )
    server.start()
    try:
        started = time.monotonic()
        # Without a token /ping answers 400: the frontend is up, the key file written.
        server.wait_http(f"{ts.url}/ping", timeout=120, accept=(200, 400))
        require(ts.key_file.exists(), f"TorchServe wrote no {ts.key_file}:\n{server.log()}")
        auth = {"Authorization": f"Bearer {ts.keys()['inference']}"}
        server.wait_http(f"{ts.url}/ping", timeout=120, headers=auth)
        pinged = time.monotonic() - started
        while ts.workers(MODEL) != ["READY"]:
            require(server.running(), f"TorchServe exited while loading:\n{server.log()}")
            require(time.monotonic() - started < 180, f"no READY worker:\n{server.log()}")
            time.sleep(0.25)
        print(f"torchserve: /ping 200 after {pinged:.1f} s, worker READY after "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        yield ts
    finally:
        server.stop()


@pytest.fixture
def idle_model(torchserve: TorchServe) -> Iterator[str]:
    """SPARE registered with 0 workers, unregistered afterwards."""
    status, body = torchserve.manage("POST", f"/models?url={SPARE}.mar&initial_workers=0")
    assert status == 200, body
    assert "registered with 0 initial workers" in body
    try:
        yield SPARE
    finally:
        torchserve.manage("DELETE", f"/models/{SPARE}")


def test_ready_with_a_ready_worker(torchserve: TorchServe) -> None:
    run = run_cli(torchserve.spec(model=MODEL))
    assert run.rc == 0, run.stdout + run.stderr
    assert f"'{MODEL}'" in run.stdout
    assert_no_keys(run, torchserve)


def test_ready_without_model_and_live(torchserve: TorchServe) -> None:
    for spec in (torchserve.spec(), torchserve.spec(mode="live")):
        run = run_cli(spec)
        assert run.rc == 0, run.stdout + run.stderr
        assert_no_keys(run, torchserve)


def test_model_with_no_worker(torchserve: TorchServe, idle_model: str) -> None:
    assert torchserve.workers(idle_model) == []
    run = run_cli(torchserve.spec(model=idle_model))
    assert run.rc == 1, run.stdout + run.stderr
    assert f"'{idle_model}'" in run.stdout
    assert_no_keys(run, torchserve)
    # live asks /ping only: the server itself is healthy.
    run = run_cli(torchserve.spec(model=idle_model, mode="live"))
    assert run.rc == 0, run.stdout + run.stderr


def test_unregistered_model(torchserve: TorchServe, idle_model: str) -> None:
    status, body = torchserve.manage("DELETE", f"/models/{idle_model}")
    assert status == 200, body
    for name in (idle_model, "no-such-model"):
        run = run_cli(torchserve.spec(model=name))
        assert run.rc == 1, run.stdout + run.stderr
        assert f"'{name}'" in run.stdout
        assert_no_keys(run, torchserve)


def test_model_whose_worker_is_loading(torchserve: TorchServe, idle_model: str) -> None:
    # Scaling is asynchronous: the new worker reports UNLOADING until it has
    # imported torch and loaded the model, a few seconds, while /ping says Healthy.
    status, body = torchserve.manage("PUT", f"/models/{idle_model}?min_worker=1")
    assert status == 202, body
    run = run_cli(torchserve.spec(model=idle_model))
    if torchserve.workers(idle_model) == ["UNLOADING"]:  # still loading after the run
        assert run.rc == 1, run.stdout + run.stderr
        assert f"'{idle_model}'" in run.stdout
    started = time.monotonic()
    while torchserve.workers(idle_model) != ["READY"]:
        assert time.monotonic() - started < 60, torchserve.server.log()
        time.sleep(0.25)
    run = run_cli(torchserve.spec(model=idle_model))
    assert run.rc == 0, run.stdout + run.stderr
    assert f"'{idle_model}'" in run.stdout


def test_model_whose_worker_crash_loops(torchserve: TorchServe) -> None:
    status, body = torchserve.manage(
        "POST", f"/models?url={BROKEN}.mar&initial_workers=1&synchronous=false"
    )
    assert status == 202, body
    try:
        time.sleep(1)
        # /ping stays Healthy while the worker fails to load (for minutes).
        auth = {"Authorization": f"Bearer {torchserve.keys()['inference']}"}
        assert http_get(f"{torchserve.url}/ping", headers=auth)[0] == 200
        run = run_cli(torchserve.spec(model=BROKEN))
        assert run.rc == 1, run.stdout + run.stderr
        assert f"'{BROKEN}'" in run.stdout
        assert_no_keys(run, torchserve)
    finally:
        torchserve.manage("DELETE", f"/models/{BROKEN}")


def test_no_token_is_unauthorized(torchserve: TorchServe) -> None:
    run = run_cli(torchserve.spec(token_file=False))
    assert run.rc == 1, run.stdout + run.stderr
    assert "unauthorized" in run.stdout.lower()


def test_wrong_token_is_unauthorized_and_not_printed(torchserve: TorchServe) -> None:
    for spec in (
        torchserve.spec(token_file=False, token=WRONG_TOKEN),
        torchserve.spec(token_file=False, token=WRONG_TOKEN, model=MODEL),
        torchserve.spec(token_file=False, token="wrong"),
    ):
        run = run_cli(spec)
        assert run.rc == 1, run.stdout + run.stderr
        assert "unauthorized" in run.stdout.lower()
        assert_no_keys(run, torchserve, WRONG_TOKEN)


def test_token_file_gives_each_port_its_key(torchserve: TorchServe) -> None:
    keys = torchserve.keys()
    # One key for both ports cannot work: each API rejects the other's key.
    for key in ("inference", "management"):
        run = run_cli(torchserve.spec(token_file=False, token=keys[key], model=MODEL))
        assert run.rc == 1, run.stdout + run.stderr
        assert "unauthorized" in run.stdout.lower()
        assert_no_keys(run, torchserve)
    # token-file: inference key to /ping, management key to /models/NAME.
    run = run_cli("-v", torchserve.spec(model=MODEL))
    assert run.rc == 0, run.stdout + run.stderr
    assert_no_keys(run, torchserve)


def test_json_output_has_no_keys(torchserve: TorchServe) -> None:
    run = run_cli("--format", "json", torchserve.spec(model=MODEL))
    assert run.rc == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["healthy"] is True
    assert_no_keys(run, torchserve)
    run = run_cli("--format", "json", torchserve.spec(token_file=False, token=WRONG_TOKEN))
    assert run.rc == 1
    assert json.loads(run.stdout)["healthy"] is False
    assert_no_keys(run, torchserve, WRONG_TOKEN)


def test_token_file_is_reread_after_new_keys(torchserve: TorchServe) -> None:
    old = torchserve.keys()
    for kind in ("inference", "management"):
        status, body = torchserve.manage("GET", f"/token?type={kind}", key="API")
        assert status == 200, body
    new = torchserve.keys()
    assert new["inference"] != old["inference"]
    assert new["management"] != old["management"]
    run = run_cli(torchserve.spec(token_file=False, token=old["inference"]))
    assert run.rc == 1, run.stdout + run.stderr
    assert "unauthorized" in run.stdout.lower()
    run = run_cli(torchserve.spec(model=MODEL))
    assert run.rc == 0, run.stdout + run.stderr
    assert_no_keys(run, torchserve, old["inference"], old["management"])


def test_canary_idle_busy_wedged_soft_failed(torchserve: TorchServe) -> None:
    # The headline fake-dead: a worker blocked for good while the frontend answers
    # /ping Healthy and the management API lists the worker READY.
    inference = torchserve.keys()["inference"]
    target = Target(
        name="torchserve",
        ready=torchserve.spec(model=MODEL),
        live=torchserve.spec(mode="live"),
        infer_url=f"{torchserve.url}/predictions/{MODEL}",
        sample=[[1.0, 2.0, 3.0, 4.0]],
        path="0.0",
        switches=torchserve.key_file.parent / "switches",
        headers={"Authorization": f"Bearer {inference}"},
        refuses_stall=True,
    )
    walk(target)
    assert torchserve.workers(MODEL) == ["READY"]


def test_frozen_server_times_out(torchserve: TorchServe) -> None:
    torchserve.server.freeze()
    try:
        for spec in (torchserve.spec(timeout="2"), torchserve.spec(model=MODEL, timeout="2")):
            run = run_cli(spec)
            assert run.rc == 1, run.stdout + run.stderr
            assert "timed out" in run.stdout
            assert run.elapsed < 6, run.elapsed
    finally:
        torchserve.server.thaw()
    auth = {"Authorization": f"Bearer {torchserve.keys()['inference']}"}
    torchserve.server.wait_http(f"{torchserve.url}/ping", timeout=30, headers=auth)
    run = run_cli(torchserve.spec(model=MODEL))
    assert run.rc == 0, run.stdout + run.stderr


def test_stopped_server_is_refused(torchserve: TorchServe) -> None:
    """The last test of the module: it stops the shared server."""
    torchserve.server.stop()
    assert http_get(f"{torchserve.url}/ping", timeout=2)[0] == 0
    for spec in (torchserve.spec(), torchserve.spec(model=MODEL)):
        run = run_cli(spec)
        assert run.rc == 1, run.stdout + run.stderr
        assert "connection refused" in run.stdout
        assert_no_keys(run, torchserve)
