"""The ``ray`` preset against a real Ray Serve 2.60 (apps/ray_app.py, envs/ray.txt).

One server for the whole module: a one-node Ray with Serve's HTTP proxy on a
free port, Ray's dashboard on another (it serves the Serve REST API), and the
application "classifier" at "/classify" (a tiny torch model). The app script
takes commands through a control folder (deploy, delete, status) so that the
tests can change what is deployed without a restart.

What the proxy answers (Ray Serve 2.60, measured here):

- starting: connection refused until the proxy actor listens, then for a few
  seconds ``/-/healthz`` and ``/-/routes`` both 503 "Route table is not
  populated yet."; afterwards both 200 (``success``; ``{"/classify":
  "classifier"}``).
- ``/-/routes`` lists an application from the moment it is submitted: while
  its replicas still start (DEPLOYING) and after its constructor failed
  (DEPLOY_FAILED) alike. The proxy alone cannot tell whether an app runs.
- after ``serve.delete`` of every app: ``/-/healthz`` still 200, ``/-/routes``
  200 ``{}``.

What the dashboard's ``GET /api/serve/applications/`` answers (measured here):

- Ray 2.60 turns token authentication on by default for a new local cluster
  (``RAY_AUTH_MODE`` unset; it then makes ``~/.ray/auth_token`` if there is
  none). The dashboard answers 401 "Unauthorized: Missing authentication
  token" without ``Authorization: Bearer TOKEN``, 403 with a wrong one. The
  Serve proxy takes no token. The fixture gives the server a token of its own
  (``RAY_AUTH_TOKEN``) and the checks pass it as ``token=``.
- 200, a JSON object with the keys ``controller_info``, ``proxy_location``,
  ``http_options``, ``grpc_options``, ``proxies``, ``applications``,
  ``target_capacity``, ``target_groups``, ``controller_health_metrics``,
  ``restores_unset_config_options``. ``applications`` maps each name to an
  object with ``name``, ``route_prefix``, ``docs_path``, ``status``,
  ``message``, ``last_deployed_time_s``, ``deployed_app_config``, ``source``,
  ``deployments``, ``external_scaler_enabled``, ``deployment_topology``.
- "classifier": status ``RUNNING``, message ``""``; its deployment HEALTHY,
  one replica RUNNING.
- "loading" (constructor sleeps): status ``DEPLOYING``, message ``""``; its
  deployment UPDATING (CONFIG_UPDATE_STARTED), the replica STARTING.
- "broken" (constructor raises): status ``DEPLOY_FAILED``, message "Failed to
  update the deployments ['Broken']."; the constructor's error ("model file
  is corrupt", in a traceback) is only in
  ``deployments.Broken.message`` (status DEPLOY_FAILED, trigger
  REPLICA_STARTUP_FAILED, "The deployment failed to start 3 times in a
  row. ..."), which the preset does not show.
- A deleted app is gone from ``applications``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, require, run_cli

from . import stallwalk
from .canary import Target, post, walk
from .harness import APPS, ServerProcess, free_port, http_get, server_venv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: An environment variable that every process of the module's server inherits.
MARKER = "TORCHPROBE_RAY_TEST"


@dataclass
class RayServe:
    server: ServerProcess
    url: str
    dashboard: str
    token: str
    control: Path
    marker: str
    #: Ray's metrics export (``--metrics-port``): ``http://127.0.0.1:PORT/metrics``.
    metrics: str = ""

    def command(self, line: str, timeout: float = 60) -> str:
        """Send one command to the app; its reply (``ok ...``)."""
        reply = self.control / "reply"
        reply.unlink(missing_ok=True)
        tmp = self.control / "command.tmp"
        tmp.write_text(line + "\n")
        os.replace(tmp, self.control / "command")
        deadline = time.monotonic() + timeout
        while not reply.exists():
            require(self.server.running(), f"ray exited:\n{self.server.log()}")
            assert time.monotonic() < deadline, f"no reply to {line!r}:\n{self.server.log()}"
            time.sleep(0.1)
        answer = reply.read_text().strip()
        assert answer.startswith("ok"), f"{line!r}: {answer}"
        return answer

    def statuses(self) -> dict[str, dict[str, str]]:
        return json.loads(self.command("status").removeprefix("ok "))

    def routes(self) -> tuple[int, dict[str, str] | bytes]:
        status, body = http_get(f"{self.url}/-/routes")
        return status, json.loads(body) if status == 200 else body

    def serve_api(self) -> dict[str, Any]:
        """The dashboard's ``/api/serve/applications/`` document."""
        headers = {"Authorization": f"Bearer {self.token}"}
        status, body = http_get(f"{self.dashboard}/api/serve/applications/", headers=headers)
        assert status == 200, (status, body[:300])
        document = json.loads(body)
        assert isinstance(document, dict), document
        return document

    def spec(self, *, dashboard: bool = False, **options: str) -> str:
        """``ray:url=...`` with ``options``; ``dashboard`` adds dashboard-url= and token=."""
        parts = [f"url={self.url}"]
        if dashboard:
            parts += [f"dashboard-url={self.dashboard}", f"token={self.token}"]
        parts += [f"{key.replace('_', '-')}={value}" for key, value in options.items()]
        return "ray:" + ",".join(parts)


