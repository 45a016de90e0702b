"""One HTTP exchange under one deadline: the client every HTTP check shares.

:func:`exchange` builds the request headers (userinfo as ``Authorization``,
the caller's headers over the defaults), goes through an optional proxy,
follows at most :data:`MAX_REDIRECTS` redirects when asked, keeps credentials
off other origins, and times the whole exchange. The bytes on the socket are
:mod:`torchprobe.net.wire`'s. A failure to get any response raises
``CheckFailed`` whose message and details never carry the URL's credentials.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torchprobe.base import CheckFailed
from torchprobe.common.deadline import Deadline
from torchprobe.common.scrub import clip
from torchprobe.net.connect import WireError
from torchprobe.net.url import CREDENTIAL_HEADERS, Url, basic_auth, parse_url, scrub_userinfo
from torchprobe.net.wire import BODY_LIMIT

if TYPE_CHECKING:
    from torchprobe.net.wire import Response

__all__ = ["MAX_REDIRECTS", "REDIRECTS", "Reply", "exchange"]

MAX_REDIRECTS = 5
#: The statuses whose ``Location`` is a redirect.
REDIRECTS = (301, 302, 303, 307, 308)


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
    user_agent: str,
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

    The whole exchange under one deadline, at most ``limit`` bytes of body, the
    redirect policy, credentials kept off other origins. ``user_agent`` is the
    caller's (the network layer knows no product name); a ``User-Agent`` in
    ``headers`` replaces it, as every default header is replaced.
    """
    from torchprobe.net import wire

    start = time.monotonic()
    current, hops = url, 0
    payload = b"" if body is None else body
    while True:
        sent = _request_headers(url, current, headers, user_agent)
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
        location = response.header("location") if response.status in REDIRECTS else None
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
    original: Url, url: Url, given: Sequence[tuple[str, str]], user_agent: str
) -> list[tuple[str, str]]:
    headers = [
        ("Host", url.authority(omit_default_port=True)),
        ("User-Agent", user_agent),
        ("Accept", "*/*"),
    ]
    userinfo = url.userinfo
    if url.origin == original.origin:
        userinfo = userinfo or original.userinfo
    else:
        given = [(k, v) for k, v in given if k.lower() not in CREDENTIAL_HEADERS]
    if userinfo:
        headers.append(("Authorization", basic_auth(userinfo)))
    names = {k.lower() for k, _ in given}
    kept = [(k, v) for k, v in headers if k.lower() not in names]
    return [*kept, *given, ("Connection", "close")]


def _proxy(proxy: Url | None) -> tuple[str, int, list[tuple[str, str]]] | None:
    if proxy is None:
        return None
    auth = proxy.userinfo
    extra = [("Proxy-Authorization", basic_auth(auth))] if auth else []
    return proxy.host, proxy.port, extra


def _redirect_target(url: Url, location: str) -> tuple[Url | None, str]:
    """The redirect target and how it may be shown."""
    from urllib.parse import urljoin

    absolute = urljoin(f"{url.scheme}://{url.authority()}{url.target}", location.strip())
    try:
        following = parse_url(absolute)
    except ValueError:
        return None, repr(clip(scrub_userinfo(absolute), 200))
    return following, following.shown
