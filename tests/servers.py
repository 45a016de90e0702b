"""Real servers on 127.0.0.1 (or ::1) for tests: no mocked sockets.

Each server runs in background threads of the test process, on an ephemeral
port, so it serves in-process checks and ``torchprobe`` run in a subprocess
alike. A :class:`Server` is a context manager: it starts on entry and, on exit,
closes the listener and every connection and joins its threads::

    with http_server(reply(200, b"ok")) as server:
        subprocess.run(["torchprobe", f"http:url={server.url}/health"])
    assert server.requests[0].header("User-Agent").startswith("torchprobe/")

A handler is a function ``handler(conn, server)`` that owns one accepted
connection; the factories below (:func:`respond`, :func:`trickle`,
:func:`banner`, :func:`hangup`, :func:`silent`) cover the usual behaviours,
good and hostile. Handlers sleep with ``server.wait(seconds)`` so that exit
never waits for them.
"""

from __future__ import annotations

import http
import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

__all__ = [
    "Request",
    "Server",
    "banner",
    "closed_port",
    "forward_proxy",
    "hangup",
    "http_server",
    "ipv6_available",
    "listening_only",
    "make_certificate",
    "read_request",
    "reply",
    "respond",
    "routes",
    "silent",
    "tls_context",
    "trickle",
]

Handler = Callable[[socket.socket, "Server"], None]
Responder = Callable[["Request"], bytes]


@dataclass
class Request:
    """A request as the server received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    raw: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class Server:
    """A listening socket whose accepted connections each get a handler thread.

    ``accept=False`` listens and never accepts: the kernel still completes
    handshakes into the backlog, like a frozen server.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        accept: bool = True,
    ) -> None:
        self.handler = handler
        self.host = host
        self.tls = tls
        self.accept = accept
        self.requests: list[Request] = []
        self.connections = 0
        self.stopping = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64 if accept else 1)
        self.listener.settimeout(0.05)  # the accept loop notices stop() without a wake-up socket
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._acceptor: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early (True) when the server stops."""
        return self.stopping.wait(seconds)

    def __enter__(self) -> Server:
        if self.accept:
            self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
            self._acceptor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        if self._acceptor is not None:
            self._acceptor.join()
        self.listener.close()
        with self._lock:
            for conn in self._open:
                _close(conn)
        for thread in list(self._threads):
            thread.join(timeout=2)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._open.append(conn)
            self.handler(conn, self)
        except (OSError, ValueError):
            pass  # the client went away, or stop() closed the socket: both expected
        finally:
            _close(conn)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def read_request(conn: socket.socket, server: Server) -> Request | None:
    """Read one request head (no body: the checks send none) and record it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    request = Request(method, target, headers, data)
    server.requests.append(request)
    return request


def reply(
    status: int = 200,
    body: bytes = b"ok",
    *,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    chunked: bool = False,
    length: bool = True,
) -> bytes:
    """Raw response bytes. ``chunked`` sends the body in chunks of up to 5 bytes;
    ``length=False`` sends no Content-Length, so the body ends at close."""
    if reason is None:
        reason = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif length:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def routes(table: dict[str, bytes], default: bytes | None = None) -> Responder:
    """A responder by path; ``default`` (404) for any other path."""
    fallback = default if default is not None else reply(404, b"not found")
    return lambda request: table.get(request.path, fallback)


def respond(responder: bytes | Responder) -> Handler:
    """Read a request, send the response, close. A HEAD gets the head only."""

    def handler(conn: socket.socket, server: Server) -> None:
        request = read_request(conn, server)
        if request is None:
            return
        data = responder if isinstance(responder, bytes) else responder(request)
        if request.method == "HEAD":
            data = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        conn.sendall(data)

    return handler


def trickle(data: bytes, interval: float = 0.2) -> Handler:
    """Read a request, then send ``data`` one byte every ``interval`` seconds."""

    def handler(conn: socket.socket, server: Server) -> None:
        if read_request(conn, server) is None:
            return
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            if server.wait(interval):
                return

    return handler


def banner(data: bytes) -> Handler:
    """Send ``data`` at once, as SSH does, and keep the connection until the client leaves."""

    def handler(conn: socket.socket, server: Server) -> None:
        conn.sendall(data)
        _hold(conn, server)

    return handler


def hangup(read_first: bool = False) -> Handler:
    """Close at once (after reading the request if ``read_first``), with no response."""

    def handler(conn: socket.socket, server: Server) -> None:
        if read_first:
            read_request(conn, server)

    return handler


def silent() -> Handler:
    """Read the request and never answer (a deadlocked worker)."""

    def handler(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        _hold(conn, server)

    return handler


def _hold(conn: socket.socket, server: Server) -> None:
    conn.settimeout(0.05)
    while not server.stopping.is_set():
        try:
            if not conn.recv(65536):
                return
        except TimeoutError:
            continue


def http_server(
    responder: bytes | Responder | None = None,
    *,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> Server:
    """An HTTP server answering every request with ``responder`` (200 "ok" by default)."""
    return Server(respond(reply() if responder is None else responder), host=host, tls=tls)


def listening_only(host: str = "127.0.0.1") -> Server:
    """Listens, never accepts: connect succeeds, nothing is ever read or answered."""
    return Server(hangup(), host=host, accept=False)


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def forward_proxy() -> Server:
    """An HTTP proxy: absolute-URI requests for http, CONNECT tunnels for https.

    What it received is in ``server.requests`` (``target`` is the absolute
    URI, or ``host:port`` for CONNECT).
    """

    def handler(conn: socket.socket, server: Server) -> None:
        request = read_request(conn, server)
        if request is None:
            return
        if request.method == "CONNECT":
            host, _, port = request.target.rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(request.target)
            upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
            origin_form = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            first, rest = request.raw.split(b"\r\n", 1)
            line = f"{request.method} {origin_form} HTTP/1.1\r\n".encode("latin-1")
            upstream.sendall(line + rest)
        with upstream:
            _relay(conn, upstream, server)

    return Server(handler)


def _relay(a: socket.socket, b: socket.socket, server: Server) -> None:
    peers = {a: b, b: a}
    while not server.stopping.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.05)
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


def make_certificate(directory: Path, names: Iterable[str] = ("localhost",)) -> tuple[Path, Path]:
    """A self-signed certificate for ``names`` (``IP:`` prefix for addresses): (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(n if n.startswith("IP:") else f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=torchprobe-test", "-addext",
         f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for :class:`Server` (``tls=``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