@pytest.fixture(scope="module")
def ray() -> Iterator[RayServe]:
    python = server_venv("ray")
    port = free_port()
    while (dashboard_port := free_port()) == port:
        pass
    while (metrics_port := free_port()) in (port, dashboard_port):
        pass
    url = f"http://127.0.0.1:{port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    # Ray 2.60 wants a token for its dashboard by default; give this cluster
    # its own rather than use (or make) ~/.ray/auth_token.
    token = secrets.token_hex(32)
    # Short: Ray keeps Unix sockets under it. Also keeps /tmp/ray free of our logs.
    temp_dir = Path(tempfile.mkdtemp(prefix="tp-ray-"))
    control = temp_dir / "control"
    control.mkdir()
    (temp_dir / "switches").mkdir()
    # Every process of this server inherits it: leftovers() tells them by it
    # from those of another Ray on the machine.
    marker = f"{MARKER}={temp_dir}"
    server = ServerProcess(
        [str(python), str(APPS / "ray_app.py"), "--port", str(port),
         "--dashboard-port", str(dashboard_port), "--metrics-port", str(metrics_port),
         "--control", str(control),
         "--temp-dir", str(temp_dir)],
        name="ray",
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, MARKER: str(temp_dir),
             "CANARY_SWITCHES": str(temp_dir / "switches")},
    )  # fmt: skip
    server.start()
    try:
        server.wait_http(f"{url}/classify", timeout=240)
        server.wait_http(
            f"{dashboard}/api/serve/applications/",
            timeout=60,
            headers={"Authorization": f"Bearer {token}"},
        )
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        state = RayServe(server, url, dashboard, token, control, marker, metrics)
        # Two apps that never run, submitted now so that they settle while
        # the first tests run: one whose model load never ends, one whose
        # constructor raises.
        state.command("deploy loading")
        state.command("deploy broken")
        yield state
    finally:
        server.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def output(run: Run) -> str:
    return f"rc={run.rc} in {run.elapsed:.1f} s\n{run.stdout}\n{run.stderr}"


def leftovers(ray: RayServe) -> list[str]:
    """Processes of the stopped server still on the machine (ps).

    Those in its process group or session, and any that carry its marker in
    their environment (Ray's workers, wherever they went), but not those of
    another Ray that runs beside it (another test session). The dashboard's
    module processes ("ray-dashboard-ServeHead-0 ...") rename themselves over
    the environment that /proc shows: only their group tells them.
    """
    assert ray.server.process is not None
    pid = ray.server.process.pid
    ps = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,sid=,stat=,args="], capture_output=True, text=True, check=True
    )
    found = []
    for line in ps.stdout.splitlines():
        fields = line.split(None, 4)
        if len(fields) < 5:
            continue
        if str(pid) in fields[1:3] or has_marker(int(fields[0]), ray.marker):
            found.append(line.strip())
    return found


def has_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return marker.encode() in environ.split(b"\0")


def test_ready_with_app_name(ray: RayServe) -> None:
    run = run_cli(f"ray:url={ray.url},app=classifier")
    assert run.rc == 0, output(run)
    assert "classifier" in run.stdout


