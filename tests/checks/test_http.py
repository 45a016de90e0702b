"""The http check against real servers on 127.0.0.1: good, slow, broken and hostile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import (
    Server,
    banner,
    closed_port,
    forward_proxy,
    hangup,
    http_server,
    ipv6_available,
    listening_only,
    make_certificate,
    reply,
    routes,
    tls_context,
    trickle,
)

from torchprobe.base import CheckFailed, Outcome, Status, UsageError
from torchprobe.checks.http import HttpCheck
from torchprobe.engine.spec import Occurrence, parse_occurrence

OPTIONS = {o.key: o for o in HttpCheck.options}


def parse(token: str, environ: dict[str, str] | None = None) -> Occurrence:
    return parse_occurrence(token, OPTIONS, os.environ if environ is None else environ)


def build(token: str, environ: dict[str, str] | None = None) -> HttpCheck:
    occurrence = parse(token, environ)
    check = HttpCheck(**occurrence.values, timeout=occurrence.timeout or HttpCheck.timeout)
    check.deadline = time.monotonic() + check.timeout
    return check


def passes(token: str, environ: dict[str, str] | None = None) -> Outcome:
    outcome = build(token, environ).run()
    assert outcome.status is Status.PASS, outcome
    return outcome


def fails(token: str, environ: dict[str, str] | None = None) -> CheckFailed:
    check = build(token, environ)
    with pytest.raises(CheckFailed) as caught:
        check.run()
    return caught.value


def fails_in_time(token: str, timeout: float) -> CheckFailed:
    start = time.monotonic()
    error = fails(token)
    assert time.monotonic() - start < timeout + 0.5, error.message
    return error


# --- answers ------------------------------------------------------------------------


def test_200_with_body_passes_with_status_and_time() -> None:
    with http_server(reply(200, b"healthy")) as server:
        outcome = passes(f"http:url={server.url}/health")
    assert outcome.message.startswith("HTTP 200 OK in ")
    assert outcome.message.endswith(" ms")
    assert outcome.details["status"] == 200
    assert outcome.details["body_bytes"] == len(b"healthy")
    assert outcome.details["http_version"] == "1.1"
    assert outcome.details["url"] == f"{server.url}/health"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "HTTP 404 Not Found (expected 2xx)"),
        (500, "HTTP 500 Internal Server Error (expected 2xx)"),
    ],
)
def test_error_status_fails_naming_what_was_expected(status: int, message: str) -> None:
    with http_server(reply(status, b"no")) as server:
        error = fails(f"http:url={server.url}/")
    assert error.message == message
    assert error.details["status"] == status


def test_head_reads_no_body_even_with_content_length() -> None:
    with http_server(reply(200, b"x" * 1000)) as server:
        outcome = passes(f"http:url={server.url}/,method=HEAD")
    assert server.requests[0].method == "HEAD"
    assert outcome.details["body_bytes"] == 0


def test_contains_with_head_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="method=GET"):
        build("http:url=http://127.0.0.1/,method=HEAD,contains=ok")


@pytest.mark.parametrize(
    ("answer", "accepted"),
    [(204, "200|204"), (404, "2xx|404"), (301, "2xx|301"), (503, "5xx")],
)
def test_status_list_accepts_codes_and_classes(answer: int, accepted: str) -> None:
    with http_server(reply(answer, b"")) as server:
        passes(f"http:url={server.url}/,status={accepted}")


def test_status_not_in_list_fails() -> None:
    with http_server(reply(200)) as server:
        error = fails(f"http:url={server.url}/,status=201|3xx")
    assert error.message == "HTTP 200 OK (expected 201|3xx)"


@pytest.mark.parametrize("bad", ["600", "2x", "20", "abc", "200|", "99"])
def test_bad_status_option_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="option 'status'"):
        parse(f"http:url=http://127.0.0.1/,status={bad}")


def test_contains_passes_and_fails_on_the_body() -> None:
    with http_server(reply(200, b'{"status":"Healthy"}')) as server:
        passes(f"http:url={server.url}/,contains=Healthy")
        error = fails(f"http:url={server.url}/,contains=ok")
    assert error.message == "HTTP 200 but body does not contain 'ok'"


def test_chunked_body_is_decoded_for_contains() -> None:
    body = b"status: ready-to-serve"  # split across chunks of 5 bytes
    with http_server(reply(200, body, chunked=True)) as server:
        outcome = passes(f"http:url={server.url}/,contains=ready-to-serve")
    assert outcome.details["body_bytes"] == len(body)


def test_body_until_close_without_content_length() -> None:
    with http_server(reply(200, b"the end", length=False)) as server:
        passes(f"http:url={server.url}/,contains=the end")


def test_huge_body_is_read_only_up_to_64_kib_and_quickly() -> None:
    body = b"x" * (10 * 1024 * 1024)
    with http_server(reply(200, body)) as server:
        start = time.monotonic()
        outcome = passes(f"http:url={server.url}/")
        assert time.monotonic() - start < 1
    assert outcome.details["body_bytes"] == 64 * 1024
    assert outcome.details["truncated"] is True
    assert outcome.details["received_bytes"] < 64 * 1024 + 1024


def test_request_carries_host_agent_close_and_given_headers() -> None:
    with http_server() as server:
        headers = "header=X-Probe: yes,header=Accept: text/plain"
        passes(f"http:url={server.url}/v2/health/ready?x=1,{headers}")
    request = server.requests[0]
    assert request.method == "GET"
    assert request.target == "/v2/health/ready?x=1"
    assert request.header("Host") == server.address
    assert (request.header("User-Agent") or "").startswith("torchprobe/")
    assert request.header("Connection") == "close"
    assert request.header("X-Probe") == "yes"
    assert request.header("Accept") == "text/plain"  # a given header replaces the default
    assert [k for k, _ in request.headers].count("Accept") == 1


# --- credentials ----------------------------------------------------------------------


def test_url_credentials_are_sent_but_never_shown() -> None:
    with http_server(reply(500)) as server:
        token = f"http:url=http://probe:s3cret@{server.address}/"
        occurrence = parse(token)
        check = build(token)
        error = fails(token)
    assert "s3cret" not in repr(check.url) + str(check.url)
    assert server.requests[0].header("Authorization") == "Basic cHJvYmU6czNjcmV0"
    assert occurrence.shown["url"] == f"http://***@{server.address}/"
    assert set(occurrence.secrets) >= {"s3cret", "probe:s3cret"}
    shown = error.message + repr(error.details)
    assert "s3cret" not in shown
    assert error.details["url"] == f"http://***@{server.address}/"


def test_header_values_are_secrets() -> None:
    environ = {"TOKEN": "tok-123"}
    with http_server(reply(401)) as server:
        token = f"http:url={server.url}/,header=Authorization: Bearer ${{TOKEN}}"
        occurrence = parse(token, environ)
        error = fails(token, environ)
    assert server.requests[0].header("Authorization") == "Bearer tok-123"
    assert "tok-123" not in error.message + repr(error.details)
    assert "tok-123" in " ".join(occurrence.secrets)
    plain = parse("http:url=http://127.0.0.1/,header=X-Api-Key: k-456")
    assert plain.shown["header"] == ["X-Api-Key: ***"]
    assert plain.secrets == ["k-456"]


def test_invalid_url_message_hides_credentials() -> None:
    with pytest.raises(UsageError) as caught:
        parse("http:url=ftp://user:hunter2@host/")
    assert "hunter2" not in str(caught.value)


# --- failures before the response ------------------------------------------------------


def test_connection_refused() -> None:
    port = closed_port()
    error = fails(f"http:url=http://127.0.0.1:{port}/")
    assert error.message == f"connection refused: 127.0.0.1:{port}"
    assert error.details["phase"] == "connect"


def test_listening_but_never_accepting_times_out_at_the_timeout() -> None:
    with listening_only() as server:
        error = fails_in_time(f"http:url={server.url}/,timeout=1", 1)
    assert error.message == "timed out after 1s: connected, but no response (0 bytes)"


def test_trickling_response_fails_at_the_timeout_not_per_read() -> None:
    with Server(trickle(reply(200, b"x" * 50), interval=0.2)) as server:
        error = fails_in_time(f"http:url={server.url}/,timeout=1", 1)
    assert error.message.startswith("timed out after 1s: response incomplete (")
    assert error.details["received_bytes"] >= 3


def test_non_http_peer_is_named() -> None:
    with Server(banner(b"SSH-2.0-OpenSSH_9.2\r\n")) as server:
        error = fails(f"http:url={server.url}/")
    assert error.message.startswith(f"not an HTTP response from {server.address}: 'SSH-2.0-OpenSSH")


@pytest.mark.parametrize("read_first", [False, True])
def test_peer_closing_without_response(read_first: bool) -> None:
    with Server(hangup(read_first)) as server:
        error = fails(f"http:url={server.url}/")
    assert server.address in error.message
    assert "closed" in error.message or "lost" in error.message


def test_unresolvable_name_fails_within_timeout() -> None:
    error = fails_in_time("http:url=http://no-such-host.invalid/,timeout=1", 1)
    assert error.message.startswith(
        ("name resolution failed: no-such-host.invalid", "timed out after 1s: resolving")
    )


# --- hostile responses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "response headers from"),
        (b"HTTP/1.1 2000 Huge\r\n\r\n", "invalid HTTP status line from"),
        (b"HTTP/1.1 OK\r\n\r\n", "invalid HTTP status line from"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid header line from"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "invalid chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "response incomplete"),
        (b"\x16\x03\x01\x02\x00\x01", "not an HTTP response"),
    ],
)
def test_hostile_response_fails_with_one_line(raw: bytes, message: str) -> None:
    with http_server(raw) as server:
        error = fails(f"http:url={server.url}/,timeout=2")
    assert message in error.message
    assert "\n" not in error.message


def test_interim_100_response_is_skipped() -> None:
    with http_server(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(200, b"done")) as server:
        passes(f"http:url={server.url}/,contains=done")


# --- redirects --------------------------------------------------------------------------


def redirecting() -> Server:
    return http_server(
        routes(
            {
                "/old": reply(302, b"", headers=[("Location", "/new")]),
                "/new": reply(200, b"arrived"),
                "/loop": reply(301, b"", headers=[("Location", "/loop")]),
            }
        )
    )


def test_redirect_is_not_followed_by_default() -> None:
    with redirecting() as server:
        error = fails(f"http:url={server.url}/old")
    assert error.message == (
        f"HTTP 302 redirect to {server.url}/new (not followed; follow-redirects=true follows it)"
    )


def test_redirect_is_followed_when_asked() -> None:
    with redirecting() as server:
        outcome = passes(f"http:url={server.url}/old,follow-redirects=true,contains=arrived")
    assert [r.path for r in server.requests] == ["/old", "/new"]
    assert outcome.details["redirects"] == 1
    assert outcome.details["final_url"] == f"{server.url}/new"


def test_redirect_loop_stops_after_five_hops() -> None:
    with redirecting() as server:
        error = fails(f"http:url={server.url}/loop,follow-redirects=true")
    assert error.message.startswith("too many redirects (more than 5)")
    assert len(server.requests) == 6


def test_redirect_status_can_be_accepted_as_is() -> None:
    with redirecting() as server:
        passes(f"http:url={server.url}/old,status=302")


# --- addresses and proxies -------------------------------------------------------------


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this host")
def test_ipv6_literal_url() -> None:
    with http_server(host="::1") as server:
        passes(f"http:url=http://[::1]:{server.port}/")
    assert server.requests[0].header("Host") == f"[::1]:{server.port}"


def test_proxy_variables_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with http_server() as server:
        passes(f"http:url={server.url}/")


def test_proxy_gets_an_absolute_uri_for_http() -> None:
    with http_server(reply(200, b"via proxy")) as server, forward_proxy() as proxy:
        passes(f"http:url={server.url}/ping,proxy=http://u:pw@{proxy.address},contains=via proxy")
    assert proxy.requests[0].target == f"{server.url}/ping"
    assert proxy.requests[0].header("Proxy-Authorization") == "Basic dTpwdw=="
    assert server.requests[0].target == "/ping"


def test_unreachable_proxy_is_named() -> None:
    port = closed_port()
    error = fails(f"http:url=http://127.0.0.1:1/,proxy=http://127.0.0.1:{port}")
    assert error.message == f"connection refused: proxy 127.0.0.1:{port}"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/",
        "http://",
        "http:///path",
        "http://host:99999/",
        "http://host:port/",
        "http://host/a path",
        "host:8080/health",
        "http://::1/",
        "http://hôst/",
    ],
)
def test_bad_url_is_rejected_by_the_converter(url: str) -> None:
    with pytest.raises(ValueError):
        OPTIONS["url"].parse(url)


def test_proxy_must_be_plain_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        OPTIONS["proxy"].parse("https://proxy:3128")


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    return make_certificate(tmp_path_factory.mktemp("tls"), ["localhost", "IP:127.0.0.1"])


def test_https_untrusted_certificate_fails(certificate: tuple[Path, Path]) -> None:
    with http_server(tls=tls_context(*certificate)) as server:
        error = fails(f"http:url={server.url}/")
    assert error.message.startswith(f"TLS certificate of {server.address} not trusted:")
    assert error.details["phase"] == "tls"


def test_https_insecure_skips_verification(certificate: tuple[Path, Path]) -> None:
    with http_server(tls=tls_context(*certificate)) as server:
        passes(f"http:url={server.url}/,insecure=true,contains=ok")


def test_https_trusted_certificate_passes(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with http_server(tls=tls_context(*certificate)) as server:
        passes(f"http:url=https://localhost:{server.port}/")


def test_https_through_a_proxy_uses_connect(certificate: tuple[Path, Path]) -> None:
    with http_server(tls=tls_context(*certificate)) as server, forward_proxy() as proxy:
        passes(f"http:url={server.url}/x,proxy=http://{proxy.address},insecure=true")
    assert proxy.requests[0].method == "CONNECT"
    assert proxy.requests[0].target == server.address
    assert server.requests[0].target == "/x"


def test_plain_http_server_on_an_https_url_fails_in_tls() -> None:
    with Server(banner(reply(400, b"plain HTTP request sent to HTTPS port"))) as server:
        error = fails(f"http:url=https://{server.address}/")
    assert error.message.startswith(f"TLS handshake with {server.address} failed: ")
    assert error.details["phase"] == "tls"


# --- cost -------------------------------------------------------------------------------


def test_importing_the_check_imports_no_network_modules() -> None:
    code = (
        "import sys, torchprobe.checks.http, torchprobe.checks.tcp;"
        "print(sorted(m for m in ('socket', 'ssl', 'http.client', 'urllib.request')"
        " if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "[]"


def test_a_shorter_run_deadline_is_named_in_the_timeout_message() -> None:
    with listening_only() as server:
        check = build(f"http:url={server.url}/")  # its own timeout is 5 s
        check.deadline = time.monotonic() + 0.5
        with pytest.raises(
            # what was left when the check started: 500ms, or a few ms less on a busy machine
            CheckFailed,
            match=r"^timed out after (500|4\d\d)ms: connected, but no response",
        ):
            check.run()


# --- json= -------------------------------------------------------------------------------

_DOC = b'{"status": "Healthy", "ready": true, "workers": [{"id": 1, "load": 0.5}], "n": null}'


@pytest.mark.parametrize(
    "assertion",
    ["status=Healthy", "ready=true", "ready=TRUE", "workers.0.id=1", "workers.0.load=0.50",
     "workers.-1.id=1", "n=null", 'workers.0={"id": 1, "load": 0.5}'],
)  # fmt: skip
def test_json_values_at_dotted_paths_pass(assertion: str) -> None:
    with http_server(reply(200, _DOC)) as server:
        passes(f"http:url={server.url}/,json={assertion}")


@pytest.mark.parametrize(
    ("assertion", "message"),
    [
        ("status=healthy", "HTTP 200 but JSON status is \"Healthy\" (expected 'healthy')"),
        ("ready=false", "HTTP 200 but JSON ready is true (expected 'false')"),
        ("workers.1.id=1", "HTTP 200 but the JSON has no 'workers.1.id' (expected '1')"),
        ("workers.x=1", "HTTP 200 but the JSON has no 'workers.x' (expected '1')"),
        ("n=0", "HTTP 200 but JSON n is null (expected '0')"),
    ],
)
def test_json_mismatch_says_what_was_found(assertion: str, message: str) -> None:
    with http_server(reply(200, _DOC)) as server:
        assert fails(f"http:url={server.url}/,json={assertion}").message == message


def test_every_json_assertion_must_hold() -> None:
    with http_server(reply(200, _DOC)) as server:
        passes(f"http:url={server.url}/,json=status=Healthy,json=ready=true")
        error = fails(f"http:url={server.url}/,json=status=Healthy,json=ready=false")
    assert "JSON ready is true" in error.message


def test_json_on_a_body_that_is_not_json_or_too_big_fails() -> None:
    with http_server(reply(200, b"<html>ok</html>")) as server:
        error = fails(f"http:url={server.url}/,json=status=ok")
    assert error.message == "HTTP 200 but the body is not JSON: '<html>ok</html>'"
    with http_server(reply(200, b'{"a": "' + b"x" * 70000 + b'"}')) as server:
        error = fails(f"http:url={server.url}/,json=a=x")
    assert error.message == "HTTP 200 but the body exceeds 64 KiB and cannot be read as JSON"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("http:url=http://127.0.0.1/,json=status", "expected PATH=VALUE"),
        ("http:url=http://127.0.0.1/,json=a..b=1", "empty step"),
        ("http:url=http://127.0.0.1/,method=HEAD,json=a=1", "json= needs method=GET"),
    ],
)
def test_bad_json_assertions_are_usage_errors(token: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build(token)


def test_json_through_the_command_takes_the_value_after_the_first_equals() -> None:
    from conftest import run_cli

    with http_server(reply(200, b'{"status": "a=b", "ready": true}')) as server:
        good = run_cli(f"http:url={server.url}/,json=status=a=b,json=ready=true")
        bad = run_cli(f"http:url={server.url}/,json=ready=false")
    assert good.rc == 0, good.stdout
    assert bad.rc == 1 and "JSON ready is true (expected 'false')" in bad.stdout
