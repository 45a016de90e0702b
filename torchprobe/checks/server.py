"""The machinery of the model-server presets: endpoints declared, then probed.

A preset (see :mod:`torchprobe.checks.presets`) is a :class:`ServerCheck`
subclass that declares the server's default port and, for ``mode=live`` and
``mode=ready``, the :class:`Endpoint` list whose answers decide the verdict.
Everything else is here, once: base URL and path joining, the bearer token,
one deadline for all the requests (the ``http`` check's layer: DNS to the last
byte, 64 KiB cap, credentials redacted), and messages that say which endpoint
answered what::

    class LitServe(ServerCheck):
        name = "litserve"
        server = "LitServe"
        port = 8000
        live = ready = (Endpoint("/health", "server ready"),)

Endpoints are probed in order; the first that does not answer as declared
fails the check. ``info`` endpoints only add to the report. A preset that
declares ``inference`` offers ``infer=`` (see :mod:`torchprobe.checks.canary`):
one real inference request after the mode's endpoints, whose timeout names
what the health endpoints answered meanwhile.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.checks import USER_AGENT, canary
from torchprobe.checks.judge import json_body, json_mismatch
from torchprobe.checks.stall import NoMetrics, ServerMetrics, check_options, progress, stall_options
from torchprobe.common.deadline import Deadline, seconds
from torchprobe.common.scrub import clean, register
from torchprobe.net.http import Reply, exchange
from torchprobe.net.url import HeaderOption, Url, UrlOption, parse_url
from torchprobe.net.wire import BODY_LIMIT
from torchprobe.options import boolean, choice, text

__all__ = ["BaseUrlOption", "Endpoint", "ServerCheck", "base_url", "server_options"]

#: At most this long (and half of what is left) for an ``info`` endpoint.
INFO_TIME = 1.0

#: Judge of an endpoint's answer: ``judge(check, reply, document)`` returns a
#: short note for the report, or raises :class:`CheckFailed`.
Judge = Callable[[Any, Reply, Any], "str | None"]


@dataclass(frozen=True)
class Endpoint:
    """One request a preset makes and what its answer must be.

    ``path`` may name fields in braces: ``{model}`` and ``{version}`` (URL-
    encoded option values) or any the preset adds with :meth:`ServerCheck.fields`.
    """

    path: str
    #: What a good answer shows ("server ready", "model {model} ready").
    shows: str
    #: What a bad one means ("server not ready"); by default "not <shows>".
    fails: str = ""
    accept: tuple[int, ...] = (200,)
    #: JSON values the body must have: ``(("status", "Healthy"),)``.
    json: tuple[tuple[str, str], ...] = ()
    #: Probed only when this option is set (e.g. ``"model"``).
    needs: str | None = None
    #: Skipped when this option is set (a server-wide answer that ``model=`` replaces).
    unless: str | None = None
    #: The option that holds this endpoint's base URL.
    base: str = "url"
    method: str = "GET"
    #: A request body (JSON), built at run time: ``body(check) -> bytes``.
    body: Callable[[Any], bytes] | None = None
    judge: Judge | None = None
    #: What a 404 means here ("model {model} is not loaded").
    missing: str | None = None
    #: Only adds to the report: its failure is not the check's.
    info: bool = False
    #: At most this much of the answer's body is read (an API listing a whole cluster).
    limit: int = BODY_LIMIT
    #: Real inference (``infer=``, ``generate=true``): any 2xx is an answer, and a
    #: timeout names what the endpoints before it answered.
    canary: bool = False


#: Every 2xx: a model's own handler may answer 201 or 204 as well as 200.
ANY_2XX = tuple(range(200, 300))


def _infer_judge(check: Any, reply: Reply, document: Any) -> str:
    """The answer of ``infer=`` is JSON; ``expect=`` judges its values."""
    answered = f"{check._where} answered {reply.status_line}"
    try:
        document = json_body(reply.response)
    except ValueError as exc:
        raise CheckFailed(f"wrong answer: {answered}, but {exc}") from None
    return f"inference {canary.judge(check, document, answered)} in {reply.elapsed_ms:.0f} ms"


def infer_endpoint(path: str, *, needs: str | None = "model", **more: Any) -> Endpoint:
    """The endpoint ``infer=`` posts to: ``infer_endpoint("/predictions/{model}")``."""
    values: dict[str, Any] = {
        "method": "POST",
        "needs": needs,
        "body": canary.body,
        "judge": _infer_judge,
        "accept": ANY_2XX,
        "canary": True,
        # A model's answer (scores, a mask, embeddings) outgrows 64 KiB; bounded
        # like the request, so a hostile answer still costs at most 1 MiB.
        "limit": canary.BODY_MAX,
        **more,
    }
    return Endpoint(path, "inference", "inference failed", **values)


def base_url(value: str) -> Url:
    url = parse_url(value)
    if "?" in url.target:
        raise ValueError("a server's base URL has no query (?...)")
    return url


class BaseUrlOption(UrlOption):
    """A server's base URL: the ``http`` check's URL option, without a query."""

    def __init__(self) -> None:
        super().__init__(("http", "https"))

    def __call__(self, value: str) -> Url:
        return base_url(value)


def server_options(
    port: int,
    *,
    model: bool = True,
    extra: Sequence[Option] = (),
    token_help: str = "sent as 'Authorization: Bearer TOKEN'",
) -> tuple[Option, ...]:
    """The options every preset takes, then ``extra``."""
    options = [
        Option(
            "url", BaseUrlOption(), help=f"the server's base URL (default http://127.0.0.1:{port})"
        ),
        Option("mode", choice("live", "ready"), default="ready", help="what to check (live|ready)"),
    ]
    if model:
        options.append(Option("model", text, help="a model that must be ready"))
    options += [
        Option("token", text, secret=True, help=token_help),
        Option("header", HeaderOption(), repeatable=True, help="a request header, like curl -H"),
        Option("insecure", boolean, default=False, help="https: skip certificate verification"),
        *stall_options(),
    ]
    return (*options, *extra)


class ServerCheck(Check):
    """A model server's health, from the endpoints it declares."""

    #: The server's name as its users know it ("TorchServe").
    server: ClassVar[str] = ""
    #: Its default HTTP port on 127.0.0.1.
    port: ClassVar[int] = 80
    #: The default ports of its other base-URL options (``{"management-url": 8081}``).
    other_ports: ClassVar[dict[str, int]] = {}
    #: How ``token=`` is sent: a header name and its value, ``{}`` the token.
    token_header: ClassVar[tuple[str, str]] = ("Authorization", "Bearer {}")
    live: ClassVar[Sequence[Endpoint]] = ()
    ready: ClassVar[Sequence[Endpoint]] = ()
    #: What ``stall=`` reads (see :mod:`torchprobe.checks.stall`), or why it cannot.
    metrics: ClassVar[ServerMetrics | NoMetrics | None] = None
    #: Where ``infer=`` sends its request (with :data:`canary.CANARY_OPTIONS`).
    inference: ClassVar[Endpoint | None] = None
    timeout = 5.0
    worker = None

    url: Url | None
    mode: str
    token: str | None
    header: list[tuple[str, str]]
    insecure: bool
    stall: float | None
    metrics_url: Url | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if not hasattr(self, "model"):
            self.model: str | None = None
        self.notes: dict[str, Any] = {}
        check_options(self)
        self._answered = ""  # the last endpoint that answered, for a canary's timeout
        self._where = ""
        canary.validate(self)
        needs = self.inference.needs if self.inference else None
        if getattr(self, "infer", None) is not None and needs and not self._given(needs):
            path = self.inference.path if self.inference else ""
            raise UsageError(f"check {self.name!r}: infer= needs {needs}= (POST {path})")

    def checks_readiness(self) -> bool:
        """``mode=ready`` (the default) asks whether the server can serve its
        model: readiness; so does a real inference (``infer=``, ``generate=true``).
        Every option that makes a configuration ask that adds its term here;
        ``stall=`` judges liveness and adds none."""
        return (
            self.mode == "ready"
            or getattr(self, "infer", None) is not None
            or bool(getattr(self, "generate", False))
        )

    # -- what a preset may override ------------------------------------------------

    def endpoints(self) -> Sequence[Endpoint]:
        """The endpoints of this run, in order (by default: those of ``mode``)."""
        return self.live if self.mode == "live" else self.ready

    def canary_endpoints(self) -> Sequence[Endpoint]:
        """What ``infer=`` adds after :meth:`endpoints` (by default: ``inference``)."""
        if getattr(self, "infer", None) is None or self.inference is None:
            return ()
        return (self.inference,)

    def fields(self) -> dict[str, str]:
        """Values for the braces of endpoint paths."""
        from urllib.parse import quote

        version = getattr(self, "version", None)
        return {
            "model": quote(self.model or "", safe=""),
            "version": quote(str(version), safe="") if version else "",
        }

    def token_for(self, endpoint: Endpoint) -> str | None:
        """The bearer token for an endpoint (TorchServe has one per API)."""
        return self.token

    def unauthorized(self, reply: Reply) -> bool:
        """Whether an answer means the credentials were missing or wrong."""
        return reply.response.status in (401, 403)

    # -- the probe -----------------------------------------------------------------

    def setup(self) -> None:
        import socket  # noqa: F401

        if any(u is not None and u.scheme == "https" for u in self._bases().values()):
            import ssl  # noqa: F401
        if getattr(self, "stall", None) is not None:  # a plugin's options may lack it
            import prometheus_client.parser  # noqa: F401

            metrics_url = getattr(self, "metrics_url", None)
            if metrics_url is not None and metrics_url.scheme == "https":
                import ssl  # noqa: F401

    def run(self) -> Outcome:
        start = time.monotonic()
        clock = self.clock
        self._answered = ""
        base = self.base("url")
        seen: list[str] = []
        details: dict[str, Any] = {"server": self.server, "mode": self.mode, "url": base.shown}
        answers: dict[str, Any] = {}
        try:
            for endpoint in (*self.endpoints(), *self.canary_endpoints()):
                if endpoint.needs and not self._given(endpoint.needs):
                    continue
                if endpoint.unless and self._given(endpoint.unless):
                    continue
                note = self._probe(endpoint, clock, answers)
                if note:
                    seen.append(note)
            if getattr(self, "stall", None) is not None:
                seen.append(progress(self, clock))
        except CheckFailed as exc:
            exc.details = {**details, "endpoints": answers, **self.notes, **exc.details}
            exc.details["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
            raise
        elapsed = round((time.monotonic() - start) * 1000, 1)
        details.update(endpoints=answers, **self.notes, elapsed_ms=elapsed)
        message = f"{self.mode}: {', '.join(seen)} in {elapsed:.0f} ms"
        return passed(message, **details)

    def _given(self, option: str) -> bool:
        return bool(getattr(self, option.replace("-", "_"), None))

    def base(self, option: str) -> Url:
        url = self._bases()[option]
        return url if url is not None else self.default_base(option)

    def default_base(self, option: str) -> Url:
        return parse_url(f"http://127.0.0.1:{self.other_ports.get(option, self.port)}")

    def _bases(self) -> dict[str, Url | None]:
        bases = (o for o in self.options if isinstance(o.parse, BaseUrlOption))
        return {o.key: getattr(self, o.attr) for o in bases}

    def _probe(self, endpoint: Endpoint, clock: Deadline, answers: dict[str, Any]) -> str | None:
        fields = self.fields()
        path = endpoint.path.format(**fields)
        base = self.base(endpoint.base)
        prefix = base.target.rstrip("/")
        url = Url(base.scheme, base.host, base.port, prefix + path, base.userinfo)
        where = f"{endpoint.method} {path}"
        shown = self._shown_fields()
        shows = endpoint.shows.format(**shown)
        fails = (endpoint.fails or f"not {endpoint.shows}").format(**shown)
        token = self.token_for(endpoint)
        headers = self.request_headers(token)
        body = endpoint.body(self) if endpoint.body else None
        kind = canary.content_type(self) if endpoint.canary else canary.JSON_TYPE
        self._where = where
        if endpoint.info:  # an extra for the report may not eat the verdict's time
            budget = min(INFO_TIME, clock.left() / 2)
            clock = Deadline.after(budget)
        try:
            reply = exchange(
                url,
                clock=clock,
                user_agent=USER_AGENT,
                method=endpoint.method,
                headers=headers,
                insecure=self.insecure,
                body=body,
                content_type=kind,
                limit=endpoint.limit,
            )
        except CheckFailed as exc:
            if endpoint.info:
                answers[path] = exc.message
                return None
            if endpoint.canary and exc.details.get("timed_out") and self._answered:
                # The contrast is the diagnosis: the server answers, its model does not.
                # The check's timeout, as every timeout message names it.
                waited = seconds(clock.timeout)
                message = f"{where}: inference did not answer in {waited} ({self._answered})"
                raise CheckFailed(message, **exc.details, answered=self._answered) from None
            message = f"{where}: {exc.message}{self._hint(endpoint, exc)}"
            raise CheckFailed(message, **exc.details) from None
        response = reply.response
        answers[path] = response.status
        answered = f"{where} answered {reply.status_line}"
        if not endpoint.info:
            self._answered = f"{answered} in {reply.elapsed_ms:.0f} ms"
        if endpoint.info and response.status not in endpoint.accept:
            return None
        if self.unauthorized(reply):
            given = "token= or token-file=" if hasattr(self, "token_file") else "token="
            why = "rejected the credentials" if token else "needs credentials"
            raise CheckFailed(f"unauthorized: {answered} (the server {why}; {given})")
        if response.status == 404 and endpoint.missing:
            missing = endpoint.missing.format(**self._shown_fields())
            raise CheckFailed(f"{missing}: {answered}{_quote_body(reply)}")
        if response.status not in endpoint.accept:
            raise CheckFailed(f"{fails}: {answered}{_quote_body(reply)}")
        document: Any = None
        if endpoint.json or endpoint.judge:
            try:
                document = json_body(response)
            except ValueError as exc:
                if endpoint.info:
                    return None
                if endpoint.json:
                    raise CheckFailed(f"{fails}: {answered}, but {exc}") from None
        for key, expected in endpoint.json:
            problem = json_mismatch(document, key.split("."), expected)
            if problem:
                raise CheckFailed(f"{fails}: {answered}, but {problem}")
        if endpoint.judge is not None:
            try:
                return endpoint.judge(self, reply, document)
            except CheckFailed:
                if endpoint.info:
                    return None
                raise
        return None if endpoint.info else shows

    def request_headers(self, token: str | None) -> list[tuple[str, str]]:
        """``header=`` and, unless one of them already is, the token's header."""
        headers = list(self.header)
        name, value = self.token_header
        if token and not any(k.lower() == name.lower() for k, _ in headers):
            headers.insert(0, (name, value.format(token)))
        return headers

    def _shown_fields(self) -> dict[str, str]:
        version = getattr(self, "version", None)
        return {
            "model": repr(self.model) if self.model else "",
            "version": str(version) if version else "",
        }

    def _hint(self, endpoint: Endpoint, exc: CheckFailed) -> str:
        if exc.details.get("phase") != "connect" or self._bases().get(endpoint.base) is not None:
            return ""
        default = self.default_base(endpoint.base).authority()
        return f" ({default} is {self.server}'s default; {endpoint.base}= sets another)"

    # -- secrets read at run time (token files) ------------------------------------

    def add_secret(self, value: str) -> str:
        """A secret this check read (a token file's key): masked in every output."""
        register(value)
        return value


def _quote_body(reply: Reply, limit: int = 120) -> str:
    """A short, one-line, printable view of the answer's body, or nothing."""
    raw = reply.response.body[: limit * 4].decode("utf-8", "replace")
    shown = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in clean(raw))).strip()
    if not shown:
        return ""
    if len(shown) > limit or reply.response.truncated:
        shown = shown[: limit - 1] + "…"
    return f": {shown}"


def need(condition: bool, message: str) -> None:
    """Fail the check with ``message`` unless ``condition``."""
    if not condition:
        raise CheckFailed(message)
