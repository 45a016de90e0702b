"""The ``grpc`` check: the standard ``grpc.health.v1.Health/Check`` RPC.

What grpc-health-probe does, as a torchprobe check: ``address=``, ``service=``
(the empty name asks about the server as a whole), separate connect and RPC
timeouts, TLS with a CA file, a client certificate (mutual TLS), a server name
override or no verification, and metadata headers.

grpcio is an optional extra (``pip install 'torchprobe[grpc]'``) and only this
check imports it, in its own worker process. The request and the answer are a
string and an enum, so they are encoded here by hand (protobuf wire format)
rather than through generated code: no protobuf runtime is needed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.common.deadline import seconds
from torchprobe.common.scrub import clip
from torchprobe.net.connect import address_option, hostport
from torchprobe.net.url import HeaderOption
from torchprobe.options import boolean, duration, text

__all__ = ["GrpcHealthCheck", "decode_status", "encode_request"]

METHOD = "/grpc.health.v1.Health/Check"
#: HealthCheckResponse.ServingStatus
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
EXTRA = "grpcio is not installed: pip install 'torchprobe[grpc]'"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_request(service: str) -> bytes:
    """``HealthCheckRequest{service}``: field 1, length-delimited."""
    data = service.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_status(data: bytes) -> int:
    """The ``status`` (field 1, varint) of a ``HealthCheckResponse``; 0 when absent."""
    status, i = 0, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, i = _read_varint(data, i)
            if field == 1:
                status = value
        elif kind == 2:
            length, i = _read_varint(data, i)
            i += length
        elif kind == 1:
            i += 8
        elif kind == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {kind}")
        if i > len(data):
            raise ValueError("truncated message")
    return status


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _read_file(option: str, path: str) -> bytes:
    from torchprobe.common.safeio import TLS_FILE_CAP, read_regular

    try:
        return read_regular(path, TLS_FILE_CAP)
    except OSError as exc:
        raise CheckFailed(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None


class GrpcHealthCheck(Check):
    name = "grpc"
    description = (
        "gRPC health: grpc.health.v1.Health/Check answers SERVING (needs torchprobe[grpc])"
    )
    options = (
        Option("address", address_option, required=True, help="HOST:PORT, [::1]:PORT for IPv6"),
        Option("service", text, default="", help="the service to ask about (default: the server)"),
        Option("connect-timeout", duration, default=2.0, help="to establish the connection"),
        Option("rpc-timeout", duration, default=2.0, help="for the health RPC itself"),
        Option("tls", boolean, default=False, help="connect with TLS"),
        Option("ca-file", text, help="TLS: PEM file of the CA(s) to trust"),
        Option("cert-file", text, help="TLS: client certificate (PEM), for mutual TLS"),
        Option("key-file", text, help="TLS: the client certificate's private key (PEM)"),
        Option("server-name", text, help="TLS: the name to verify instead of the host"),
        Option(
            "insecure", boolean, default=False, help="TLS: trust the certificate the server shows"
        ),
        Option("header", HeaderOption(), repeatable=True, help="metadata 'name: value'"),
    )
    timeout = 5.0
    worker = "grpc"

    address: tuple[str, int]
    service: str
    connect_timeout: float
    rpc_timeout: float
    tls: bool
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    server_name: str | None
    insecure: bool
    header: list[tuple[str, str]]

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        tls_only = [o for o in ("ca-file", "cert-file", "key-file", "server-name", "insecure")
                    if getattr(self, o.replace("-", "_"))]  # fmt: skip
        if tls_only and not self.tls:
            raise UsageError(f"check 'grpc': {tls_only[0]}= needs tls=true")
        if bool(self.cert_file) != bool(self.key_file):
            raise UsageError("check 'grpc': cert-file= and key-file= go together")
        if self.insecure and self.ca_file:
            raise UsageError("check 'grpc': insecure=true and ca-file= exclude each other")

    def setup(self) -> None:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
        try:
            import grpc  # noqa: F401
        except ImportError:
            pass  # run() says so

    def run(self) -> Outcome:
        try:
            import grpc
        except ImportError:
            raise CheckFailed(EXTRA) from None
        host, port = self.address
        label = hostport(host, port)
        service = repr(self.service) if self.service else "the server"
        details: dict[str, Any] = {"address": label, "service": self.service, "tls": self.tls}
        start = time.monotonic()
        channel = self._channel(grpc, label)
        try:
            self._connect(grpc, channel, label, details, start)
            connected = time.monotonic()
            details["connect_ms"] = round((connected - start) * 1000, 1)
            status = self._call(grpc, channel, label, service, details, start)
        finally:
            channel.close()
        details["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
        name = STATUSES.get(status, f"unknown status {status}")
        details["status"] = name
        if status != 1:
            raise CheckFailed(f"{service} is {name} (grpc.health.v1 at {label})", **details)
        return passed(f"{service} SERVING at {label} in {details['elapsed_ms']:.0f} ms", **details)

    # -- steps ---------------------------------------------------------------------------

    def _channel(self, grpc: Any, label: str) -> Any:
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 64 * 1024),
            ("grpc.initial_reconnect_backoff_ms", 200),
        ]
        if not self.tls:
            return grpc.insecure_channel(label, options=options)
        root = _read_file("ca-file", self.ca_file) if self.ca_file else None
        name = self.server_name
        if self.insecure:
            root, shown_name = self._presented_certificate()
            name = name or shown_name
        cert = _read_file("cert-file", self.cert_file) if self.cert_file else None
        key = _read_file("key-file", self.key_file) if self.key_file else None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=cert
        )
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        return grpc.secure_channel(label, credentials, options=options)

    def _presented_certificate(self) -> tuple[bytes, str | None]:
        """The server's own certificate, to trust as it is (insecure=true), and a name in it."""
        import socket
        import ssl
        import tempfile

        host, port = self.address
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with context.wrap_socket(
                socket.create_connection((host, port), timeout=self._left(self.connect_timeout)),
                server_hostname=host,
            ) as tls:
                der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise CheckFailed(f"TLS connection to {hostport(host, port)} failed: {why}") from None
        if not der:
            raise CheckFailed(f"{hostport(host, port)} presented no certificate")
        pem = ssl.DER_cert_to_PEM_cert(der)
        name = None
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as fp:
            fp.write(pem)
            fp.flush()
            try:  # the names in the certificate: the one to verify against
                decoded = ssl._ssl._test_decode_cert(fp.name)  # type: ignore[attr-defined]
                names = [v for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
                names += [v for rdn in decoded.get("subject", ()) for k, v in rdn
                          if k == "commonName"]  # fmt: skip
                name = names[0] if names else None
            except (AttributeError, ValueError, ssl.SSLError):
                name = None
        return pem.encode("ascii"), name

    def _left(self, limit: float) -> float:
        return max(0.05, min(limit, self.remaining()))

    def _connect(self, grpc: Any, channel: Any, label: str, details: dict[str, Any],
                 start: float) -> None:  # fmt: skip
        """Wait for READY; a refused or failed handshake ends the wait at once."""
        settled = threading.Event()
        seen: list[Any] = []

        final = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)

        def watch(state: Any) -> None:
            seen.append(state)
            if state in final:
                settled.set()

        channel.subscribe(watch, try_to_connect=True)
        try:
            settled.wait(self._left(self.connect_timeout))
        finally:
            channel.unsubscribe(watch)
        if seen and seen[-1] == grpc.ChannelConnectivity.READY:
            return
        details["phase"] = "connect"
        details["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
        if not settled.is_set():
            raise CheckFailed(
                f"timed out after {seconds(self.connect_timeout)}: connecting to {label}", **details
            )
        # Ask once without waiting for a connection: the error carries the reason.
        try:
            channel.unary_unary(METHOD)(encode_request(self.service), timeout=self._left(1.0))
        except grpc.RpcError as exc:
            raise CheckFailed(
                f"cannot connect to {label}: {_detail(exc)}", code=_code(exc), **details
            ) from None
        raise CheckFailed(f"cannot connect to {label}", **details)

    def _call(self, grpc: Any, channel: Any, label: str, service: str,
              details: dict[str, Any], start: float) -> int:  # fmt: skip
        check = channel.unary_unary(METHOD)
        metadata = [(k.lower(), v) for k, v in self.header]
        try:
            answer = check(
                encode_request(self.service),
                timeout=self._left(self.rpc_timeout),
                metadata=metadata or None,
            )
        except grpc.RpcError as exc:
            code = _code(exc)
            details.update(phase="rpc", code=code)
            details["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
            if code == "DEADLINE_EXCEEDED":
                message = f"timed out after {seconds(self.rpc_timeout)}: the health RPC to {label}"
            elif code == "UNIMPLEMENTED":
                message = f"{label} has no health service (grpc.health.v1.Health: UNIMPLEMENTED)"
            elif code == "NOT_FOUND":
                message = f"{service} is unknown to the health service at {label} (NOT_FOUND)"
            elif code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                message = f"unauthorized: the health RPC to {label} answered {code}"
            else:
                message = f"the health RPC to {label} failed: {code}: {_detail(exc)}"
            raise CheckFailed(message, **details) from None
        try:
            return decode_status(answer)
        except ValueError as exc:
            raise CheckFailed(f"unreadable answer from {label}: {exc}", **details) from None


def _code(exc: Any) -> str:
    try:
        return str(exc.code().name)
    except Exception:
        return "UNKNOWN"


def _detail(exc: Any) -> str:
    try:
        text_ = str(exc.details() or "")
    except Exception:
        text_ = ""
    return clip(text_, 200, squeeze=True) or _code(exc)
