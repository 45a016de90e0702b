"""Progress across probe runs: is a server that has work doing any of it?

A wedged model server (a hung CUDA kernel, a stuck collective, an engine
process that died behind a live API server) answers its health endpoint
and holds its queue. Its own metrics tell: work-pending gauges stay above
zero while every work-done counter stands still. Each run reads both from
the server's ``/metrics``, compares with the previous run's reading (kept in
a :mod:`~torchprobe.common.progress_state` store) and judges:

- nothing pending: idle, passes;
- a done counter moved since the last reading: progressing, passes;
- the first reading, or a counter went down (the server restarted): passes,
  "first reading; progress is judged from the next run";
- pending at every reading for at least ``stall`` seconds and no done counter
  moved in that time: stalled, fails.

:class:`Watch` declares what to read (a preset's declaration, or the
options of the generic ``progress`` check); :func:`watch` does one run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, passed
from torchprobe.checks import USER_AGENT
from torchprobe.checks.promtext import METRICS_LIMIT, Selector, need_parser, read_series, selectors
from torchprobe.common.deadline import Deadline
from torchprobe.common.progress_state import StateError, StateStore, default_store
from torchprobe.net.http import exchange
from torchprobe.net.url import HeaderOption, Url, UrlOption
from torchprobe.options import boolean, duration

__all__ = ["ProgressCheck", "Reading", "Verdict", "Watch", "judge", "watch"]


@dataclass(frozen=True)
class Watch:
    """What progress means for one server."""

    #: Work-pending gauges, each with how its count is said ("requests running").
    pending: tuple[tuple[Selector, str], ...]
    #: Work-done counters: any of them moving is progress.
    done: tuple[Selector, ...]
    #: What a moving counter is, for "no token generated for 47s".
    unit: str = "done counter moved"
    #: The server creates these series only with its first request (TGI's
    #: metrics-exporter-prometheus, BentoML's labelled children): absent means
    #: idle. Otherwise an absent series fails: a wrong URL or model never passes.
    lazy: bool = False

    def narrowed(self, **labels: str) -> Watch:
        """The same metrics, only the series with these labels (one model's)."""
        if not labels:
            return self
        return Watch(
            tuple((s.where(**labels), said) for s, said in self.pending),
            tuple(s.where(**labels) for s in self.done),
            self.unit,
            self.lazy,
        )


@dataclass
class Reading:
    """One run's view of the metrics."""

    #: How many of each kind are pending, in declaration order.
    pending: list[tuple[str, float]]
    #: Every done series's value, by a key naming its metric and labels.
    done: dict[str, float]

    @property
    def total(self) -> float:
        return sum(n for _, n in self.pending)


@dataclass
class Verdict:
    state: str  # first | idle | progressing | pending | stalled
    message: str
    record: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state != "stalled"


def _counts(reading: Reading) -> str:
    return ", ".join(f"{_number(n)} {said}" for said, n in reading.pending)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _seconds(value: Any) -> float | None:
    """A number from a stored record, or None (a record may be damaged)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def judge(
    previous: dict[str, Any] | None, now: Reading, at: float, stall: float, unit: str
) -> Verdict:
    """The verdict on ``now`` given the previous run's record (None: there is none).

    ``at`` is ``time.monotonic()``: one clock for every process of a boot (Linux's
    CLOCK_MONOTONIC), so a wall-clock step between runs never fakes a stall.
    """
    record: dict[str, Any] = {"at": at, "done": now.done}
    figures: dict[str, Any] = {
        "pending": now.total,
        "pending_by": dict(now.pending),
        "stall_seconds": stall,
    }
    previous = previous if isinstance(previous, dict) else {}
    stored = previous.get("done")
    before = (
        {k: v for k, v in stored.items() if _seconds(v) is not None}
        if isinstance(stored, dict)
        else None
    )
    last = _seconds(previous.get("at"))
    reset = before is not None and any(
        key not in now.done or now.done[key] < value for key, value in before.items()
    )
    if before is None or last is None or reset or at < last:
        # No reading, a restarted server, or a clock that went back (another
        # boot): no interval can be trusted.
        record.update(moved_at=at, busy_since=at if now.total > 0 else None)
        why = " (the counters went down: the server restarted)" if reset else ""
        figures.update(seconds_since_progress=0.0)
        counts = f" ({_counts(now)})" if now.total > 0 else ""
        return Verdict(
            "first",
            f"first reading{counts}{why}; progress is judged from the next run",
            record,
            {**figures, "state": "first"},
        )
    moved_by = sum(max(0.0, v - float(before.get(k, 0.0))) for k, v in now.done.items())
    stored_move = _seconds(previous.get("moved_at"))
    moved_at = at if moved_by > 0 else min(at, stored_move if stored_move is not None else last)
    busy = _seconds(previous.get("busy_since"))
    busy_since = (min(at, busy) if busy is not None else at) if now.total > 0 else None
    record.update(moved_at=moved_at, busy_since=busy_since)
    since = max(0.0, at - moved_at)
    figures.update(seconds_since_progress=round(since, 1), moved_by=moved_by)
    if now.total <= 0:
        state, message = "idle", "idle: nothing pending"
    elif moved_by > 0:
        state, message = "progressing", f"progressing: {_counts(now)}"
    else:
        window = at - max(busy_since if busy_since is not None else at, moved_at)
        state = "stalled" if window >= stall else "pending"
        message = f"{state}: {_counts(now)}, no {unit} for {since:.0f}s (stall={stall:g}s)"
    figures["state"] = state
    return Verdict(state, message, record, figures)


def take_reading(body: bytes, what: Watch) -> Reading:
    """The pending counts and done series of ``what`` in a metrics answer."""
    wanted = [s for s, _ in what.pending] + list(what.done)
    found = read_series(body, wanted)
    missing_pending = all(not found[s] for s, _ in what.pending)
    missing_done = all(not found[s] for s in what.done)
    if (missing_pending or missing_done) and not what.lazy:
        names = [s for s, _ in what.pending] if missing_pending else list(what.done)
        shown = " or ".join(str(s) for s in names)
        raise CheckFailed(f"the metrics show no {shown}")
    by_said: dict[str, float] = {}  # one figure for the names one count goes by
    for s, said in what.pending:
        by_said[said] = by_said.get(said, 0.0) + sum(v for _, v in found[s])
    pending = list(by_said.items())
    done = {
        json.dumps([str(s), [list(pair) for pair in labels]]): value
        for s in what.done
        for labels, value in found[s]
    }
    return Reading(pending, done)


def watch(
    what: Watch,
    url: Url,
    *,
    clock: Deadline,
    stall: float,
    headers: Sequence[tuple[str, str]] = (),
    insecure: bool = False,
    store: StateStore | None = None,
    key: str | None = None,
) -> Verdict:
    """Read ``url`` once and judge it against the stored reading. Raises
    CheckFailed for an unreadable endpoint, unreadable metrics or state."""
    where = f"GET {url.target}"
    try:
        # A mounted metrics app may redirect /metrics to /metrics/ (Starlette's
        # Mount does); the http client keeps credentials off other origins.
        reply = exchange(
            url,
            clock=clock,
            user_agent=USER_AGENT,
            headers=headers,
            insecure=insecure,
            limit=METRICS_LIMIT,
            follow_redirects=True,
        )
    except CheckFailed as exc:
        raise CheckFailed(f"metrics: {where}: {exc.message}", **exc.details) from None
    response = reply.response
    if response.status != 200:
        raise CheckFailed(f"metrics: {where} answered {reply.status_line}")
    if response.truncated:
        raise CheckFailed(
            f"metrics: {where} answered more than {METRICS_LIMIT // (1024 * 1024)} MiB"
        )
    try:
        reading = take_reading(response.body, what)
    except CheckFailed as exc:
        raise CheckFailed(f"metrics: {where}: {exc.message}") from None
    store = store if store is not None else default_store()
    key = key or url.shown
    try:
        with store.hold(key, until=clock.at):
            verdict = judge(store.get(key), reading, time.monotonic(), stall, what.unit)
            store.put(key, verdict.record)
    except StateError as exc:
        raise CheckFailed(str(exc)) from None
    verdict.figures["metrics_url"] = url.shown
    return verdict


# --- the generic check -----------------------------------------------------------------


class ProgressCheck(Check):
    name = "progress"
    description = (
        "a Prometheus endpoint's work-pending gauges and work-done counters: fails when "
        "work was pending for stall= with no counter moving (kept between runs)"
    )
    options = (
        Option("url", UrlOption(("http", "https")), required=True, help="the /metrics URL"),
        Option(
            "pending",
            selectors,
            required=True,
            help='work-pending gauges: name or name{label="v"}, |-separated',
        ),
        Option("done", selectors, required=True, help="work-done counters, |-separated"),
        Option(
            "stall",
            duration,
            required=True,
            help="fail when work was pending this long with no counter moving",
        ),
        Option("header", HeaderOption(), repeatable=True, help="a request header, like curl -H"),
        Option("insecure", boolean, default=False, help="https: skip certificate verification"),
    )
    timeout = 5.0
    worker = None

    url: Url
    pending: tuple[Selector, ...]
    done: tuple[Selector, ...]
    stall: float
    header: list[tuple[str, str]]
    insecure: bool

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        need_parser("check 'progress'")

    def setup(self) -> None:
        import socket  # noqa: F401

        if self.url.scheme == "https":
            import ssl  # noqa: F401
        import prometheus_client.parser  # noqa: F401

    def run(self) -> Outcome:
        what = Watch(tuple((s, s.name) for s in self.pending), self.done)
        verdict = watch(
            what,
            self.url,
            clock=self.clock,
            stall=self.stall,
            headers=self.header,
            insecure=self.insecure,
            key=f"progress|{self.url.shown}|{[str(s) for s in (*self.pending, *self.done)]}",
        )
        if not verdict.ok:
            raise CheckFailed(verdict.message, progress=verdict.figures)
        return passed(verdict.message, progress=verdict.figures)


def refuse(check: str, why: str) -> UsageError:
    """The usage error of ``stall=`` on a server whose metrics cannot show progress."""
    return UsageError(
        f"check {check!r}: stall= needs a metric of pending work, and {why}; "
        "infer= (one real inference under the timeout) catches a wedged model instead"
    )