def test_ready_with_route_prefix(ray: RayServe) -> None:
    run = run_cli(f"ray:url={ray.url},app=/classify")
    assert run.rc == 0, output(run)
    assert "/classify" in run.stdout


def test_ready_without_app(ray: RayServe) -> None:
    run = run_cli(f"ray:url={ray.url}")
    assert run.rc == 0, output(run)


def test_live(ray: RayServe) -> None:
    assert http_get(f"{ray.url}/-/healthz") == (200, b"success")
    run = run_cli(f"ray:url={ray.url},mode=live")
    assert run.rc == 0, output(run)


def test_app_not_deployed_fails_naming_it(ray: RayServe) -> None:
    run = run_cli(f"ray:url={ray.url},app=sentiment")
    assert run.rc == 1, output(run)
    assert "'sentiment'" in run.stdout, output(run)
    # A route prefix is matched whole, not as a substring of one.
    run = run_cli(f"ray:url={ray.url},app=/class")
    assert run.rc == 1, output(run)
    assert "'/class'" in run.stdout, output(run)


def test_ready_with_dashboard(ray: RayServe) -> None:
    for app in ("classifier", "/classify"):
        run = run_cli(ray.spec(app=app, dashboard=True))
        assert run.rc == 0, output(run)
        assert "RUNNING" in run.stdout, output(run)


def test_dashboard_without_token_is_unauthorized(ray: RayServe) -> None:
    run = run_cli(ray.spec(app="classifier", dashboard_url=ray.dashboard))
    assert run.rc == 1, output(run)
    assert "unauthorized" in run.stdout and "401" in run.stdout, output(run)
    assert "token=" in run.stdout, output(run)
    run = run_cli(ray.spec(app="classifier", dashboard_url=ray.dashboard, token="wrong"))
    assert run.rc == 1, output(run)
    assert "unauthorized" in run.stdout and "403" in run.stdout, output(run)


@pytest.mark.parametrize(
    ("app", "status", "message"),
    [
        ("loading", "DEPLOYING", ""),
        ("broken", "DEPLOY_FAILED", "Failed to update the deployments ['Broken']."),
    ],
)
def test_app_that_does_not_run(ray: RayServe, app: str, status: str, message: str) -> None:
    """/-/routes lists an app whatever its status; the Serve API tells.

    Without dashboard-url= the preset only sees /-/routes and passes: that
    pins what Ray Serve 2.60's proxy answers (``app=`` proves it deployed, not
    running). With dashboard-url= it fails naming the status and the app's
    message.
    """
    deadline = time.monotonic() + 120
    while (seen := ray.statuses()[app]["status"]) != status:
        assert time.monotonic() < deadline, f"{app} stayed {seen}:\n{ray.server.log()}"
        time.sleep(1)
    code, routes = ray.routes()
    assert code == 200 and isinstance(routes, dict) and routes.get(f"/{app}") == app, routes
    served = ray.serve_api()["applications"][app]
    assert (served["status"], served["message"], served["route_prefix"]) == (
        status, message, f"/{app}"
    ), served  # fmt: skip

    run = run_cli(ray.spec(app=app))
    assert run.rc == 0, output(run)

    for name in (app, f"/{app}"):
        run = run_cli(ray.spec(app=name, dashboard=True))
        assert run.rc == 1, output(run)
        assert f"application '{app}' is {status}" in run.stdout, output(run)
        if message:
            assert f"{status}: {message}" in run.stdout, output(run)
        if app == "broken":  # the cause, from the failed deployment's traceback
            assert "(Broken: RuntimeError: model file is corrupt)" in run.stdout, output(run)
    # The classifier beside them still passes.
    run = run_cli(ray.spec(app="classifier", dashboard=True))
    assert run.rc == 0, output(run)


def test_without_app_every_app_must_run(ray: RayServe) -> None:
    """No app=: the Serve API must show every application RUNNING."""
    run = run_cli(ray.spec())
    assert run.rc == 0, output(run)
    run = run_cli(ray.spec(dashboard=True))
    assert run.rc == 1, output(run)
    assert "is DEPLOYING" in run.stdout or "is DEPLOY_FAILED" in run.stdout, output(run)
    assert "(and 1 more not RUNNING)" in run.stdout, output(run)
    ray.command("delete loading")
    ray.command("delete broken")
    assert set(ray.serve_api()["applications"]) == {"classifier"}
    run = run_cli(ray.spec(dashboard=True))
    assert run.rc == 0, output(run)
    assert "1 RUNNING" in run.stdout, output(run)


