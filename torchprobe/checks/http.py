"""The ``http`` check: an endpoint answers with an accepted status, in time.

The timeout covers the whole exchange (DNS, connect, TLS, request and the
complete response), which ``http.client`` cannot do; the client is
:func:`torchprobe.net.http.exchange`. Credentials in the URL or in headers
never reach the output: the converters of :mod:`torchprobe.net.url` tell the
parser what to redact. Status and JSON are judged by :mod:`torchprobe.checks.judge`.
"""

from __future__ import annotations

from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.checks import USER_AGENT
from torchprobe.checks.judge import (
    JsonOption,
    StatusOption,
    json_body,
    json_mismatch,
    status_accepted,
)
from torchprobe.net.http import exchange
from torchprobe.net.url import HeaderOption, Url, UrlOption, unquote
from torchprobe.options import boolean, choice, text

__all__ = ["HttpCheck"]

#: The last path segments of readiness endpoints: Kubernetes' /readyz, KServe's
#: and Triton's /v2/health/ready and /v2/models/NAME/ready, /readiness.
READINESS_PATHS = frozenset({"ready", "readyz", "readiness"})


class HttpCheck(Check):
    name = "http"
    description = "an HTTP(S) endpoint answers with an accepted status (and body) in time"
    options = (
        Option(
            "url", UrlOption(("http", "https")), required=True, help="http(s)://HOST[:PORT]/PATH"
        ),
        Option("status", StatusOption(), help="accepted codes or classes: 200|204, 2xx|301"),
        Option("contains", text, help="the body (its first 64 KiB) contains this text"),
        Option(
            "json",
            JsonOption(),
            repeatable=True,
            help="the JSON body has VALUE at PATH: json=status=Healthy, json=a.0.ready=true",
        ),
        Option("header", HeaderOption(), repeatable=True, help="a request header, like curl -H"),
        Option("method", choice("GET", "HEAD"), default="GET", help="the request method"),
        Option("insecure", boolean, default=False, help="https: skip certificate verification"),
        Option("follow-redirects", boolean, default=False, help="follow up to 5 redirects"),
        Option(
            "proxy",
            UrlOption(("http",)),
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
        decoded = unquote(path).decode("utf-8", "replace").lower()
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
            user_agent=USER_AGENT,
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
