"""A Flask inference app as a user writes one, served by gunicorn in test_flask.py.

The routes under ``/_test/`` stand in for what a real app's model loading and
inference do to the monitor. Configured by environment:

- ``TP_INTERVAL``, ``TP_MAX_BUSY``: the monitor's settings (short, for tests).
- ``TP_STATUS_DIR``: the monitor's status directory (default: none).
- ``TP_PATHS``: ``health,ready,metrics`` paths (default ``/health,/ready,/metrics``).
- ``TP_AGGREGATE=1``: ``/metrics`` reports every worker from the status directory.
- ``TP_NO_PROMETHEUS=1``: behave as if prometheus_client were not installed.
- ``TP_DEVICE``: the app's device (``cuda:0`` with the fake NVML of tests/fakes:
  the Xid watch starts).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

if os.environ.get("TP_NO_PROMETHEUS"):
    sys.modules["prometheus_client"] = None  # type: ignore[assignment]  # import fails

from flask import Flask, jsonify

from torchprobe.integrations.flask import init_app
from torchprobe.monitor import Monitor

monitor = Monitor(
    checks=["tensor:device=cpu"],
    interval=float(os.environ.get("TP_INTERVAL", "0.25")),
    max_busy=float(os.environ.get("TP_MAX_BUSY", "1")),
    status_dir=os.environ.get("TP_STATUS_DIR") or False,
    device=os.environ.get("TP_DEVICE") or None,
)
PATHS = os.environ.get("TP_PATHS", "/health,/ready,/metrics")
health_path, ready_path, metrics_path = PATHS.split(",")
app = Flask(__name__)
init_app(
    app,
    monitor,
    health_path=health_path,
    ready_path=ready_path,
    metrics_path=metrics_path,
    aggregate=os.environ.get("TP_AGGREGATE") == "1",
)
# Started at import: gunicorn runs without --preload here, so this is the
# worker. With --preload, start it in gunicorn's post_fork hook instead.
monitor.start()
_release = threading.Event()


class AcceleratorError(RuntimeError):
    """Shaped like ``torch.AcceleratorError``: the CUDA error code rides on the exception."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


@app.get("/predict")
def predict() -> Any:
    with monitor.guard():
        return jsonify(pid=os.getpid(), prediction=1)


@app.post("/_test/lifecycle/<step>")
def lifecycle(step: str) -> Any:
    if step == "loading":
        monitor.loading()
    elif step == "loaded":
        monitor.loaded()
    elif step == "failed":
        monitor.load_failed(OSError("model.pt: unexpected end of file"))
    else:
        return jsonify(error=step), 404
    return jsonify(pid=os.getpid())


@app.post("/_test/crash/<kind>")
def crash(kind: str) -> Any:
    if kind == "assert":  # what torch < 2.8 raises, through the inference path's guard
        with monitor.guard():
            raise RuntimeError("CUDA error: device-side assert triggered")
    if kind == "code":  # no guard here: init_app's request tracking must see it
        raise AcceleratorError("kernel failed (simulated)", error_code=710)
    return jsonify(error=kind), 404


@app.get("/_test/hold")
def hold() -> Any:
    """A request stuck on a lock: tracked by init_app alone, no guard of its own."""
    _release.clear()
    released = _release.wait(timeout=30)
    return jsonify(pid=os.getpid(), released=released)


@app.post("/_test/release")
def release() -> Any:
    _release.set()
    return jsonify(pid=os.getpid())
