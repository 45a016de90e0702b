"""Connecting under a deadline: name resolution, then each address in turn.

Connecting is bounded by one deadline, resolving included: ``getaddrinfo``
has no timeout of its own, and each address gets only what is left, not a
fresh timeout. ``socket`` is imported inside the functions, as the command
line imports this module (through the checks' options) to parse options.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from torchprobe.common.deadline import Deadline

if TYPE_CHECKING:
    import socket

__all__ = [
    "WireError", "address_option", "connect", "host_option", "hostport", "split_hostport",
    "timed_out",
]  # fmt: skip

_V6 = re.compile(r"\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]")


class WireError(Exception):
    """A failed phase, with the one line the user sees."""

    def __init__(self, message: str, phase: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase
        self.details = details


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


def timed_out(clock: Deadline, what: str, phase: str) -> WireError:
    """A step that ran out of the check's time: "timed out after 2s: <what>"."""
    return WireError(clock.expired(what), phase, timed_out=True)


def _name(host: str) -> bytes | str:
    """``host`` as ``getaddrinfo`` is to get it.

    Given a str, ``getaddrinfo`` encodes it with the IDNA codec, whose first use
    imports encodings.idna, stringprep and unicodedata: about 1.4 ms of every
    run (``python -X importtime``), a numeric host included. For an ASCII name
    the codec returns the name's own bytes unless a label is empty or 64
    characters or longer (its ASCII fast path, ``encodings/idna.py``), so those
    bytes go as they are. Any other name goes as the str: encoded, or refused
    in the codec's words, as it always was.
    """
    if host.isascii():
        *labels, last = host.split(".")
        if all(0 < len(label) < 64 for label in labels) and len(last) < 64:
            return host.encode("ascii")
    return host


def _resolve(host: str, port: int, clock: Deadline) -> list[tuple[Any, ...]]:
    import socket
    import threading

    name = _name(host)
    try:  # an IP literal needs no lookup and cannot hang
        return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        pass
    found: list[tuple[Any, ...]] = []
    errors: list[Exception] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting thread
            errors.append(exc)

    # getaddrinfo has no timeout: wait for it only as long as the deadline allows.
    worker = threading.Thread(target=lookup, name="torchprobe-resolve", daemon=True)
    worker.start()
    worker.join(clock.left())
    if worker.is_alive():
        raise timed_out(clock, f"resolving {host}", "resolve")
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
        raise timed_out(clock, f"connecting to {label}", "connect")
    addresses = [ip for ip, _ in tried]
    also = f" (tried {', '.join(addresses)})" if addresses != [host] else ""
    if all(isinstance(exc, ConnectionRefusedError) for _, exc in tried):
        raise WireError(f"connection refused: {label}{also}", "connect")
    other = next(e for _, e in tried if not isinstance(e, ConnectionRefusedError))
    raise WireError(f"cannot connect to {label}: {other.strerror or other}{also}", "connect")


def host_option(value: str) -> str:
    """A host name or address, as an option's value."""
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError(f"{value!r} is not a host name or address")
    return host


host_option.type_name = "host"  # type: ignore[attr-defined]


def address_option(value: str) -> tuple[str, int]:
    """``host:port``, or ``[::1]:8000`` for IPv6."""
    host, port = split_hostport(value.strip())
    if port is None:
        raise ValueError(f"{value!r} has no port (HOST:PORT, [::1]:PORT for IPv6)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: invalid port {port!r}")
    return host_option(host), int(port)


address_option.type_name = "host:port"  # type: ignore[attr-defined]
