"""A PyTorch model served by Flask under gunicorn, with torchprobe's monitor wired in.

    python make_model.py /tmp/model.pt
    MODEL_PATH=/tmp/model.pt gunicorn -c gunicorn.conf.py app:app
    curl -s -XPOST 127.0.0.1:8000/predict -H 'Content-Type: application/json' \
        -d '{"inputs": [[2, 0, 0, 0]]}'

Environment (so that a corrupt model or a missing GPU can be tried without editing code):

- ``MODEL_PATH``: the model file (default ``/models/model.pt``); ``make_model.py`` writes one.
- ``DEVICE``: torch device to serve on (default ``cpu``; ``cuda`` or ``cuda:0`` on a GPU).
- ``MONITOR_INTERVAL``, ``MONITOR_MAX_BUSY``: seconds between the monitor's check rounds
  (and status-file writes), and how long a request may run before the process counts as stuck.
- ``TORCHPROBE_STATUS_DIR``: where each worker's monitor writes ``<pid>.json``.
- ``TORCHPROBE_EXAMPLE_FAULTS=1``: adds the fault-injection routes under ``/faults/``.
  Off unless set: they break the process on purpose.

Endpoints: ``POST /predict``; ``/health`` (live), ``/ready`` and ``/metrics`` from
torchprobe's Flask adapter.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch
from flask import Flask, jsonify, request
from make_model import INPUTS, build_model

from torchprobe.integrations.flask import init_app
from torchprobe.monitor import Monitor

log = logging.getLogger("flask_app")
# Under gunicorn nothing configures the root logger: without this, the app's
# and the monitor's messages below WARNING would go nowhere.
logging.basicConfig(
    level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
)

MODEL_PATH = os.environ.get("MODEL_PATH", "/models/model.pt")
DEVICE = os.environ.get("DEVICE", "cpu")
FAULTS = os.environ.get("TORCHPROBE_EXAMPLE_FAULTS", "") == "1"

# Created at import, started in each worker after gunicorn forks it
# (gunicorn.conf.py: post_fork). Creating it starts nothing, so importing this
# module in gunicorn's master (--preload) is safe: no thread, no CUDA there.
monitor = Monitor(
    device=DEVICE,
    interval=float(os.environ.get("MONITOR_INTERVAL", "5")),
    max_busy=float(os.environ.get("MONITOR_MAX_BUSY", "30")),
)
app = Flask(__name__)
init_app(app, monitor)

_model: torch.nn.Module | None = None
_load_error: str | None = None
# One inference at a time per worker: the device runs them one after another
# anyway, and serialising keeps a worker's threads from oversubscribing the CPU.
_model_lock = threading.Lock()


def load_model() -> None:
    """Load and warm up the model, telling the monitor how it went."""
    global _model, _load_error
    monitor.loading()
    try:
        model = build_model()
        # weights_only: a model file is data; never unpickle code from it.
        model.load_state_dict(torch.load(MODEL_PATH, map_location=DEVICE, weights_only=True))
        model.to(DEVICE).eval()
        with torch.inference_mode():  # warm-up: the first call pays for lazy initialisation
            model(torch.zeros(1, INPUTS, device=DEVICE))
    except Exception as exc:
        # The classic soft failure, kept on purpose: the error is logged, the
        # process keeps serving, and /predict answers 200 with nothing in it —
        # what many real services do. A port check, `ps` and /predict's status
        # all say "fine"; the monitor makes this process neither ready nor live.
        log.exception("could not load the model from %s; serving without it", MODEL_PATH)
        _load_error = f"{type(exc).__name__}: {exc}"
        monitor.load_failed(exc)
        return
    _model = model
    monitor.loaded()
    log.info("model loaded from %s on %s", MODEL_PATH, DEVICE)


def start_worker() -> None:
    """Per worker, after the fork: the monitor's thread, then the model.

    The model loads in a thread so that the worker answers at once: /health
    (live) says 200 and /ready 503 "model loading" until it is done, and
    gunicorn's worker timeout never fires on a slow load.
    """
    monitor.start()
    threading.Thread(target=load_model, name="model-loader", daemon=True).start()


def _inputs(payload: Any) -> list[list[float]] | None:
    rows = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    for row in rows:
        if not isinstance(row, list) or len(row) != INPUTS:
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            return None
    return rows


@app.post("/predict")
def predict() -> Any:
    rows = _inputs(request.get_json(silent=True))
    if rows is None:
        return jsonify(error=f'expected {{"inputs": [[{INPUTS} numbers], ...]}}'), 400
    model = _model
    if model is None:
        if _load_error is not None:
            log.warning("predict without a model (%s): answering with no predictions", _load_error)
            return jsonify(predictions=[])  # the soft failure: 200, empty
        return jsonify(error="model loading"), 503
    # guard(): the monitor sees how long the inference has been running, and a
    # sticky CUDA error raised in it marks the process not live for good.
    # init_app already runs each whole request in a guard; this one is the line
    # an app needs without the adapter's tracking, and nesting costs nothing.
    with monitor.guard(), _model_lock, torch.inference_mode():
        scores = model(torch.tensor(rows, dtype=torch.float32, device=DEVICE)).softmax(-1)
        labels = scores.argmax(-1)
    return jsonify(
        predictions=[
            {"label": int(label), "scores": [round(float(s), 6) for s in row]}
            for label, row in zip(labels.tolist(), scores.cpu().tolist(), strict=True)
        ]
    )


def _sticky_cuda_error() -> RuntimeError:
    """The error torch raises after a device-side assert, built on any machine.

    torch >= 2.8 raises ``torch.AcceleratorError`` (a RuntimeError) carrying
    ``error_code``; older torch a RuntimeError with the same text.
    """
    message = (
        "CUDA error: device-side assert triggered\n"
        "CUDA kernel errors might be asynchronously reported at some other API call, "
        "so the stacktrace below might be incorrect."
    )
    error_class = getattr(torch, "AcceleratorError", None)
    try:
        error: RuntimeError = error_class(message) if error_class else RuntimeError(message)
    except Exception:  # a torch whose AcceleratorError cannot be built from Python
        error = RuntimeError(message)
    error.error_code = 710  # type: ignore[attr-defined]  # cudaErrorAssert
    return error


def _lock_model_twice() -> None:
    # The textbook self-deadlock: a helper takes a non-reentrant lock its caller
    # already holds. The thread waits forever and holds the model lock, so every
    # later /predict in this worker queues behind it.
    with _model_lock:
        with _model_lock:
            pass  # never reached


if FAULTS:
    log.warning("TORCHPROBE_EXAMPLE_FAULTS=1: fault-injection routes are enabled")

    @app.post("/faults/sticky-cuda-error")
    def fault_sticky() -> Any:
        """Raise a sticky CUDA error in this worker, through the inference path's guard."""
        try:
            with monitor.guard():
                raise _sticky_cuda_error()
        except RuntimeError as exc:
            return jsonify(pid=os.getpid(), raised=f"{type(exc).__name__}: {exc}"), 500

    @app.post("/faults/deadlock")
    def fault_deadlock() -> Any:
        """Deadlock this request's thread on the model lock; it never answers.

        The adapter counts it in flight (init_app tracks every request), so once
        it has run past MONITOR_MAX_BUSY the worker is no longer live."""
        _lock_model_twice()
        return jsonify(pid=os.getpid())  # never reached
