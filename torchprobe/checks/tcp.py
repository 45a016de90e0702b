"""The ``tcp`` check, and the connect layer the ``http`` check builds on.

A passing TCP check proves little: the kernel completes handshakes into the
listen backlog even while the server is frozen (see facts.md). It tells a
closed port or an unreachable host from a listening one, nothing more.

Connecting here is bounded by one deadline, resolving included:
``getaddrinfo`` has no timeout of its own, and each address gets only what is
left, not a fresh timeout. ``socket`` is imported inside the functions, as the
command line imports this module to parse options.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.options import integer

if TYPE_CHECKING:
    import socket

__all__ = ["Deadline", "TcpCheck", "WireError", "connect", "hostport", "split_hostport"]

_V6 = re.compile(r"\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]")


class WireError(Exception):
    """A failed phase, with the one line the user sees."""

    def __init__(self, message: str, phase: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase
        self.details = details


def seconds(value: float) -> str:
    """``2`` -> ``2s``, ``0.25`` -> ``250ms``: how a timeout reads in a message."""
    millis = round(value * 1000)
    return f"{millis}ms" if millis < 1000 else f"{round(value, 1):g}s"


class Deadline:
    """What is left of the check's time; ``timeout`` is only for the messages."""

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout

    @classmethod
    def of(cls, check: Check) -> Deadline:
        # Messages name the timeout the user set, unless the run's overall deadline
        # cut it clearly short (the engine's own overhead takes a few ms of it).
        left = check.remaining()
        return cls(check.deadline, check.timeout if left >= 0.9 * check.timeout else left)

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self, what: str, phase: str) -> WireError:
        return WireError(f"timed out after {seconds(self.timeout)}: {what}", phase, timed_out=True)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(text: str) -> tuple[str, str | None]:
    """``host:port`` or ``[v6]:port`` -> (host, port text or None); no brackets kept."""
    v6 = _V6.match(text)
    if v6:
        rest = text[v6.end() :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: unexpected text after ']'")
        return v6.group(1), rest[1:] if rest else None
    host, colon, port = text.partition(":")
    if ":" in port:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:8000")
    return host, port if colon else None


def _resolve(host: str, port: int, clock: Deadline) -> list[tuple[Any, ...]]:
    import socket
    import threading

    try:  # an IP literal needs no lookup and cannot hang
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        pass
    found: list[tuple[Any, ...]] = []
    errors: list[Exception] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting thread
            errors.append(exc)

    # getaddrinfo has no timeout: wait for it only as long as the deadline allows.
    worker = threading.Thread(target=lookup, name="torchprobe-resolve", daemon=True)
    worker.start()
    worker.join(clock.left())
    if worker.is_alive():
        raise clock.expired(f"resolving {host}", "resolve")
    if errors:
        reason = getattr(errors[0], "strerror", None) or str(errors[0]) or type(errors[0]).__name__
        raise WireError(f"name resolution failed: {host}: {reason}", "resolve")
    return found


def connect(host: str, port: int, clock: Deadline, label: str) -> socket.socket:
    """A connected socket, trying each address of ``host`` with the time left."""
    import socket

    tried: list[tuple[str, OSError]] = []
    for family, kind, proto, _, address in _resolve(host, port, clock):
        left = clock.left()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(left)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            tried.append((str(address[0]), exc))
    if not tried or clock.left() <= 0 or isinstance(tried[-1][1], TimeoutError):
        raise clock.expired(f"connecting to {label}", "connect")
    addresses = [ip for ip, _ in tried]
    also = f" (tried {', '.join(addresses)})" if addresses != [host] else ""
    if all(isinstance(exc, ConnectionRefusedError) for _, exc in tried):
        raise WireError(f"connection refused: {label}{also}", "connect")
    other = next(e for _, e in tried if not isinstance(e, ConnectionRefusedError))
    raise WireError(f"cannot connect to {label}: {other.strerror or other}{also}", "connect")


def _host(value: str) -> str:
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError(f"{value!r} is not a host name or address")
    return host


_host.type_name = "host"  # type: ignore[attr-defined]


def _address(value: str) -> tuple[str, int]:
    """``host:port``, or ``[::1]:8000`` for IPv6."""
    host, port = split_hostport(value.strip())
    if port is None:
        raise ValueError(f"{value!r} has no port (HOST:PORT, [::1]:PORT for IPv6)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: invalid port {port!r}")
    return _host(host), int(port)


_address.type_name = "host:port"  # type: ignore[attr-defined]


class TcpCheck(Check):
    name = "tcp"
    description = "a TCP port accepts connections (says nothing of the service behind it)"
    options = (
        Option("address", _address, help="HOST:PORT, [::1]:PORT for IPv6"),
        Option("host", _host, help="host name or address (with port=)"),
        Option("port", integer(1, 65535), help="port number (with host=)"),
    )
    timeout = 3.0
    worker = None

    address: tuple[str, int] | None
    host: str | None
    port: int | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        by_parts = self.host is not None and self.port is not None
        partial = self.host is not None or self.port is not None
        if (self.address is None) != by_parts or (self.address is not None and partial):
            raise UsageError("check 'tcp': give address= or host= and port=")

    def run(self) -> Outcome:
        host, port = self.address or (str(self.host), int(self.port or 0))
        label = hostport(host, port)
        start = time.monotonic()
        clock = Deadline.of(self)
        try:
            sock = connect(host, port, clock, label)
        except WireError as exc:
            elapsed = round((time.monotonic() - start) * 1000, 1)
            details = {"address": label, "phase": exc.phase, **exc.details}
            raise CheckFailed(exc.message, **details, elapsed_ms=elapsed) from None
        with sock:
            peer = str(sock.getpeername()[0])
        elapsed = round((time.monotonic() - start) * 1000, 1)
        return passed(
            f"connected to {label} in {elapsed:.0f} ms",
            address=label,
            peer=peer,
            elapsed_ms=elapsed,
        )
