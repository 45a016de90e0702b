"""Flask: ``/health``, ``/ready`` and ``/metrics`` from the monitor, and every
other request tracked as in-flight work.

    from torchprobe.integrations.flask import init_app
    from torchprobe.inprocess.monitor import Monitor

    monitor = Monitor()
    app = Flask(__name__)
    init_app(app, monitor)

The endpoints answer from the monitor's cached state, so they cost
microseconds and never wait for the GPU. Under gunicorn, run the gthread
worker (``--threads 2`` or more): a request stuck in one thread leaves another
free to answer ``/health`` with 503 and the reason, where a sync worker would
be as stuck as the request. A request counts from the first ``before_request``
hook registered after :func:`init_app` until its teardown; the adapter's own
endpoints are never counted, so a probe can never make the process look busy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, g, request

from torchprobe.integrations.metrics import Answer, Endpoints, check_paths

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from torchprobe.inprocess.monitor import Monitor

__all__ = ["blueprint", "guard_requests", "init_app"]

#: Marks the adapter's views, whatever name or prefix the blueprint is registered under.
_UNTRACKED = "_torchprobe_untracked"
_GUARD = "_torchprobe_guard"
_NO_STORE = {"Cache-Control": "no-store"}


def _response(answer: Answer) -> Response:
    return Response(answer.body, answer.status, headers=_NO_STORE, content_type=answer.content_type)


def blueprint(
    monitor: Monitor,
    *,
    health_path: str | None = "/health",
    ready_path: str | None = "/ready",
    metrics_path: str | None = "/metrics",
    registry: CollectorRegistry | None = None,
    aggregate: bool = False,
    name: str = "torchprobe",
) -> Blueprint:
    """A blueprint with the three endpoints (a path of None leaves one out).

    ``/health`` answers 200 while the process is live, ``/ready`` while it is
    live and its model is loaded, 503 otherwise, with a JSON body giving the
    reasons. ``/metrics`` is Prometheus text: ``registry`` (default
    prometheus_client's ``REGISTRY``) with the monitor's gauges registered in it,
    or the gauges alone when prometheus_client is not installed. ``aggregate``:
    see :mod:`torchprobe.integrations.metrics`.
    """
    check_paths(health_path, ready_path, metrics_path)
    endpoints = Endpoints(
        monitor, metrics=metrics_path is not None, registry=registry, aggregate=aggregate
    )
    bp = Blueprint(name, __name__)

    def health() -> Response:
        return _response(endpoints.health())

    def ready() -> Response:
        return _response(endpoints.ready())

    def metrics() -> Response:
        return _response(endpoints.metrics(request.headers.get("Accept")))

    views: list[tuple[str | None, Callable[[], Response]]] = [
        (health_path, health),
        (ready_path, ready),
        (metrics_path, metrics),
    ]
    for path, view in views:
        if path is not None:
            setattr(view, _UNTRACKED, True)
            bp.add_url_rule(path, view.__name__, view, methods=["GET"])
    return bp


def guard_requests(app: Flask, monitor: Monitor) -> None:
    """Run each request of ``app`` (but the adapter's endpoints) inside
    ``monitor.guard()``: the monitor sees how long it has been in flight, and
    an exception Flask did not handle reaches ``monitor.record_error``, so a
    sticky CUDA error raised anywhere in a view marks the process not live.

    Hooks rather than WSGI middleware: by the time a middleware sees the
    outcome, Flask has already turned the exception into a 500 response.
    """

    def enter() -> None:
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(view, _UNTRACKED, False):
            return
        guard = monitor.guard()
        guard.__enter__()
        setattr(g, _GUARD, guard)

    def leave(exc: BaseException | None) -> None:
        guard = g.pop(_GUARD, None)
        if guard is not None:
            guard.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    app.before_request(enter)
    app.teardown_request(leave)


def init_app(
    app: Flask,
    monitor: Monitor,
    *,
    health_path: str | None = "/health",
    ready_path: str | None = "/ready",
    metrics_path: str | None = "/metrics",
    track_requests: bool = True,
    registry: CollectorRegistry | None = None,
    aggregate: bool = False,
) -> Blueprint:
    """Add the endpoints to ``app`` and (``track_requests``) track its requests.

    Returns the registered blueprint; the monitor is also kept in
    ``app.extensions["torchprobe"]``.
    """
    bp = blueprint(
        monitor,
        health_path=health_path,
        ready_path=ready_path,
        metrics_path=metrics_path,
        registry=registry,
        aggregate=aggregate,
    )
    app.register_blueprint(bp)
    if track_requests:
        guard_requests(app, monitor)
    app.extensions["torchprobe"] = monitor
    return bp
