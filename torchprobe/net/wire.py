"""A minimal HTTP/1.1 client for the ``http`` check, under one deadline.

``http.client`` applies its timeout to each socket operation, so a server
that trickles one byte at a time never times out (one byte every 0.9 s with
``timeout=1`` keeps it reading for as long as the server likes). Here every
blocking step gets only what is left of a single deadline: connecting (see
:mod:`torchprobe.net.connect`), TLS, sending, and the whole response, of which
at most 64 KiB of body is read. ``ssl`` is imported only for https.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torchprobe.common.deadline import Deadline
from torchprobe.common.scrub import clean, clip
from torchprobe.net.connect import WireError, connect, hostport, timed_out

if TYPE_CHECKING:
    import socket

__all__ = ["BODY_LIMIT", "Response", "fetch"]

BODY_LIMIT = 64 * 1024
HEAD_LIMIT = 64 * 1024
_STATUS_LINE = re.compile(r"HTTP/(\d(?:\.\d)?) ([1-5]\d\d)(?: (.*))?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def preview(data: bytes | bytearray, limit: int = 24) -> str:
    """A short, quoted, printable view of untrusted bytes (secrets masked
    before the cut, so a cut never leaves part of one)."""
    text = clean(bytes(data).decode("latin-1"))
    shown = repr(text[:limit])
    return shown[:-1] + "…" + shown[-1] if len(text) > limit else shown


def start_tls(
    sock: socket.socket, host: str, insecure: bool, clock: Deadline, label: str
) -> socket.socket:
    import ssl

    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    tls.settimeout(clock.left())
    try:
        tls.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise WireError(
            f"TLS certificate of {label} not trusted: {exc.verify_message} "
            "(insecure=true skips verification)",
            "tls",
        ) from None
    except TimeoutError:
        raise timed_out(clock, f"TLS handshake with {label}", "tls") from None
    except ssl.SSLError as exc:
        raise WireError(f"TLS handshake with {label} failed: {exc.reason or exc}", "tls") from None
    except OSError as exc:
        raise WireError(
            f"TLS handshake with {label} failed: {exc.strerror or exc}", "tls"
        ) from None
    return tls


class Response:
    __slots__ = ("version", "status", "reason", "headers", "body", "truncated", "received")

    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]]):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""
        self.truncated = False
        self.received = 0

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


class _Reader:
    """Receives a response, each ``recv`` bounded by what is left of the deadline."""

    def __init__(
        self, sock: socket.socket, clock: Deadline, label: str, limit: int = BODY_LIMIT
    ) -> None:
        self.limit = limit
        self.sock = sock
        self.clock = clock
        self.label = label
        self.buffer = bytearray()
        self.received = 0
        self.eof = False

    def fill(self, size: int = 65536) -> bool:
        """Receive more bytes; False at end of stream."""
        if self.eof:
            return False
        left = self.clock.left()
        if left <= 0:
            raise self._timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(max(1, size))
        except TimeoutError:
            raise self._timeout() from None
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            raise WireError(
                f"connection to {self.label} lost after {self.received} bytes: {why}", "receive"
            ) from None
        if not data:
            self.eof = True
            return False
        self.buffer += data
        self.received += len(data)
        return True

    def need(self, size: int = 65536) -> None:
        if not self.fill(size):
            raise self.error(
                f"connection closed by {self.label}: response incomplete "
                f"({self.received} bytes received)"
            )

    def error(self, message: str) -> WireError:
        return WireError(message, "receive", received_bytes=self.received)

    def _timeout(self) -> WireError:
        if not self.received:
            return timed_out(self.clock, "connected, but no response (0 bytes)", "receive")
        error = timed_out(
            self.clock, f"response incomplete ({self.received} bytes received)", "receive"
        )
        error.details["received_bytes"] = self.received
        return error

    def read_head(self) -> Response:
        while True:
            start = bytes(self.buffer[:5])
            if not (start.startswith(b"HTTP/") or b"HTTP/".startswith(start)):
                raise self.error(f"not an HTTP response from {self.label}: {preview(self.buffer)}")
            ends = [i + len(m) for m in (b"\r\n\r\n", b"\n\n") if (i := self.buffer.find(m)) >= 0]
            if ends:
                break
            if len(self.buffer) > HEAD_LIMIT:
                raise self.error(f"response headers from {self.label} exceed 64 KiB")
            if not self.fill():
                if not self.received:
                    raise self.error(f"connection closed by {self.label} without a response")
                self.need()
        end = min(ends)
        lines = re.split(rb"\r?\n", bytes(self.buffer[:end]))
        del self.buffer[:end]
        status = _STATUS_LINE.fullmatch(lines[0].decode("latin-1"))
        if status is None:
            raise self.error(f"invalid HTTP status line from {self.label}: {preview(lines[0])}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and headers:  # an obsolete folded continuation
                name, value = headers.pop()
                headers.append((name, f"{value} {line.strip().decode('latin-1')}"))
                continue
            name_, colon, value_ = line.partition(b":")
            if line and (not colon or not _TOKEN.fullmatch(name_)):
                raise self.error(f"invalid header line from {self.label}: {preview(line)}")
            if line:
                headers.append((name_.decode("ascii"), value_.strip().decode("latin-1")))
        reason = clip("".join(c for c in status.group(3) or "" if c.isprintable()).strip(), 80)
        return Response(status.group(1), int(status.group(2)), reason, headers)

    def read_body(self, response: Response, method: str) -> tuple[bytes, bool]:
        """The body (at most ``limit`` bytes) and whether there was more."""
        if method == "HEAD" or response.status < 200 or response.status in (204, 304):
            return b"", False
        coding = response.header("transfer-encoding")
        if coding is not None and coding.split(",")[-1].strip().lower() == "chunked":
            return self._chunked()
        length = response.header("content-length")
        if coding is None and length is not None:
            sizes = {v.strip() for v in length.split(",")}
            if len(sizes) != 1 or not next(iter(sizes)).isdigit():
                raise self.error(
                    f"invalid Content-Length from {self.label}: {preview(length.encode())}"
                )
            size = int(sizes.pop())
            want = min(size, self.limit)
            while len(self.buffer) < want:
                self.need(want - len(self.buffer))
            return bytes(self.buffer[:want]), size > want
        while len(self.buffer) < self.limit and self.fill(self.limit - len(self.buffer)):
            pass
        return bytes(self.buffer[: self.limit]), not self.eof

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > 4096:
                raise self.error(f"invalid chunked encoding from {self.label}: line too long")
            self.need()
        line = bytes(self.buffer[:end]).rstrip(b"\r")
        del self.buffer[: end + 1]
        return line

    def _chunked(self) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            line = self._line()
            size_text = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise self.error(
                    f"invalid chunked encoding from {self.label}: bad chunk size {preview(line)}"
                )
            size = int(size_text, 16)
            if size == 0:
                trailers = 0
                while self._line():  # trailers, up to the empty line that ends the message
                    trailers += 1
                    if trailers > 100:
                        raise self.error(f"invalid chunked encoding from {self.label}: trailers")
                return bytes(body), False
            take = min(size, self.limit - len(body))
            while len(self.buffer) < take:
                self.need(take - len(self.buffer) + 2)  # the data and its CRLF
            body += self.buffer[:take]
            if len(body) >= self.limit:
                return bytes(body), True
            del self.buffer[:take]
            if self._line():
                raise self.error(f"invalid chunked encoding from {self.label}: chunk overruns size")


def _request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("utf-8")


def _send(sock: socket.socket, data: bytes, clock: Deadline, label: str) -> None:
    sock.settimeout(clock.left())
    try:
        sock.sendall(data)
    except TimeoutError:
        raise timed_out(clock, f"sending the request to {label}", "send") from None
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise WireError(
            f"connection to {label} lost while sending the request: {why}", "send"
        ) from None


def fetch(
    *,
    scheme: str,
    host: str,
    port: int,
    target: str,
    method: str,
    headers: list[tuple[str, str]],
    proxy: tuple[str, int, list[tuple[str, str]]] | None,
    insecure: bool,
    clock: Deadline,
    body: bytes = b"",
    limit: int = BODY_LIMIT,
) -> Response:
    """One request on a fresh connection; ``proxy`` is (host, port, proxy headers).

    A ``body`` goes after the headers, which must then carry its Content-Length.
    At most ``limit`` bytes of the answer's body are read.
    """
    label = hostport(host, port)
    if proxy is None:
        sock = connect(host, port, clock, label)
    else:
        sock = connect(proxy[0], proxy[1], clock, f"proxy {hostport(proxy[0], proxy[1])}")
    try:
        if proxy is not None and scheme == "https":
            _tunnel(sock, label, proxy, clock)
        elif proxy is not None:  # a plain proxy takes the absolute URI
            target = f"http://{label}{target}"
            headers = [*headers, *proxy[2]]
        if scheme == "https":
            sock = start_tls(sock, host, insecure, clock, label)
        _send(sock, _request(method, target, headers) + body, clock, label)
        reader = _Reader(sock, clock, label, limit)
        response = reader.read_head()
        while 100 <= response.status < 200 and response.status != 101:
            response = reader.read_head()  # an interim response: the real one follows
        response.body, response.truncated = reader.read_body(response, method)
        response.received = reader.received
        return response
    finally:
        sock.close()


def _tunnel(
    sock: socket.socket, label: str, proxy: tuple[str, int, list[tuple[str, str]]], clock: Deadline
) -> None:
    name = f"proxy {hostport(proxy[0], proxy[1])}"
    _send(sock, _request("CONNECT", label, [("Host", label), *proxy[2]]), clock, name)
    reader = _Reader(sock, clock, name)
    answer = reader.read_head()
    if not 200 <= answer.status < 300:
        raise WireError(
            f"{name} refused the tunnel to {label}: HTTP {answer.status} {answer.reason}".rstrip(),
            "proxy",
        )
    if reader.buffer:
        raise WireError(f"{name} sent data before the TLS handshake to {label}", "proxy")
