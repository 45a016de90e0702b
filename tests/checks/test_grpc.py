"""The grpc check against real grpcio servers with the standard health service.

Servers run in threads of the test process (grpcio's own server, the health
servicer from grpcio-health-checking); the check runs through the installed
``torchprobe`` command, in its worker, as a user runs it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, require, run_cli
from servers import closed_port

from torchprobe.base import UsageError
from torchprobe.checks.grpc_health import GrpcHealthCheck, decode_status, encode_request

try:
    import grpc as _grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
except ImportError:  # pragma: no cover - CI installs them with the test extra
    _grpc = None


@pytest.fixture(scope="module", autouse=True)
def _grpcio() -> None:
    require(_grpc is not None, "grpcio and grpcio-health-checking are not installed")


class HealthServer:
    """A grpcio server on 127.0.0.1 with the standard health servicer."""

    def __init__(
        self,
        *,
        health_service: bool = True,
        credentials: Any = None,
        interceptors: tuple[Any, ...] = (),
        handlers: tuple[Any, ...] = (),
    ) -> None:
        assert _grpc is not None
        self.server = _grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors
        )
        self.health = health.HealthServicer()
        if health_service:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for handler in handlers:
            self.server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.address = f"127.0.0.1:{self.port}"

    def set(self, service: str, status: str) -> None:
        self.health.set(service, getattr(health_pb2.HealthCheckResponse, status))

    def __enter__(self) -> HealthServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)


@pytest.fixture(scope="module")
def served() -> Iterator[HealthServer]:
    with HealthServer() as server:
        server.set("", "SERVING")
        server.set("inference.Model", "SERVING")
        yield server


# --- the wire format, against the generated code ---------------------------------------


@pytest.mark.parametrize("service", ["", "a", "inference.Model", "é" * 100])
def test_request_encoding_matches_protobuf(service: str) -> None:
    expected = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert encode_request(service) == expected


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_status_decoding_matches_protobuf(status: int) -> None:
    data = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert decode_status(data) == status


def test_unknown_fields_are_skipped_and_truncation_is_an_error() -> None:
    assert decode_status(b"\x12\x03abc\x08\x01\x1d\x00\x00\x00\x00") == 1
    with pytest.raises(ValueError):
        decode_status(b"\x08")


# --- statuses -----------------------------------------------------------------------------


def test_serving_server_passes(served: HealthServer) -> None:
    run = run_cli(f"grpc:address={served.address}", "-v")
    assert run.rc == 0, run.stdout + run.stderr
    assert f"the server SERVING at {served.address}" in run.stdout


def test_a_named_service_and_its_states(served: HealthServer) -> None:
    token = f"grpc:address={served.address},service=inference.Model"
    assert run_cli(token).rc == 0
    served.set("inference.Model", "NOT_SERVING")
    try:
        run = run_cli(token)
    finally:
        served.set("inference.Model", "SERVING")
    assert run.rc == 1
    assert f"'inference.Model' is NOT_SERVING (grpc.health.v1 at {served.address})" in run.stdout


def test_service_unknown_status_fails(served: HealthServer) -> None:
    served.set("retired.Model", "SERVICE_UNKNOWN")
    run = run_cli(f"grpc:address={served.address},service=retired.Model")
    assert run.rc == 1
    assert "'retired.Model' is SERVICE_UNKNOWN" in run.stdout


def test_an_unknown_service_is_not_found(served: HealthServer) -> None:
    run = run_cli(f"grpc:address={served.address},service=no.Such")
    assert run.rc == 1
    assert "'no.Such' is unknown to the health service" in run.stdout
    assert "(NOT_FOUND)" in run.stdout


def test_a_server_without_the_health_service_is_unimplemented() -> None:
    with HealthServer(health_service=False) as server:
        run = run_cli(f"grpc:address={server.address}")
    assert run.rc == 1
    assert "has no health service (grpc.health.v1.Health: UNIMPLEMENTED)" in run.stdout


# --- no server, silent servers, hung RPCs -------------------------------------------------


def test_no_server_fails_fast_saying_it_cannot_connect() -> None:
    port = closed_port()
    run = run_cli(f"grpc:address=127.0.0.1:{port},connect-timeout=3s")
    assert run.rc == 1
    assert f"cannot connect to 127.0.0.1:{port}" in run.stdout
    assert run.elapsed < 3, run.elapsed


def test_a_listener_that_never_speaks_fails_at_the_connect_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        run = run_cli(f"grpc:address=127.0.0.1:{port},connect-timeout=1s")
    assert run.rc == 1
    assert f"timed out after 1s: connecting to 127.0.0.1:{port}" in run.stdout
    assert run.elapsed < 4, run.elapsed


def test_a_health_rpc_that_never_answers_fails_at_the_rpc_timeout() -> None:
    assert _grpc is not None

    def hang(request: bytes, context: Any) -> bytes:
        time.sleep(30)
        return b""

    handler = _grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": _grpc.unary_unary_rpc_method_handler(hang)}
    )
    with HealthServer(health_service=False, handlers=(handler,)) as server:
        run = run_cli(f"grpc:address={server.address},rpc-timeout=1s")
    assert run.rc == 1
    assert f"timed out after 1s: the health RPC to {server.address}" in run.stdout
    assert run.elapsed < 4, run.elapsed


def test_the_check_timeout_bounds_everything() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        run = run_cli(f"grpc:address=127.0.0.1:{port},connect-timeout=30s,timeout=1")
    assert run.rc == 1
    assert run.elapsed < 4, run.elapsed


# --- metadata -------------------------------------------------------------------------------


class _RequireToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        assert _grpc is not None
        if (("authorization", f"Bearer {self.token}")) in tuple(details.invocation_metadata):
            return continuation(details)

        def deny(request: bytes, context: Any) -> None:
            context.abort(_grpc.StatusCode.UNAUTHENTICATED, "bad token")

        return _grpc.unary_unary_rpc_method_handler(deny)


def test_metadata_headers_are_sent_and_never_shown() -> None:
    secret = "s3cret-grpc-token"
    with HealthServer(interceptors=(_RequireToken(secret),)) as server:
        server.set("", "SERVING")
        missing = run_cli(f"grpc:address={server.address}")
        good = run_cli(f"grpc:address={server.address},header=Authorization: Bearer {secret}", "-v")
        dry = run_cli(
            f"grpc:address={server.address},header=Authorization: Bearer {secret}", "--dry-run"
        )
    assert missing.rc == 1
    assert "unauthorized: the health RPC" in missing.stdout and "UNAUTHENTICATED" in missing.stdout
    assert good.rc == 0, good.stdout
    for run in (good, dry):
        assert secret not in run.stdout + run.stderr


# --- TLS --------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA, a server certificate it signed for model.internal, a client one."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=torchprobe test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    for name, san in (("server", "DNS:model.internal"), ("client", "DNS:probe")):
        _openssl("req", *ec, "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    # A self-signed server certificate, for insecure=true.
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=self",
             "-addext", "subjectAltName=DNS:self.internal",
             "-keyout", str(d / "self.key"), "-out", str(d / "self.pem"))  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def _server_credentials(pki: dict[str, Path], name: str = "server", mutual: bool = False) -> Any:
    assert _grpc is not None
    pair = (pki[f"{name}_key"].read_bytes(), pki[f"{name}_pem"].read_bytes())
    return _grpc.ssl_server_credentials(
        [pair],
        root_certificates=pki["ca_pem"].read_bytes() if mutual else None,
        require_client_auth=mutual,
    )


def test_tls_with_a_private_ca_and_a_server_name(pki: dict[str, Path]) -> None:
    with HealthServer(credentials=_server_credentials(pki)) as server:
        server.set("", "SERVING")
        base = f"grpc:address={server.address},tls=true"
        good = run_cli(f"{base},ca-file={pki['ca_pem']},server-name=model.internal")
        untrusted = run_cli(f"{base},server-name=model.internal,connect-timeout=2s")
        wrong_name = run_cli(f"{base},ca-file={pki['ca_pem']},connect-timeout=2s")
        plaintext = run_cli(f"grpc:address={server.address},connect-timeout=2s")
    assert good.rc == 0, good.stdout
    for run in (untrusted, wrong_name, plaintext):
        assert run.rc == 1, run.stdout
        assert f"{server.address}" in run.stdout
        assert run.elapsed < 5


def test_insecure_trusts_a_self_signed_certificate(pki: dict[str, Path]) -> None:
    with HealthServer(credentials=_server_credentials(pki, "self")) as server:
        server.set("", "SERVING")
        run = run_cli(f"grpc:address={server.address},tls=true,insecure=true")
        verified = run_cli(f"grpc:address={server.address},tls=true,connect-timeout=2s")
    assert run.rc == 0, run.stdout
    assert verified.rc == 1


def test_mutual_tls_needs_the_client_certificate(pki: dict[str, Path]) -> None:
    with HealthServer(credentials=_server_credentials(pki, mutual=True)) as server:
        server.set("", "SERVING")
        base = (f"grpc:address={server.address},tls=true,ca-file={pki['ca_pem']},"
                "server-name=model.internal,connect-timeout=2s")  # fmt: skip
        without = run_cli(base)
        with_cert = run_cli(f"{base},cert-file={pki['client_pem']},key-file={pki['client_key']}")
    assert without.rc == 1
    assert with_cert.rc == 0, with_cert.stdout


def test_an_unreadable_ca_file_fails_saying_so(tmp_path: Path) -> None:
    run = run_cli(f"grpc:address=127.0.0.1:1,tls=true,ca-file={tmp_path}/none.pem")
    assert run.rc == 1
    assert f"ca-file {tmp_path}/none.pem: cannot read it" in run.stdout


# --- options and the optional extra ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ca_file": "/x"}, "ca-file= needs tls=true"),
        ({"tls": True, "cert_file": "/x"}, "cert-file= and key-file= go together"),
        ({"tls": True, "insecure": True, "ca_file": "/x"}, "exclude each other"),
    ],
)
def test_contradictory_options_are_usage_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GrpcHealthCheck(address=("127.0.0.1", 1), **values)


@pytest.mark.parametrize("token", ["grpc", "grpc:address=nohost", "grpc:address=h:1,rpc-timeout=0"])
def test_bad_grpc_input_is_one_line_exit_1(token: str) -> None:
    run = run_cli(token)
    assert run.rc == 1
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_without_grpcio_the_check_names_the_extra(tmp_path: Path, served: HealthServer) -> None:
    shadow = tmp_path / "grpc"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named grpc')\n")
    run = run_cli(f"grpc:address={served.address}", env=clean_env(PYTHONPATH=str(tmp_path)))
    assert run.rc == 1
    assert "grpcio is not installed: pip install 'torchprobe[grpc]'" in run.stdout
