"""The tcp check against real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import clean_env
from servers import closed_port, http_server, ipv6_available, listening_only

from torchprobe.base import CheckFailed, Outcome, Status, UsageError
from torchprobe.checks.tcp import TcpCheck
from torchprobe.engine.spec import parse_occurrence

OPTIONS = {o.key: o for o in TcpCheck.options}


def build(token: str) -> TcpCheck:
    occurrence = parse_occurrence(token, OPTIONS, os.environ)
    check = TcpCheck(**occurrence.values, timeout=occurrence.timeout or TcpCheck.timeout)
    check.deadline = time.monotonic() + check.timeout
    return check


def passes(token: str) -> Outcome:
    outcome = build(token).run()
    assert outcome.status is Status.PASS, outcome
    return outcome


def test_open_port_passes_with_connect_time() -> None:
    with http_server() as server:
        outcome = passes(f"tcp:address={server.address}")
    assert outcome.message.startswith(f"connected to {server.address} in ")
    assert outcome.message.endswith(" ms")
    assert outcome.details["peer"] == "127.0.0.1"


def test_host_and_port_are_an_alternative_to_address() -> None:
    with http_server() as server:
        passes(f"tcp:host=127.0.0.1,port={server.port}")


def test_closed_port_fails_as_refused() -> None:
    port = closed_port()
    with pytest.raises(CheckFailed) as caught:
        build(f"tcp:address=127.0.0.1:{port}").run()
    assert caught.value.message == f"connection refused: 127.0.0.1:{port}"
    assert caught.value.details["phase"] == "connect"


def test_listening_but_never_accepting_still_passes() -> None:
    # The kernel completes the handshake into the backlog: why tcp proves little.
    with listening_only() as server:
        passes(f"tcp:address={server.address},timeout=1")


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this host")
def test_ipv6_address_in_brackets() -> None:
    with http_server(host="::1") as server:
        outcome = passes(f"tcp:address=[::1]:{server.port}")
        passes(f"tcp:host=::1,port={server.port}")
    assert outcome.message.startswith(f"connected to [::1]:{server.port} in ")


def test_unresolvable_host_fails_within_timeout() -> None:
    check = build("tcp:address=no-such-host.invalid:80,timeout=1")
    start = time.monotonic()
    with pytest.raises(CheckFailed) as caught:
        check.run()
    assert time.monotonic() - start < 1.5
    assert caught.value.message.startswith(
        ("name resolution failed: no-such-host.invalid", "timed out after 1s: resolving")
    )


@pytest.mark.parametrize(
    "host", ["a..b", "x" * 64 + ".example", ".lead", "\u00fc" * 60 + ".example"]
)
def test_a_name_the_idna_codec_refuses_is_refused_in_its_words(host: str) -> None:
    """An ASCII name goes to the resolver as bytes, but only where the IDNA
    codec would have passed it unchanged: a name it refuses (an empty label, one
    of 64 characters or more) and every non-ASCII name still go through it."""
    # The words are the resolver's own for a str host, which differ between
    # Pythons ("label empty or too long", "... label too long"): ask it.
    with pytest.raises(UnicodeError) as direct:
        socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    with pytest.raises(CheckFailed) as caught:
        build(f"tcp:host={host},port=80,timeout=1").run()
    assert caught.value.message == f"name resolution failed: {host}: {direct.value}"
    assert caught.value.details["phase"] == "resolve"


@pytest.mark.parametrize(
    "check", ["tcp:address=127.0.0.1:{port}", "tcp:host=localhost,port={port}",
              "http:url=http://127.0.0.1:{port}/"],
)  # fmt: skip
def test_an_ascii_host_is_resolved_without_importing_the_idna_codec(check: str) -> None:
    """getaddrinfo given a str encodes it with the IDNA codec, whose import
    (encodings.idna, stringprep, unicodedata) costs about 1.4 ms of every run."""
    port = closed_port()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "torchprobe", check.format(port=port)],
        capture_output=True, text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1 and "connection refused" in done.stdout, done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "torchprobe.net.connect" in imported  # the measurement saw the check's imports
    assert not imported & {"encodings.idna", "stringprep"}


@pytest.mark.parametrize(
    "options",
    ["", "host=127.0.0.1", "port=80", "address=127.0.0.1:80,host=127.0.0.1", "address=a:1,port=1"],
)
def test_address_or_host_and_port_is_required(options: str) -> None:
    with pytest.raises(UsageError, match=r"give address= or host= and port="):
        build(f"tcp:{options}" if options else "tcp")


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "host:", "host:0", "host:65536", "host:http", "::1:80", "[::1]", ":80"]
)
def test_bad_address_is_rejected(address: str) -> None:
    with pytest.raises(UsageError, match="option 'address'"):
        build(f"tcp:address={address}")


@pytest.mark.parametrize(
    ("address", "parsed"),
    [("db:5432", ("db", 5432)), ("[::1]:8000", ("::1", 8000)), ("10.0.0.1:1", ("10.0.0.1", 1))],
)
def test_address_forms(address: str, parsed: tuple[str, int]) -> None:
    assert OPTIONS["address"].parse(address) == parsed
