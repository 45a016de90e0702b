"""A real Ray Serve 2.60 server for tests/realservers/test_ray.py.

    python ray_app.py --port PORT [--dashboard-port PORT] [--metrics-port PORT]
                      [--control DIR] [--temp-dir DIR]

Starts a one-node Ray (2 CPUs) and Serve with its HTTP proxy on
127.0.0.1:PORT, deploys the application "classifier" at route prefix
"/classify" (a tiny torch model made here) and stays in the foreground until
SIGTERM or SIGINT, then shuts Serve and Ray down. Ray's other ports (GCS,
raylet, workers) are picked free by Ray; only the dashboard agent's 52365 is
fixed, and a second instance merely runs its agent without that HTTP port.
``--dashboard-port`` also starts Ray's dashboard on 127.0.0.1:PORT, which
serves the Serve REST API (``GET /api/serve/applications/``); without it Ray
runs no dashboard. ``--metrics-port`` makes Ray's metrics agent export every
process's metrics (Serve's among them, prefixed ``ray_``) in the Prometheus
format at http://127.0.0.1:PORT/metrics (what ``ray start
--metrics-export-port`` does); without it Ray picks that port. ``--temp-dir``
(keep it short: Ray puts Unix sockets under it) replaces /tmp/ray for the
session's logs and sockets.

With ``--control DIR`` the test steers it through files: it writes one command
to DIR/command (written elsewhere, then renamed in); the app runs it, removes
the file and answers in DIR/reply (renamed in too) with ``ok ...`` or
``error ...``. Commands:

    deploy classifier   (re)deploy the classifier and wait until it is RUNNING
    deploy loading      the app "loading" at "/loading": its constructor sleeps
                        for an hour, so it stays DEPLOYING (a slow model load)
    deploy broken       the app "broken" at "/broken": its constructor raises,
                        so it ends DEPLOY_FAILED
    delete NAME         serve.delete(NAME)
    status              the applications' statuses as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import ray
import switches
import torch
from ray import serve
from starlette.requests import Request

LABELS = ["cat", "dog", "bird"]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Classifier:
    """A tiny real torch classifier: four features in, one of three labels out."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        torch.set_num_threads(1)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        ).eval()
        self.device = asyncio.Semaphore(1)  # one request on the model at a time

    async def __call__(self, request: Request) -> dict[str, object]:
        inputs = [[0.1, 0.2, 0.3, 0.4]]
        if request.method == "POST":
            inputs = (await request.json())["inputs"]
        async with self.device:
            # In a thread, as blocking model code is run: the switches of
            # switches.py (wedge, slow, soft-fail) leave the replica's loop free.
            await asyncio.to_thread(switches.hold)
            if switches.soft_failed():
                return {"labels": []}
            return self._labels(inputs)

    def _labels(self, inputs: list[list[float]]) -> dict[str, object]:
        with torch.inference_mode():
            scores = self.model(torch.tensor(inputs, dtype=torch.float32))
        return {"labels": [LABELS[int(i)] for i in scores.argmax(dim=1)]}


# Its replica never leaves its constructor: serve.delete would wait out the
# default 20 s graceful shutdown before killing it.
@serve.deployment(ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1)
class Loading:
    """Never becomes ready: its 'model load' takes an hour."""

    def __init__(self) -> None:
        time.sleep(3600)

    def __call__(self, request: Request) -> str:
        return "loaded"


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Broken:
    """Its model load fails: the application ends DEPLOY_FAILED."""

    def __init__(self) -> None:
        raise RuntimeError("model file is corrupt")

    def __call__(self, request: Request) -> str:
        return "unreachable"


def deploy(name: str) -> str:
    if name == "classifier":
        serve.run(Classifier.bind(), name="classifier", route_prefix="/classify")
        return "ok classifier RUNNING"
    deployment = {"loading": Loading, "broken": Broken}.get(name)
    if deployment is None:
        return f"error unknown application {name!r}"
    # Don't wait: these never reach RUNNING.
    serve._run(deployment.bind(), name=name, route_prefix=f"/{name}", _blocking=False)
    return f"ok {name} submitted"


def statuses() -> str:
    return json.dumps(
        {
            name: {"status": str(app.status.value), "message": app.message[:300]}
            for name, app in serve.status().applications.items()
        }
    )


def run_command(line: str) -> str:
    words = line.split()
    try:
        if words[:1] == ["deploy"] and len(words) == 2:
            return deploy(words[1])
        if words[:1] == ["delete"] and len(words) == 2:
            serve.delete(words[1], _blocking=True)
            return f"ok deleted {words[1]}"
        if words == ["status"]:
            return "ok " + statuses()
        return f"error unknown command {line!r}"
    except Exception as exc:  # the test reads it in the reply
        return f"error {type(exc).__name__}: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path)
    parser.add_argument("--dashboard-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--temp-dir")
    args = parser.parse_args()

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.control is not None:
        args.control.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The raylet puts each worker (the Serve controller, the HTTP proxy, the
    # replicas) in a process group of its own; this keeps them in this script's
    # group, so that a signal to the group (ServerProcess.freeze/stop) reaches
    # the whole server.
    os.environ.setdefault("RAY_process_group_cleanup_enabled", "false")
    # The replicas import switches.py (this folder) and read $CANARY_SWITCHES:
    # Ray's workers inherit this environment.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    # address="local": always a new one-node cluster, never one found through
    # RAY_ADDRESS or a `ray start` on this machine.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=args.dashboard_port is not None,
        dashboard_host="127.0.0.1",
        dashboard_port=args.dashboard_port or 8265,
        configure_logging=False,
        _temp_dir=args.temp_dir,
        _metrics_export_port=args.metrics_port,
    )
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": args.port},
    )
    print(f"serve started after {time.monotonic() - started:.1f} s", flush=True)
    print(deploy("classifier"), f"after {time.monotonic() - started:.1f} s", flush=True)

    command = args.control / "command" if args.control else None
    try:
        while not stopping:
            if command is not None and command.exists():
                line = command.read_text().strip()
                command.unlink()
                reply = run_command(line)
                print(f"command {line!r}: {reply}", flush=True)
                tmp = args.control / "reply.tmp"
                tmp.write_text(reply + "\n")
                os.replace(tmp, args.control / "reply")
            time.sleep(0.1)
    finally:
        print("shutting down", flush=True)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
