"""The sidecar's HTTP server: one thread, one selector, every answer from memory.

A probe's request must be answered whatever other clients do, so nothing a
client does can hold a thread or grow memory without bound:

- one thread serves every connection through a selector; no request ever
  waits for a check (the answers are rendered from the last verdicts);
- a connection has :data:`CONNECTION_TIME` from its accept to send its
  request and read the answer, whatever pace it sends at (slowloris), then
  it is closed;
- a request's line and headers together are at most :data:`HEAD_LIMIT`
  bytes; a larger one gets 431 and is closed; a body is never read;
- at most :data:`MAX_CONNECTIONS` connections are open at once: one more
  closes the oldest at once, so memory stays bounded (each holds at most
  ``HEAD_LIMIT`` in and one answer out) and a flood cannot shut a probe out;
- one request per connection (``Connection: close``); what a client sends
  after it is read and dropped until it closes or its time is up.

A request to ``/live`` therefore waits for nothing but this thread's turn
through the ready connections, each turn bounded by ``HEAD_LIMIT`` bytes read
and one non-blocking send (docs/serve.md gives the figures measured).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable

from torchprobe.common.scrub import clean

__all__ = ["CONNECTION_TIME", "HEAD_LIMIT", "MAX_CONNECTIONS", "Answer", "Server", "bind"]

#: Seconds a connection may take from accept to its answer sent.
CONNECTION_TIME = 2.0
#: Bytes of request line and headers together.
HEAD_LIMIT = 8192
#: Connections open at once; below the usual limit of 1024 descriptors.
MAX_CONNECTIONS = 512

#: An answer: status code, content type, body.
Answer = tuple[int, str, bytes]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (raises OSError: the address is taken, not local, ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Connection:
    __slots__ = ("sock", "until", "inbox", "outbox", "answered")

    def __init__(self, sock: socket.socket, until: float) -> None:
        self.sock = sock
        self.until = until
        self.inbox = b""
        self.outbox = b""
        self.answered = False


class Server:
    """Serves ``route(method, path) -> Answer`` on ``listener`` until :meth:`shutdown`."""

    def __init__(self, listener: socket.socket, route: Callable[[str, str], Answer]) -> None:
        self.listener = listener
        self.route = route
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, _Connection] = {}
        self.stopping = threading.Event()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.done = threading.Event()

    def serve_forever(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, "listen")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                soonest = min((c.until for c in self.connections.values()), default=now + 1.0)
                for key, events in self.selector.select(max(0.0, min(1.0, soonest - now))):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        continue
                    else:
                        conn = self.connections.get(key.fd)
                        if conn is None:
                            continue
                        if events & selectors.EVENT_READ:
                            self._read(conn)
                        if events & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                            self._write(conn)
                now = time.monotonic()
                for conn in [c for c in self.connections.values() if now >= c.until]:
                    self._close(conn)
        finally:
            for conn in list(self.connections.values()):
                self._close(conn)
            self.selector.close()
            self.listener.close()
            self.done.set()

    def shutdown(self) -> None:
        """Stop serving (from any thread); returns once the loop has ended."""
        self.stopping.set()
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass
        self.done.wait(2.0)

    def _accept(self) -> None:
        # A burst is taken whole, bounded by the listen backlog.
        for _ in range(128):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: the open ones time out and free some
                raise
            if len(self.connections) >= MAX_CONNECTIONS:
                # The oldest goes, not the newest: a flood of idle connections
                # then never shuts a probe's fresh request out, it only cuts
                # the flood's own connections short.
                self._close(next(iter(self.connections.values())))
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + CONNECTION_TIME)
            self.connections[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(HEAD_LIMIT + 1 - len(conn.inbox))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        if conn.answered:
            return  # a body or a second request: read and dropped until the client closes
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbox.find(b"\n\n")
        if end < 0:
            if len(conn.inbox) > HEAD_LIMIT:
                self._answer(conn, (431, "text/plain; charset=utf-8",
                                    b"request line and headers over 8 KiB\n"))  # fmt: skip
            return
        line = conn.inbox.split(b"\n", 1)[0].strip().decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._answer(conn, (400, "text/plain; charset=utf-8", b"bad request line\n"))
            return
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            answer: Answer = (405, "text/plain; charset=utf-8", b"GET or HEAD only\n")
        else:
            try:
                answer = self.route(method, path)
            except Exception as exc:  # noqa: BLE001 - one bad answer, never the server
                what = clean(f"internal error: {exc!r}\n")
                answer = (500, "text/plain; charset=utf-8", what.encode())
        self._answer(conn, answer, head_only=method == "HEAD")

    def _answer(self, conn: _Connection, answer: Answer, head_only: bool = False) -> None:
        status, kind, body = answer
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
        conn.outbox = head + (b"" if head_only else body)
        conn.inbox = b""
        conn.answered = True
        self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        if not conn.outbox:
            return  # sent already: the connection waits for the client to close
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if not conn.outbox:
            # Closed by the client, or at its time limit: closing with unread
            # bytes in the socket (a request over HEAD_LIMIT) would send a
            # reset that can destroy the answer before the client reads it.
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn)
                return
            self.selector.modify(conn.sock, selectors.EVENT_READ, "conn")

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self.connections.pop(fd, None)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
