"""URLs and request headers as the user gives them, and what output may show of them.

:class:`Url` is a checked http(s) URL whose ``shown`` form is the only one fit
for output; :class:`UrlOption` and :class:`HeaderOption` are the option
converters every HTTP check uses (``url=``, ``proxy=``, ``header=``), and their
``redact`` tells the option parser which values to mask. The userinfo of a URL
becomes an ``Authorization: Basic`` header (:func:`basic_auth`), percent-decoded
as a browser does.
"""

from __future__ import annotations

import re

from torchprobe.common.scrub import register_basic
from torchprobe.net.connect import hostport, split_hostport

__all__ = [
    "CREDENTIAL_HEADERS", "RESERVED_HEADERS", "HeaderOption", "Url", "UrlOption", "basic_auth",
    "parse_url", "scrub_userinfo", "unquote",
]  # fmt: skip

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?", re.S)
_HOST = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Sent by torchprobe itself, which sends no body and closes after one exchange.
RESERVED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
#: Not carried to another origin by a redirect, as curl does.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


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


def scrub_userinfo(value: str) -> str:
    """``value`` with any userinfo replaced, for messages about a URL that did not parse."""
    return re.sub(r"^([^:/?#]*://)[^/?#]*@", r"\1***@", value.strip())


def parse_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> Url:
    """Parse and check a URL; ``ValueError`` says what is wrong, without credentials."""
    value = value.strip()
    shown = repr(scrub_userinfo(value))
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


def unquote(value: str) -> bytes:
    """``value`` with its ``%XX`` escapes decoded, as bytes (they need not be UTF-8)."""
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode())


def basic_auth(userinfo: str) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value for ``user:password``."""
    import base64

    user, _, password = userinfo.partition(":")
    pair = unquote(user) + b":" + unquote(password)
    return "Basic " + base64.b64encode(pair).decode("ascii")


class UrlOption:
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
        plain = unquote(password).decode("utf-8", "replace")
        # The Authorization header carries user:password in base64; a server
        # that echoes its request headers sends it back.
        register_basic(unquote(user).decode("utf-8", "replace"), plain)
        return url.shown, [s for s in (password, plain, url.userinfo) if s]


class HeaderOption:
    """Option converter for ``Name: value``; its ``redact`` hides every value."""

    type_name = "'Name: value'"

    def __call__(self, value: str) -> tuple[str, str]:
        name, colon, content = value.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise ValueError("expected 'Name: value', like curl -H")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name} is set by torchprobe (no body, one request per connection)")
        if any(c in content for c in "\r\n\0"):
            raise ValueError(f"the value of {name} contains a line break")
        return name, content.strip()

    def redact(self, value: str) -> tuple[str, list[str]]:
        name, content = self(value)
        return f"{name}: ***", [content] if content else []
