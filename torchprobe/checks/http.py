"""The ``http`` check: an endpoint answers with an accepted status, in time.

The timeout covers the whole exchange (DNS, connect, TLS, request and the
complete response), which ``http.client`` cannot do; the small client lives in
:mod:`torchprobe.checks._httpwire`. Credentials in the URL or in headers never
reach the output: the converters below tell the parser what to redact.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ..base import Check, CheckFailed, Option, Outcome, UsageError, passed
from ..options import boolean, choice, text
from .tcp import hostport, split_hostport

if TYPE_CHECKING:
    from ._httpwire import Response

__all__ = ["HttpCheck", "Url", "parse_url"]

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?", re.S)
_HOST = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS = re.compile(r"([1-5])(?:xx|\d\d)", re.I)
# Sent by torchprobe itself, which sends no body and closes after one exchange.
_RESERVED_HEADERS = {"connection", "content-length", "transfer-encoding"}
# Not carried to another origin by a redirect, as curl does.
_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


class Url:
    """A checked http(s) URL. ``shown`` is the only form fit for output."""

    __slots__ = ("scheme", "host", "port", "target", "userinfo", "shown")

    def __init__(self, scheme: str, host: str, port: int, target: str, userinfo: str | None):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.target = target
        self.userinfo = userinfo
        self.shown = f"{scheme}://{'***@' if userinfo else ''}{self.authority(True)}{target}"

    def authority(self, omit_default_port: bool = False) -> str:
        """``host:port``, brackets around IPv6; the Host header omits a default port."""
        default = self.port == (443 if self.scheme == "https" else 80)
        if omit_default_port and default:
            return f"[{self.host}]" if ":" in self.host else self.host
        return hostport(self.host, self.port)

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host.lower(), self.port

    def __repr__(self) -> str:
        return f"Url({self.shown!r})"

    __str__ = __repr__


def _scrub(value: str) -> str:
    """``value`` with any userinfo replaced, for messages about a URL that did not parse."""
    return re.sub(r"^([^:/?#]*://)[^/?#]*@", r"\1***@", value.strip())


def parse_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> Url:
    """Parse and check a URL; ``ValueError`` says what is wrong, without credentials."""
    value = value.strip()
    shown = repr(_scrub(value))
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{shown} contains a space or control character (percent-encode it)")
    match = _URL.fullmatch(value)
    if match is None:
        raise ValueError(f"{shown} is not a URL like {schemes[0]}://HOST[:PORT]/PATH")
    scheme, authority, path, query = match.group(1).lower(), *match.group(2, 3, 4)
    if scheme not in schemes:
        raise ValueError(f"{shown}: the scheme must be {' or '.join(s + '://' for s in schemes)}")
    userinfo, _, host_port = authority.rpartition("@")
    host, port_text = split_hostport(host_port)
    if not host:
        raise ValueError(f"{shown} has no host")
    if not _HOST.fullmatch(host):
        raise ValueError(f"{shown}: invalid host {host!r} (a non-ASCII name needs its xn-- form)")
    port = 443 if scheme == "https" else 80
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{shown}: invalid port {port_text!r}")
        port = int(port_text)
    target = "".join(c if ord(c) < 128 else _percent(c) for c in (path or "/") + (query or ""))
    return Url(scheme, host, port, target, userinfo or None)


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _unquote(value: str) -> bytes:
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode())


class _UrlOption:
    """Option converter for a URL; its ``redact`` hides the userinfo."""

    def __init__(self, schemes: tuple[str, ...]) -> None:
        self.schemes = schemes
        self.type_name = "url"

    def __call__(self, value: str) -> Url:
        return parse_url(value, self.schemes)

    def redact(self, value: str) -> tuple[str, list[str]]:
        url = parse_url(value, self.schemes)
        if not url.userinfo:
            return url.shown, []
        password = url.userinfo.partition(":")[2]
        return url.shown, [s for s in (password, url.userinfo) if s]


class _HeaderOption:
    """Option converter for ``Name: value``; its ``redact`` hides every value."""

    type_name = "'Name: value'"

    def __call__(self, value: str) -> tuple[str, str]:
        name, colon, content = value.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise ValueError("expected 'Name: value', like curl -H")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name} is set by torchprobe (no body, one request per connection)")
        if any(c in content for c in "\r\n\0"):
            raise ValueError(f"the value of {name} contains a line break")
        return name, content.strip()

    def redact(self, value: str) -> tuple[str, list[str]]:
        name, content = self(value)
        return f"{name}: ***", [content] if content else []


class _StatusOption:
    """Accepted statuses, ``200|204`` or ``2xx|301``, as a tuple like ``("2xx", "301")``."""

    type_name = "code|Nxx[|...]"

    def __call__(self, value: str) -> tuple[str, ...]:
        accepted = tuple(part.strip().lower() for part in value.split("|"))
        for part in accepted:
            if not _STATUS.fullmatch(part):
                raise ValueError(f"{part!r} is not a status code (100-599) or class (2xx)")
        return accepted


def status_accepted(status: int, accepted: tuple[str, ...]) -> bool:
    return any(p == str(status) or p == f"{status // 100}xx" for p in accepted)


class HttpCheck(Check):
    name = "http"
    description = "an HTTP(S) endpoint answers with an accepted status (and body) in time"
    options = (
        Option(
            "url", _UrlOption(("http", "https")), required=True, help="http(s)://HOST[:PORT]/PATH"
        ),
        Option("status", _StatusOption(), help="accepted codes or classes: 200|204, 2xx|301"),
        Option("contains", text, help="the body (its first 64 KiB) contains this text"),
        Option("header", _HeaderOption(), repeatable=True, help="a request header, like curl -H"),
        Option("method", choice("GET", "HEAD"), default="GET", help="the request method"),
        Option("insecure", boolean, default=False, help="https: skip certificate verification"),
        Option("follow-redirects", boolean, default=False, help="follow up to 5 redirects"),
        Option(
            "proxy",
            _UrlOption(("http",)),
            help="http://HOST:PORT proxy (proxy variables in the environment are ignored)",
        ),
    )
    timeout = 5.0
    worker = None

    url: Url
    status: tuple[str, ...] | None
    contains: str | None
    header: list[tuple[str, str]]
    method: str
    insecure: bool
    follow_redirects: bool
    proxy: Url | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.contains is not None and self.method == "HEAD":
            raise UsageError("check 'http': contains= needs method=GET (HEAD has no body)")

    def setup(self) -> None:
        # Imports are charged to the run's deadline here, not to this check's timeout.
        import socket  # noqa: F401

        if self.url.scheme == "https":
            import ssl  # noqa: F401

    def run(self) -> Outcome:
        from . import _httpwire as wire

        start = time.monotonic()
        clock = wire.Deadline.of(self)
        url, hops = self.url, 0
        while True:
            try:
                response = wire.fetch(
                    scheme=url.scheme,
                    host=url.host,
                    port=url.port,
                    target=url.target,
                    method=self.method,
                    headers=self._headers(url),
                    proxy=self._proxy(),
                    insecure=self.insecure,
                    clock=clock,
                )
            except wire.WireError as exc:
                details = {"url": self.url.shown, "phase": exc.phase, **exc.details}
                if hops:
                    details["final_url"] = url.shown
                raise CheckFailed(exc.message, **details, **self._timing(start, hops)) from None
            location = response.header("location") if response.status in _REDIRECTS else None
            if location is None or not self.follow_redirects:
                break
            following, shown = self._redirect_target(url, location)
            if following is None or hops == MAX_REDIRECTS:
                problem = (
                    f"HTTP {response.status} redirect to unusable location {shown}"
                    if following is None
                    else f"too many redirects (more than {MAX_REDIRECTS}), the last to {shown}"
                )
                details = {"url": self.url.shown, "status": response.status}
                raise CheckFailed(problem, **details, **self._timing(start, hops))
            url, hops = following, hops + 1
        return self._judge(response, url, location, start, hops)

    def _judge(
        self, response: Response, url: Url, location: str | None, start: float, hops: int
    ) -> Outcome:
        details: dict[str, Any] = {"url": self.url.shown}
        if hops:
            details["final_url"] = url.shown
        details.update(
            status=response.status,
            reason=response.reason,
            http_version=response.version,
            body_bytes=len(response.body),
            truncated=response.truncated,
            received_bytes=response.received,
            **self._timing(start, hops),
        )
        server = response.header("server")
        if server:
            details["server"] = "".join(c for c in server if c.isprintable())[:100]
        code = f"HTTP {response.status}"
        status_line = f"{code} {response.reason}" if response.reason else code
        accepted = self.status or ("2xx",)
        if not status_accepted(response.status, accepted):
            if location is not None:
                raise CheckFailed(
                    f"{code} redirect to {self._redirect_target(url, location)[1]} "
                    "(not followed; follow-redirects=true follows it)",
                    **details,
                )
            raise CheckFailed(f"{status_line} (expected {'|'.join(accepted)})", **details)
        if self.contains is not None and self.contains.encode() not in response.body:
            where = " (its first 64 KiB)" if response.truncated else ""
            message = f"{code} but body{where} does not contain {self.contains!r}"
            raise CheckFailed(message, **details)
        after = f" after {hops} redirect{'s' if hops > 1 else ''}" if hops else ""
        return passed(f"{status_line} in {details['elapsed_ms']:.0f} ms{after}", **details)

    @staticmethod
    def _timing(start: float, hops: int) -> dict[str, Any]:
        timing: dict[str, Any] = {"elapsed_ms": round((time.monotonic() - start) * 1000, 1)}
        if hops:
            timing["redirects"] = hops
        return timing

    def _headers(self, url: Url) -> list[tuple[str, str]]:
        from .. import __version__

        headers = [
            ("Host", url.authority(omit_default_port=True)),
            ("User-Agent", f"torchprobe/{__version__}"),
            ("Accept", "*/*"),
        ]
        given = self.header
        userinfo = url.userinfo
        if url.origin == self.url.origin:
            userinfo = userinfo or self.url.userinfo
        else:
            given = [(k, v) for k, v in given if k.lower() not in _CREDENTIAL_HEADERS]
        if userinfo:
            headers.append(("Authorization", _basic(userinfo)))
        names = {k.lower() for k, _ in given}
        kept = [(k, v) for k, v in headers if k.lower() not in names]
        return [*kept, *given, ("Connection", "close")]

    def _proxy(self) -> tuple[str, int, list[tuple[str, str]]] | None:
        if self.proxy is None:
            return None
        auth = self.proxy.userinfo
        extra = [("Proxy-Authorization", _basic(auth))] if auth else []
        return self.proxy.host, self.proxy.port, extra

    @staticmethod
    def _redirect_target(url: Url, location: str) -> tuple[Url | None, str]:
        """The redirect target and how it may be shown."""
        from urllib.parse import urljoin

        absolute = urljoin(f"{url.scheme}://{url.authority()}{url.target}", location.strip())
        try:
            following = parse_url(absolute)
        except ValueError:
            return None, repr(_scrub(absolute)[:200])
        return following, following.shown


def _basic(userinfo: str) -> str:
    import base64

    user, _, password = userinfo.partition(":")
    pair = _unquote(user) + b":" + _unquote(password)
    return "Basic " + base64.b64encode(pair).decode("ascii")
