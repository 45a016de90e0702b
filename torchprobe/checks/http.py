"""The ``http`` check: an endpoint answers with an accepted status, in time.

The timeout covers the whole exchange (DNS, connect, TLS, request and the
complete response), which ``http.client`` cannot do; the small client lives in
:mod:`torchprobe.net.wire`. Credentials in the URL or in headers never
reach the output: the converters below tell the parser what to redact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.common.deadline import Deadline
from torchprobe.common.scrub import clip, register_basic
from torchprobe.net.connect import WireError, hostport, split_hostport
from torchprobe.net.wire import BODY_LIMIT
from torchprobe.options import boolean, choice, text

if TYPE_CHECKING:
    from torchprobe.net.wire import Response

__all__ = [
    "HttpCheck",
    "Reply",
    "Url",
    "exchange",
    "json_body",
    "json_mismatch",
    "parse_url",
    "status_accepted",
]

MAX_REDIRECTS = 5
#: The last path segments of readiness endpoints: Kubernetes' /readyz, KServe's
#: and Triton's /v2/health/ready and /v2/models/NAME/ready, /readiness.
READINESS_PATHS = frozenset({"ready", "readyz", "readiness"})
_REDIRECTS = (301, 302, 303, 307, 308)
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?", re.S)
_HOST = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
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
    if _CONTROL.search(value):
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
        user, _, password = url.userinfo.partition(":")
        plain = _unquote(password).decode("utf-8", "replace")
        # The Authorization header carries user:password in base64; a server
        # that echoes its request headers sends it back.
        register_basic(_unquote(user).decode("utf-8", "replace"), plain)
        return url.shown, [s for s in (password, plain, url.userinfo) if s]


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


class _JsonOption:
    """``PATH=VALUE``: the value at a dotted path of the JSON body (``a.b.0.c``)."""

    type_name = "PATH=VALUE"

    def __call__(self, value: str) -> tuple[tuple[str, ...], str]:
        path, equals, expected = value.partition("=")
        path = path.strip()
        if not equals or not path:
            raise ValueError("expected PATH=VALUE, like json=status=Healthy or json=a.b=true")
        parts = tuple(path.split("."))
        if any(not p for p in parts):
            raise ValueError(f"{path!r} has an empty step (a.b.c)")
        return parts, expected


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
        Option(
            "json",
            _JsonOption(),
            repeatable=True,
            help="the JSON body has VALUE at PATH: json=status=Healthy, json=a.0.ready=true",
        ),
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
    json: list[tuple[tuple[str, ...], str]]
    header: list[tuple[str, str]]
    method: str
    insecure: bool
    follow_redirects: bool
    proxy: Url | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.contains is not None and self.method == "HEAD":
            raise UsageError("check 'http': contains= needs method=GET (HEAD has no body)")
        if self.json and self.method == "HEAD":
            raise UsageError("check 'http': json= needs method=GET (HEAD has no body)")

    def checks_readiness(self) -> bool:
        """A URL whose path ends in /ready, /readyz or /readiness, read as the
        server reads it: percent-decoded (``/%72eady`` is /ready), any case,
        a trailing slash ignored."""
        path = self.url.target.partition("?")[0]
        decoded = _unquote(path).decode("utf-8", "replace").lower()
        segments = [s for s in decoded.split("/") if s]
        return bool(segments) and segments[-1] in READINESS_PATHS

    def setup(self) -> None:
        # Imports are charged to the run's deadline here, not to this check's timeout.
        import socket  # noqa: F401

        if self.url.scheme == "https":
            import ssl  # noqa: F401

    def run(self) -> Outcome:
        reply = exchange(
            self.url,
            clock=self.clock,
            method=self.method,
            headers=self.header,
            proxy=self.proxy,
            insecure=self.insecure,
            follow_redirects=self.follow_redirects,
        )
        response, details = reply.response, reply.details()
        code = f"HTTP {response.status}"
        accepted = self.status or ("2xx",)
        if not status_accepted(response.status, accepted):
            if reply.location is not None:
                raise CheckFailed(
                    f"{code} redirect to {reply.location} "
                    "(not followed; follow-redirects=true follows it)",
                    **details,
                )
            raise CheckFailed(f"{reply.status_line} (expected {'|'.join(accepted)})", **details)
        if self.contains is not None and self.contains.encode() not in response.body:
            where = " (its first 64 KiB)" if response.truncated else ""
            message = f"{code} but body{where} does not contain {self.contains!r}"
            raise CheckFailed(message, **details)
        if self.json:
            try:
                document = json_body(response)
            except ValueError as exc:
                raise CheckFailed(f"{code} but {exc}", **details) from None
            for path, expected in self.json:
                problem = json_mismatch(document, path, expected)
                if problem:
                    raise CheckFailed(f"{code} but {problem}", **details)
        after = f" after {reply.hops} redirect{'s' if reply.hops > 1 else ''}" if reply.hops else ""
        return passed(f"{reply.status_line} in {details['elapsed_ms']:.0f} ms{after}", **details)


class Reply:
    """One exchange: the final response, where it came from, and how it went."""

    __slots__ = ("response", "url", "final", "hops", "location", "elapsed_ms")

    def __init__(self, response: Response, url: Url, final: Url, hops: int,
                 location: str | None, elapsed_ms: float) -> None:  # fmt: skip
        self.response = response
        self.url = url
        self.final = final
        self.hops = hops
        #: Where an unfollowed redirect points (shown form), else None.
        self.location = location
        self.elapsed_ms = elapsed_ms

    @property
    def status_line(self) -> str:
        code = f"HTTP {self.response.status}"
        return f"{code} {self.response.reason}" if self.response.reason else code

    def details(self) -> dict[str, Any]:
        response = self.response
        details: dict[str, Any] = {"url": self.url.shown}
        if self.hops:
            details["final_url"] = self.final.shown
        details.update(
            status=response.status,
            reason=response.reason,
            http_version=response.version,
            body_bytes=len(response.body),
            truncated=response.truncated,
            received_bytes=response.received,
            elapsed_ms=self.elapsed_ms,
        )
        if self.hops:
            details["redirects"] = self.hops
        server = response.header("server")
        if server:
            details["server"] = clip("".join(c for c in server if c.isprintable()), 100)
        return details


def exchange(
    url: Url,
    *,
    clock: Deadline,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    proxy: Url | None = None,
    insecure: bool = False,
    follow_redirects: bool = False,
    body: bytes | None = None,
    content_type: str = "application/json",
    limit: int = BODY_LIMIT,
) -> Reply:
    """One request (and the redirects it may follow) under ``clock``.

    The HTTP layer every HTTP check shares: the whole exchange under one
    deadline, at most ``limit`` bytes of body, the redirect policy, credentials
    kept off other origins. A failure to get any response raises ``CheckFailed``
    whose message and details never carry the URL's credentials.
    """
    from torchprobe.net import wire

    start = time.monotonic()
    current, hops = url, 0
    payload = b"" if body is None else body
    while True:
        sent = _request_headers(url, current, headers)
        if body is not None:
            sent[-1:-1] = [("Content-Type", content_type), ("Content-Length", str(len(payload)))]
        try:
            response = wire.fetch(
                scheme=current.scheme,
                host=current.host,
                port=current.port,
                target=current.target,
                method=method,
                headers=sent,
                proxy=_proxy(proxy),
                insecure=insecure,
                clock=clock,
                body=payload,
                limit=limit,
            )
        except WireError as exc:
            details = {"url": url.shown, "phase": exc.phase, **exc.details}
            if hops:
                details["final_url"] = current.shown
            raise CheckFailed(exc.message, **details, **_timing(start, hops)) from None
        location = response.header("location") if response.status in _REDIRECTS else None
        if location is None:
            return Reply(response, url, current, hops, None, _elapsed(start))
        following, shown = _redirect_target(current, location)
        if not follow_redirects:
            return Reply(response, url, current, hops, shown, _elapsed(start))
        if following is None or hops == MAX_REDIRECTS:
            problem = (
                f"HTTP {response.status} redirect to unusable location {shown}"
                if following is None
                else f"too many redirects (more than {MAX_REDIRECTS}), the last to {shown}"
            )
            details = {"url": url.shown, "status": response.status}
            raise CheckFailed(problem, **details, **_timing(start, hops))
        current, hops = following, hops + 1


def _elapsed(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def _timing(start: float, hops: int) -> dict[str, Any]:
    timing: dict[str, Any] = {"elapsed_ms": _elapsed(start)}
    if hops:
        timing["redirects"] = hops
    return timing


def _request_headers(
    original: Url, url: Url, given: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    from torchprobe import __version__

    headers = [
        ("Host", url.authority(omit_default_port=True)),
        ("User-Agent", f"torchprobe/{__version__}"),
        ("Accept", "*/*"),
    ]
    userinfo = url.userinfo
    if url.origin == original.origin:
        userinfo = userinfo or original.userinfo
    else:
        given = [(k, v) for k, v in given if k.lower() not in _CREDENTIAL_HEADERS]
    if userinfo:
        headers.append(("Authorization", _basic(userinfo)))
    names = {k.lower() for k, _ in given}
    kept = [(k, v) for k, v in headers if k.lower() not in names]
    return [*kept, *given, ("Connection", "close")]


def _proxy(proxy: Url | None) -> tuple[str, int, list[tuple[str, str]]] | None:
    if proxy is None:
        return None
    auth = proxy.userinfo
    extra = [("Proxy-Authorization", _basic(auth))] if auth else []
    return proxy.host, proxy.port, extra


def _redirect_target(url: Url, location: str) -> tuple[Url | None, str]:
    """The redirect target and how it may be shown."""
    from urllib.parse import urljoin

    absolute = urljoin(f"{url.scheme}://{url.authority()}{url.target}", location.strip())
    try:
        following = parse_url(absolute)
    except ValueError:
        return None, repr(clip(_scrub(absolute), 200))
    return following, following.shown


# --- JSON assertions: json=PATH=VALUE -------------------------------------------------


def json_body(response: Response) -> Any:
    """The body as JSON; ``ValueError`` says, in a few words, why it is not."""
    import json

    if response.truncated:
        raise ValueError(
            f"the body exceeds {len(response.body) // 1024} KiB and cannot be read as JSON"
        )
    try:
        return json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        from torchprobe.net.wire import preview

        raise ValueError(f"the body is not JSON: {preview(response.body, 40)}") from None


def json_at(document: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """(found, value) at a dotted path; a step into a list is an index."""
    value = document
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif (
            isinstance(value, list)
            and step.lstrip("-").isdigit()
            and -len(value) <= int(step) < len(value)
        ):
            value = value[int(step)]
        else:
            return False, None
    return True, value


def json_equals(actual: Any, expected: str) -> bool:
    """Whether a JSON value reads as ``expected``: ``true``, ``null``, ``2`` or text."""
    if isinstance(actual, bool):
        return expected.strip().lower() == str(actual).lower()
    if actual is None:
        return expected.strip() == "null"
    if isinstance(actual, (int, float)):
        try:
            return float(expected) == actual
        except ValueError:
            return False
    if isinstance(actual, str):
        return actual == expected
    import json

    try:
        return bool(json.loads(expected) == actual)
    except ValueError:
        return False


def json_mismatch(document: Any, path: Sequence[str], expected: str) -> str | None:
    """None when the value at ``path`` reads as ``expected``, else what was found."""
    import json

    dotted = ".".join(path)
    found, actual = json_at(document, path)
    if not found:
        return f"the JSON has no {dotted!r} (expected {expected!r})"
    if json_equals(actual, expected):
        return None
    shown = json.dumps(actual, ensure_ascii=True)
    shown = clip(shown, 60)
    return f"JSON {dotted} is {shown} (expected {expected!r})"


def _basic(userinfo: str) -> str:
    import base64

    user, _, password = userinfo.partition(":")
    pair = _unquote(user) + b":" + _unquote(password)
    return "Basic " + base64.b64encode(pair).decode("ascii")
