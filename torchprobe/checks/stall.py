"""``stall=DURATION`` on the model-server presets: progress from the server's metrics.

A preset declares what its server's ``/metrics`` shows (:class:`ServerMetrics`:
where, which gauges count pending work, which counters move with done work,
the label that names a model) or why ``stall=`` cannot work there
(:class:`NoMetrics`). :class:`~torchprobe.checks.server.ServerCheck` calls
:func:`check_options` when it is built and :func:`progress` after its
endpoints answered; the judgement itself is :mod:`torchprobe.checks.progress`.

``stall=`` is liveness: it never sends inference, and a server that makes
progress under any load passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchprobe.base import CheckFailed, Option, UsageError
from torchprobe.checks.progress import Watch, refuse, watch
from torchprobe.checks.promtext import need_parser
from torchprobe.common.deadline import Deadline
from torchprobe.net.url import Url, UrlOption, parse_url
from torchprobe.options import duration

if TYPE_CHECKING:
    from torchprobe.checks.server import ServerCheck

__all__ = ["NoMetrics", "ServerMetrics", "check_options", "progress", "stall_options"]


@dataclass(frozen=True)
class ServerMetrics:
    """Where a server's Prometheus metrics are and what shows progress there."""

    watch: Watch
    path: str = "/metrics"
    #: The metrics port on the server's host; None: the server's own port (and prefix).
    port: int | None = None
    #: (metric label, option): the series of the model that ``model=`` names.
    labels: tuple[tuple[str, str], ...] = ()
    #: Why there is no default metrics URL (``metrics-url=`` is then required).
    needs_url: str = ""
    #: What a 404 from the metrics endpoint usually means.
    missing: str = ""


@dataclass(frozen=True)
class NoMetrics:
    """Why ``stall=`` cannot work on a server."""

    why: str


def stall_options() -> tuple[Option, ...]:
    return (
        Option(
            "stall",
            duration,
            help="liveness: fail when work was pending this long with no progress in the "
            "server's metrics (kept between runs)",
        ),
        Option(
            "metrics-url",
            UrlOption(("http", "https")),
            help="with stall=: the server's Prometheus metrics URL (default per server)",
        ),
    )


def check_options(check: ServerCheck) -> None:
    """Usage errors of ``stall=`` and ``metrics-url=`` for this preset."""
    declared = type(check).metrics
    stall = getattr(check, "stall", None)
    url = getattr(check, "metrics_url", None)
    if stall is None:
        if url is not None:
            raise UsageError(f"check {check.name!r}: metrics-url= is for stall=")
        return
    if not isinstance(declared, ServerMetrics):
        why = declared.why if isinstance(declared, NoMetrics) else "it has no metrics declared"
        raise refuse(check.name, why)
    if declared.needs_url and url is None:
        raise UsageError(f"check {check.name!r}: stall= needs metrics-url=: {declared.needs_url}")
    need_parser(f"check {check.name!r}: stall=")


def metrics_url(check: ServerCheck, declared: ServerMetrics) -> Url:
    given: Url | None = getattr(check, "metrics_url", None)
    if given is not None:
        return given
    base = check.base("url")
    if declared.port is None:
        target = base.target.rstrip("/") + declared.path
        return Url(base.scheme, base.host, base.port, target, base.userinfo)
    host = f"[{base.host}]" if ":" in base.host else base.host
    return parse_url(f"{base.scheme}://{host}:{declared.port}{declared.path}")


def progress(check: ServerCheck, clock: Deadline) -> str:
    """Read the server's metrics once and judge progress; the note for the report.
    Raises CheckFailed when stalled or when the metrics cannot be read."""
    declared = type(check).metrics
    assert isinstance(declared, ServerMetrics) and check.stall is not None
    url = metrics_url(check, declared)
    server = check.base("url")
    # Credentials go only where the server itself is.
    same = url.origin == server.origin
    headers = check.request_headers(getattr(check, "token", None)) if same else []
    labels = {
        label: str(getattr(check, option.replace("-", "_")))
        for label, option in declared.labels
        if getattr(check, option.replace("-", "_"), None)
    }
    what = declared.watch.narrowed(**labels)
    key = f"{check.name}|{url.shown}|{sorted(labels.items())}"
    try:
        verdict = watch(
            what,
            url,
            clock=clock,
            stall=check.stall,
            headers=headers,
            insecure=bool(getattr(check, "insecure", False)),
            key=key,
        )
    except CheckFailed as exc:
        raise CheckFailed(exc.message + _hint(check, declared, url, exc), **exc.details) from None
    check.notes["progress"] = verdict.figures
    if not verdict.ok:
        raise CheckFailed(verdict.message)
    return verdict.message


def _hint(check: ServerCheck, declared: ServerMetrics, url: Url, exc: CheckFailed) -> str:
    if "HTTP 404" in exc.message and declared.missing:
        return f" ({declared.missing})"
    if exc.details.get("phase") == "connect" and getattr(check, "metrics_url", None) is None:
        default = url.authority()
        return f" ({default} is {check.server}'s metrics default; metrics-url= sets another)"
    return ""
