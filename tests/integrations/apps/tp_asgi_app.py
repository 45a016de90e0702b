"""A Starlette inference app as a user writes one, served by uvicorn in test_asgi.py.

It uses all three ASGI pieces: :func:`routes` at ``/health``, ``/ready`` and
``/metrics``; :func:`health_app` mounted at ``/probe`` with custom paths; and
:class:`TorchprobeMiddleware`. The routes under ``/_test/`` stand in for what a
real app's model loading and inference do to the monitor. Configured by
environment: ``TP_INTERVAL``, ``TP_MAX_BUSY`` and ``TP_STATUS_DIR`` as in
tp_flask_app.py, and ``TP_DEVICE``, the app's device (``cuda:0`` with the fake
NVML of tests/fakes: the Xid watch starts).
"""

from __future__ import annotations

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from torchprobe.integrations.asgi import TorchprobeMiddleware, health_app, routes
from torchprobe.monitor import Monitor

monitor = Monitor(
    checks=["tensor:device=cpu"],
    interval=float(os.environ.get("TP_INTERVAL", "0.25")),
    max_busy=float(os.environ.get("TP_MAX_BUSY", "1")),
    status_dir=os.environ.get("TP_STATUS_DIR") or False,
    device=os.environ.get("TP_DEVICE") or None,
)
PROBE = health_app(monitor, health_path="/livez", ready_path="/readyz", metrics_path="/prom")
_release = asyncio.Event()


class AcceleratorError(RuntimeError):
    """Shaped like ``torch.AcceleratorError``: the CUDA error code rides on the exception."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


async def predict(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid(), "prediction": 1})


async def lifecycle(request: Request) -> JSONResponse:
    step = request.path_params["step"]
    if step == "loading":
        monitor.loading()
    elif step == "loaded":
        monitor.loaded()
    elif step == "failed":
        monitor.load_failed(OSError("model.pt: unexpected end of file"))
    else:
        return JSONResponse({"error": step}, 404)
    return JSONResponse({"pid": os.getpid()})


async def crash(request: Request) -> JSONResponse:
    kind = request.path_params["kind"]
    if kind == "assert":  # what torch < 2.8 raises, through the inference path's guard
        with monitor.guard():
            raise RuntimeError("CUDA error: device-side assert triggered")
    if kind == "code":  # no guard here: the middleware must see it
        raise AcceleratorError("kernel failed (simulated)", error_code=710)
    return JSONResponse({"error": kind}, 404)


async def hold(request: Request) -> JSONResponse:
    """A request awaiting forever, tracked by the middleware alone; the loop stays free."""
    _release.clear()
    try:
        await asyncio.wait_for(_release.wait(), timeout=30)
    except asyncio.TimeoutError:
        return JSONResponse({"pid": os.getpid(), "released": False})
    return JSONResponse({"pid": os.getpid(), "released": True})


async def release(request: Request) -> JSONResponse:
    _release.set()
    return JSONResponse({"pid": os.getpid()})


async def block(request: Request) -> JSONResponse:
    """The classic asyncio mistake: blocking work in an ``async`` handler stops the loop."""
    time.sleep(float(request.query_params.get("seconds", "1")))
    return JSONResponse({"pid": os.getpid()})


app = Starlette(
    routes=[
        *routes(monitor),
        Mount("/probe", app=PROBE),
        Route("/predict", predict),
        Route("/_test/lifecycle/{step}", lifecycle, methods=["POST"]),
        Route("/_test/crash/{kind}", crash, methods=["POST"]),
        Route("/_test/hold", hold),
        Route("/_test/release", release, methods=["POST"]),
        Route("/_test/block", block),
    ],
    # /_test/block is excluded so that its test sees the loop's lag alone; the
    # health endpoints need no excluding, wherever they are mounted.
    middleware=[Middleware(TorchprobeMiddleware, monitor=monitor, exclude_paths=["/_test/block"])],
)
