"""The local HTTP server the ``http`` targets call: every path answers 200 "ok",
after ``delay`` seconds, in a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    # The concurrency target opens 100 connections at once; the default
    # backlog of 5 would make the kernel drop SYNs and the client retry after 1 s.
    request_queue_size = 256
    daemon_threads = True
    delay = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        if self.server.delay:
            time.sleep(self.server.delay)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request on stderr would be timed too


@contextmanager
def http_server(delay: float = 0.0) -> Iterator[tuple[str, int]]:
    """Serve on 127.0.0.1, an ephemeral port; yields ``(base_url, port)``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.delay = delay
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bench-http", daemon=True
    )
    thread.start()
    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
