"""The ``tcp`` check: a port accepts connections.

A passing TCP check proves little: the kernel completes handshakes into the
listen backlog even while the server process is stopped or deadlocked (the
accept queue is the kernel's, not the process's). It tells a closed port or an
unreachable host from a listening one, nothing more. The connecting itself is
:func:`torchprobe.net.connect.connect`.
"""

from __future__ import annotations

import time
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.net.connect import WireError, address_option, connect, host_option, hostport
from torchprobe.options import integer

__all__ = ["TcpCheck"]


class TcpCheck(Check):
    name = "tcp"
    description = "a TCP port accepts connections (says nothing of the service behind it)"
    options = (
        Option("address", address_option, help="HOST:PORT, [::1]:PORT for IPv6"),
        Option("host", host_option, help="host name or address (with port=)"),
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
        clock = self.clock
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
