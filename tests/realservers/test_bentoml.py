"""The ``bentoml`` preset against a real BentoML 1.4 server (apps/bentoml_app.py).

One server for the module, one worker. BentoML answers (1.4.40):

- ``/livez``  200 ``"\\n"``; 503 ``Service is dead because .__is_alive__() returns False.``
- ``/readyz`` 200 ``"\\n"``; 503 ``Service is not ready because .__is_ready__() returns False.``

(``text/plain``), so the app's ``__is_ready__``/``__is_alive__`` read marker
files and the tests flip them. BentoML has no authentication of its own.

``bentoml serve`` runs an arbiter (circus) that starts each worker in a session
of its own (``os.setsid``), and the worker holds the listening socket: freezing
the arbiter's process group alone leaves the worker answering, so the frozen
test stops every process of the tree.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Run, alive, children, run_cli
from prometheus_client.parser import text_string_to_metric_families

from . import stallwalk
from .canary import Target, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "bento-secret-7f3a9c"


@dataclass
class Bento:
    server: ServerProcess
    url: str
    not_ready: Path
    not_alive: Path

    def probe(self, *options: str) -> Run:
        spec = ",".join([f"url={self.url}", *options])
        return run_cli(f"bentoml:{spec}")

    def tree(self) -> list[int]:
        assert self.server.process is not None
        return children(self.server.process.pid)


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bento]:
    python = server_venv("bentoml")
    state = tmp_path_factory.mktemp("bentoml")
    port = free_port()
    env = {
        "BENTOML_HOME": str(state / "home"),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_APP_NOT_READY": str(state / "not-ready"),
        "BENTOML_APP_NOT_ALIVE": str(state / "not-alive"),
        "CANARY_SWITCHES": str(state),
    }
    command = [str(python), str(APPS / "bentoml_app.py"), "--port", str(port)]
    server = ServerProcess(command, name="bentoml", cwd=state, env=env)
    url = f"http://127.0.0.1:{port}"
    server.start()
    started: list[int] = []
    try:
        server.wait_http(f"{url}/readyz", timeout=180)
        handle = Bento(server, url, state / "not-ready", state / "not-alive")
        started = handle.tree()
        yield handle
    finally:
        server.stop()
        for pid in started:  # a worker the arbiter left behind (its own session)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ready_and_live(bento: Bento) -> None:
    assert http_get(f"{bento.url}/readyz") == (200, b"\n")
    for mode in ("ready", "live"):
        run = bento.probe(f"mode={mode}", "timeout=2")
        assert run.rc == 0, (mode, run.stdout, run.stderr)
    assert bento.probe().rc == 0  # mode=ready is the default


def test_not_ready_but_live(bento: Bento) -> None:
    bento.not_ready.touch()
    try:
        said = http_get(f"{bento.url}/readyz")
        assert said == (503, b"Service is not ready because .__is_ready__() returns False.")
        ready = bento.probe("mode=ready", f"token={TOKEN}", "timeout=2")
        live = bento.probe("mode=live", f"token={TOKEN}", "timeout=2")
    finally:
        bento.not_ready.unlink()
    assert ready.rc == 1, ready.stdout
    assert "/readyz" in ready.stdout and "503" in ready.stdout, ready.stdout
    assert live.rc == 0, live.stdout
    for run in (ready, live):
        assert TOKEN not in run.stdout + run.stderr


def test_not_alive(bento: Bento) -> None:
    bento.not_alive.touch()
    try:
        said = http_get(f"{bento.url}/livez")
        assert said == (503, b"Service is dead because .__is_alive__() returns False.")
        live = bento.probe("mode=live", "timeout=2")
    finally:
        bento.not_alive.unlink()
    assert live.rc == 1, live.stdout
    assert "/livez" in live.stdout and "503" in live.stdout, live.stdout


def test_canary_idle_busy_wedged_soft_failed(bento: Bento) -> None:
    target = Target(
        name="bentoml",
        ready=f"bentoml:url={bento.url},api=classify",  # api=: where infer= posts
        live=f"bentoml:url={bento.url},mode=live",
        infer_url=f"{bento.url}/classify",
        sample={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
        path="0",
        switches=bento.not_ready.parent,
    )
    walk(target)


def test_stall_idle_busy_wedged(bento: Bento, tmp_path: Path) -> None:
    # BentoML counts a request when its answer is sent (request_total): with
    # one request of 1 s at a time while busy, any DURATION above 1 s holds.
    # stall=12s outlasts the app's traffic timeout (10 s), so wedged requests
    # are answered 504 and counted before the stall shows: not progress.
    target = stallwalk.StallTarget(
        name="bentoml",
        spec=f"bentoml:url={bento.url},mode=live,stall=12s",
        stall=12.0,
        infer_url=f"{bento.url}/classify",
        sample={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
        switches=bento.not_ready.parent,
        state=tmp_path / "state",
        gave_up=frozenset({504}),
    )
    stallwalk.walk(target)
    status, body = http_get(f"{bento.url}/metrics")
    assert status == 200, status
    # The series the preset reads, as BentoML 1.4.40 writes them.
    seen = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    where = {"endpoint": "/classify", "runner_name": "TinyClassifier",
             "service_name": "TinyClassifier", "service_version": "not available"}  # fmt: skip
    wanted = [("bentoml_service_request_in_progress", where)] + [
        ("bentoml_service_request_total", {**where, "http_response_code": code})
        for code in ("200", "504")
    ]
    for name, labels in wanted:
        assert (name, tuple(sorted(labels.items()))) in seen, (name, labels, body[-2000:])


def test_frozen_times_out(bento: Bento) -> None:
    # ServerProcess.freeze() stops the arbiter's group; the worker is in a
    # session of its own, so stop it by pid too (and thaw it first).
    tree = bento.tree()
    assert tree, "bentoml serve has no worker process"
    bento.server.freeze()
    for pid in tree:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert http_get(f"{bento.url}/readyz", timeout=1) == (0, b"")
        runs = [bento.probe(f"mode={mode}", "timeout=2") for mode in ("ready", "live")]
    finally:
        for pid in tree:
            os.kill(pid, signal.SIGCONT)
        bento.server.thaw()
    for run in runs:
        assert run.rc == 1, run.stdout
        assert "timed out" in run.stdout, run.stdout
        assert run.elapsed < 6, run.elapsed
    bento.server.wait_http(f"{bento.url}/readyz", timeout=30)
    assert bento.probe("timeout=2").rc == 0


def test_stopped_is_refused(bento: Bento) -> None:  # last: it stops the shared server
    tree = bento.tree()
    bento.server.stop()
    assert not any(alive(pid) for pid in tree), "a bentoml worker outlived its arbiter"
    for mode in ("ready", "live"):
        run = bento.probe(f"mode={mode}", "timeout=2")
        assert run.rc == 1, run.stdout
        assert "connection refused" in run.stdout, run.stdout
