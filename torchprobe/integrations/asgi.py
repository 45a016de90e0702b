"""ASGI (Starlette, FastAPI, any ASGI server): ``/health``, ``/ready`` and
``/metrics`` from the monitor, and a middleware that tracks requests and the
event loop's lag.

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from torchprobe.integrations.asgi import TorchprobeMiddleware, routes

    app = Starlette(routes=[*routes(monitor), ...],
                    middleware=[Middleware(TorchprobeMiddleware, monitor=monitor)])

or mount the plain ASGI app anywhere: ``Mount("/probe", app=health_app(monitor))``.
FastAPI takes the same: ``app.router.routes.extend(routes(monitor))`` and
``app.add_middleware(TorchprobeMiddleware, monitor=monitor)``.

In an event loop one blocking handler stops everything, the health endpoints
included, so no request can report it: the monitor's own thread sees the lag
(``monitor.track_loop()``, called here once per loop, from inside it) and
reports it in the status file, and the endpoints report it once the loop runs
again. The endpoints are ``async`` and never await: they read cached state.

:func:`health_app` and :class:`TorchprobeMiddleware` need nothing but an ASGI
server; :func:`routes` imports Starlette.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from torchprobe.integrations.metrics import Answer, Endpoints, check_paths

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry
    from starlette.requests import Request
    from starlette.routing import Route

    from torchprobe.inprocess.monitor import Monitor

__all__ = ["TorchprobeMiddleware", "health_app", "routes"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the middleware leaves its request tracker for the adapter's endpoints.
_TRACKER = "torchprobe.tracker"

# One lag probe per monitor and loop: two would share the monitor's
# expected-tick time and each would hide the other's lag.
_tracked: weakref.WeakKeyDictionary[Monitor, weakref.ref[asyncio.AbstractEventLoop]] = (
    weakref.WeakKeyDictionary()
)


def _track_loop(monitor: Monitor) -> None:
    loop = asyncio.get_running_loop()
    seen = _tracked.get(monitor)
    if seen is None or seen() is not loop:
        _tracked[monitor] = weakref.ref(loop)
        monitor.track_loop(loop)


class _Tracker:
    """One request's ``monitor.guard()``, which the adapter's endpoints end early:
    a probe must never count as in-flight work, wherever it is mounted."""

    __slots__ = ("guard", "active")

    def __init__(self, monitor: Monitor) -> None:
        self.guard = monitor.guard()
        self.guard.__enter__()
        self.active = True

    def end(self, exc: BaseException | None = None, counted: bool = True) -> None:
        if self.active:
            self.active = False
            if not counted:
                self.guard.cancel()
                return
            self.guard.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


def _untrack(scope: Scope, monitor: Monitor) -> None:
    """Called by each endpoint: stop tracking this request, track the loop."""
    tracker = scope.get(_TRACKER)
    if tracker is not None:
        tracker.end(counted=False)  # a probe's request is no completed work
    _track_loop(monitor)


def _route_path(scope: Scope) -> str:
    """The path below where the app is mounted (ASGI's ``path`` includes ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


async def _send(
    send: Send, answer: Answer, head: bool, extra: Iterable[tuple[str, str]] = ()
) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode()),
        (b"cache-control", b"no-store"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def health_app(
    monitor: Monitor,
    *,
    health_path: str | None = "/health",
    ready_path: str | None = "/ready",
    metrics_path: str | None = "/metrics",
    registry: CollectorRegistry | None = None,
    aggregate: bool = False,
) -> ASGIApp:
    """A plain ASGI app serving the three endpoints (a path of None leaves one out).

    Paths are below wherever it is mounted. Answers as in
    :func:`torchprobe.integrations.flask.blueprint`: 200 or 503 with a JSON body;
    ``/metrics`` is ``registry`` (default prometheus_client's ``REGISTRY``) with
    the monitor's gauges, or the gauges alone without prometheus_client.
    Served on its own it also answers the lifespan protocol.
    """
    check_paths(health_path, ready_path, metrics_path)
    endpoints = Endpoints(
        monitor, metrics=metrics_path is not None, registry=registry, aggregate=aggregate
    )
    plain: dict[str | None, Callable[[], Answer]] = {
        health_path: endpoints.health,
        ready_path: endpoints.ready,
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: refuse it
            await send({"type": "websocket.close", "code": 1000})
            return
        _untrack(scope, monitor)
        path, method = _route_path(scope), scope["method"]
        head = method == "HEAD"
        if path not in plain and path != metrics_path:
            await _send(send, Answer(404, b"Not Found\n", "text/plain"), head)
        elif method not in ("GET", "HEAD"):
            not_allowed = Answer(405, b"Method Not Allowed\n", "text/plain")
            await _send(send, not_allowed, head, [("allow", "GET, HEAD")])
        elif path == metrics_path:
            accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
            await _send(send, endpoints.metrics(accept), head)
        else:
            await _send(send, plain[path](), head)

    return app


def routes(
    monitor: Monitor,
    *,
    health_path: str | None = "/health",
    ready_path: str | None = "/ready",
    metrics_path: str | None = "/metrics",
    registry: CollectorRegistry | None = None,
    aggregate: bool = False,
) -> list[Route]:
    """Starlette ``Route`` objects for the three endpoints, for
    ``Starlette(routes=...)``, a ``Router`` or FastAPI's ``app.router.routes``.
    Same answers as :func:`health_app`."""
    from starlette.responses import Response
    from starlette.routing import Route

    check_paths(health_path, ready_path, metrics_path)
    endpoints = Endpoints(
        monitor, metrics=metrics_path is not None, registry=registry, aggregate=aggregate
    )

    def respond(answer: Answer) -> Response:
        return Response(answer.body, answer.status, {"Cache-Control": "no-store"},
                        media_type=answer.content_type)  # fmt: skip

    async def health(request: Request) -> Response:
        _untrack(request.scope, monitor)
        return respond(endpoints.health())

    async def ready(request: Request) -> Response:
        _untrack(request.scope, monitor)
        return respond(endpoints.ready())

    async def metrics(request: Request) -> Response:
        _untrack(request.scope, monitor)
        return respond(endpoints.metrics(request.headers.get("accept")))

    found = [(health_path, health), (ready_path, ready), (metrics_path, metrics)]
    return [Route(path, view, methods=["GET"]) for path, view in found if path is not None]


class TorchprobeMiddleware:
    """Tracks each HTTP request as in-flight work (``monitor.guard()``: its age
    against ``max_busy``, its exceptions to ``record_error``), and starts the
    monitor's event-loop lag probe from inside the running loop.

    The adapter's own endpoints stop their tracking as soon as they run, so a
    probe never counts, whatever path it is mounted at. ``exclude_paths``
    (below any ``root_path``) are never tracked: give it any endpoint that
    streams for longer than ``max_busy`` on purpose. WebSockets are never
    tracked.
    """

    def __init__(
        self,
        app: ASGIApp,
        monitor: Monitor,
        *,
        exclude_paths: Iterable[str] = (),
        track_loop: bool = True,
    ) -> None:
        self.app = app
        self.monitor = monitor
        self.exclude_paths = frozenset(exclude_paths)
        self.track_loop = track_loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The first call is usually the lifespan startup: the loop is tracked
        # before the first request arrives.
        if self.track_loop:
            _track_loop(self.monitor)
        if scope["type"] != "http" or _route_path(scope) in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        tracker = scope[_TRACKER] = _Tracker(self.monitor)
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            tracker.end(exc)
            raise
        tracker.end()