def test_canary_idle_busy_wedged_soft_failed(ray: RayServe) -> None:
    # The replica computes in a thread, one request at a time: a wedged one
    # leaves the proxy and the replica's own loop answering.
    target = Target(
        name="ray",
        ready=f"ray:url={ray.url},app=classifier",
        live=f"ray:url={ray.url},mode=live",
        infer_url=f"{ray.url}/classify",
        sample={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
        path="labels.0",
        switches=ray.control.parent / "switches",
    )
    walk(target)


#: What the ray preset's stall= reads (presets.py), as Ray's metrics agent exports them.
STALL_METRICS = (
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_queued_queries",
    "ray_serve_deployment_request_counter_total",
)


def series(body: bytes, names: tuple[str, ...]) -> list[str]:
    """The sample lines of ``names`` in a metrics answer."""
    lines = body.decode(errors="replace").splitlines()
    return [line for line in lines if line.split("{")[0].split(" ")[0] in names]


def test_stall_idle_busy_wedged(ray: RayServe, tmp_path: Path) -> None:
    # Ray's metrics agent shows a counter only after its first report: one
    # request, then wait (bounded) until every series the preset reads is there.
    assert post(f"{ray.url}/classify", {"inputs": [[1.0, 2.0, 3.0, 4.0]]}, {})[0] == 200
    started = time.monotonic()
    found: list[str] = []
    while time.monotonic() - started < 60:
        status, body = http_get(ray.metrics)
        found = series(body, STALL_METRICS) if status == 200 else []
        if {line.split("{")[0] for line in found} == set(STALL_METRICS):
            break
        time.sleep(1)
    print(f"ray metrics after {time.monotonic() - started:.1f} s:\n" + "\n".join(found))
    assert {line.split("{")[0] for line in found} == set(STALL_METRICS), found
    target = stallwalk.StallTarget(
        name="ray",
        spec=f"ray:url={ray.url},mode=live,stall=25s,metrics-url={ray.metrics}",
        stall=25.0,
        infer_url=f"{ray.url}/classify",
        sample={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
        switches=ray.control.parent / "switches",
        state=tmp_path / "state",
        lag=10.0,
    )
    stallwalk.walk(target)


def test_frozen_server_times_out(ray: RayServe) -> None:
    ray.server.freeze()
    try:
        run = run_cli(f"ray:url={ray.url},app=classifier,timeout=2", timeout=30)
    finally:
        ray.server.thaw()
    assert run.rc == 1, output(run)
    assert "timed out" in run.stdout, output(run)
    assert run.elapsed < 6, f"{run.elapsed:.1f} s:\n{output(run)}"
    ray.server.wait_http(f"{ray.url}/-/healthz", timeout=30)
    run = run_cli(f"ray:url={ray.url},app=classifier")
    assert run.rc == 0, output(run)


def test_deleted_app_fails_naming_it(ray: RayServe) -> None:
    ray.command("delete classifier")
    assert "classifier" not in ray.statuses()
    code, routes = ray.routes()
    assert code == 200 and isinstance(routes, dict) and "/classify" not in routes, routes
    assert "classifier" not in ray.serve_api()["applications"]
    for app in ("classifier", "/classify"):
        for dashboard in (False, True):
            run = run_cli(ray.spec(app=app, dashboard=dashboard))
            assert run.rc == 1, output(run)
            assert f"'{app}'" in run.stdout, output(run)
    # The proxy itself stays healthy.
    run = run_cli(f"ray:url={ray.url},mode=live")
    assert run.rc == 0, output(run)


def test_stopped_server_fails(ray: RayServe) -> None:
    """Last: stops the module's server and checks that nothing of Ray is left."""
    ray.server.stop()
    assert not ray.server.running()
    deadline = time.monotonic() + 15
    while (left := leftovers(ray)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "\n".join(left)
    run = run_cli(f"ray:url={ray.url},timeout=2")
    assert run.rc == 1, output(run)
    assert "connection refused" in run.stdout, output(run)
