"""What the adapters answer, whatever the framework: the JSON of ``/health``
and ``/ready``, and the Prometheus text of ``/metrics``.

Every answer reads :meth:`Monitor.state`, the cached state: no check runs in a
request's path, so an answer costs microseconds and a slow GPU never makes a
probe time out. prometheus_client is optional and imported lazily, here only:
with it a :class:`MonitorCollector` in the app's registry reads the state at
scrape time and ``/metrics`` serves the whole registry; without it the same
series are rendered by hand.

With several worker processes (gunicorn ``--workers N``) a scrape reaches one
at random. ``aggregate=True`` makes it read every live worker's ``<pid>.json``
in the monitor's status directory and label each series with ``pid``, so any
worker reports them all. It is off by default because the default status
directory is shared by every monitored process on the host; give the monitor
a ``status_dir`` of its own when you turn it on.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from torchprobe import __version__
from torchprobe.common.jsonout import dumps
from torchprobe.common.safeio import STATUS_FILE_CAP, read_regular
from torchprobe.common.status_doc import StatusDocument
from torchprobe.common.statusdir import pid_alive
from torchprobe.renderers.prometheus import header, label_set, sample
from torchprobe.results import distinct_names

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector as _CollectorBase
    from prometheus_client.registry import CollectorRegistry

    from torchprobe.inprocess.monitor import Monitor
else:  # prometheus_client's registry duck-types its collectors
    _CollectorBase = object

__all__ = [
    "Answer",
    "Endpoints",
    "MonitorCollector",
    "families",
    "health_document",
    "register",
    "render_metrics_text",
]

JSON_TYPE = "application/json"
#: What the hand-written exposition is: the classic text format.
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Kind = Literal["live", "ready"]


class Answer(NamedTuple):
    """One response, framework-neutral."""

    status: int
    body: bytes
    content_type: str


class Family(NamedTuple):
    """One gauge or counter and its samples: what both exposition paths render."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]]
    #: "gauge", or "counter": its sample is NAME_total.
    kind: str = "gauge"


#: The counters among the families (every other one is a gauge).
COUNTERS = frozenset({"torchprobe_requests_completed", "torchprobe_gpu_xid_events"})


# fmt: off
_SPECS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("torchprobe_info", "The torchprobe version of the serving process.", ("version",)),
    ("torchprobe_live", "Whether the serving process is live (1) or not (0), as /health says.", ()),
    ("torchprobe_ready", "Whether the serving process is ready (1) or not (0), as /ready says.",
     ()),
    ("torchprobe_sticky_error", "1 after a sticky CUDA error: only a restart of the process helps.",
     ()),
    ("torchprobe_check_up", "Whether a periodic check passed (1) or failed (0) in its last round; "
     "skipped checks are absent.", ("check", "name")),
    ("torchprobe_check_duration_seconds", "Wall time of each periodic check in its last round.",
     ("check", "name")),
    ("torchprobe_requests_in_flight", "Requests in flight inside monitor.guard().", ()),
    ("torchprobe_requests_completed", "Requests that left monitor.guard() (returned or raised) "
     "in this process.", ()),
    ("torchprobe_oldest_request_seconds", "Age of the oldest request in flight (0 when none).", ()),
    ("torchprobe_event_loop_lag_seconds", "Lag of the event loop; absent when not tracked.", ()),
    ("torchprobe_state_age_seconds", "Seconds since the state was taken: a worker whose monitor "
     "stopped writing its status file grows old.", ()),
    ("torchprobe_gpu_memory_used_bytes", "GPU memory in use on the app's device.",
     ("device", "name")),
    ("torchprobe_gpu_memory_total_bytes", "GPU memory of the app's device.", ("device", "name")),
    ("torchprobe_gpu_xid_events", "GPU events (Xid, or double_bit_ecc, single_bit_ecc, gpu_lost) "
     "on the app's GPUs since its monitor started.", ("gpu", "xid")),
)
# fmt: on


def health_document(state: StatusDocument, kind: Kind) -> tuple[int, dict[str, Any]]:
    """The status code and JSON document of ``/health`` (``kind="live"``) or ``/ready``.

    ``status`` tells the two ways of failing ``/ready`` apart: ``not_ready``
    (live, model not loaded: wait) and ``unhealthy`` (restart).
    """
    live, ready = bool(state["live"]), bool(state["ready"])
    ok = live if kind == "live" else ready
    checks = state.get("checks") or []
    return (200 if ok else 503), {
        "status": "ok" if ok else ("unhealthy" if not live else "not_ready"),
        "live": live,
        "ready": ready,
        "reasons": list(state["reasons"][kind]),
        "lifecycle": state.get("lifecycle"),
        "sticky": state.get("sticky"),
        "failed_checks": [
            {"check": c.get("check"), "name": c.get("name"), "message": c.get("message")}
            for c in checks
            if c.get("status") == "fail"
        ],
        "busy": state.get("busy"),
        "gpu": state.get("gpu"),
        "xid": state.get("xid"),
        "last_round": state.get("last_round"),
        "pid": os.getpid(),  # the process that answered, not the one that wrote the state
        "torchprobe_version": __version__,
    }


def families(states: Sequence[Mapping[str, Any]], by_pid: bool) -> list[Family]:
    """The gauges for one or several workers' states (``by_pid``: label with ``pid``).
    Another worker's state is the JSON of its status file (see :func:`gather`),
    not a :class:`StatusDocument` this process built: it is read with ``.get``."""
    out = {name: Family(name, text, (("pid",) if by_pid else ()) + labels, [],
                        "counter" if name in COUNTERS else "gauge")
           for name, text, labels in _SPECS}  # fmt: skip
    now = time.time()
    for state in states:
        pid = (str(state.get("pid")),) if by_pid else ()

        def add(name: str, value: float, *labels: str, pid: tuple[str, ...] = pid) -> None:
            out[name].samples.append((pid + labels, float(value)))

        add("torchprobe_info", 1, str(state.get("torchprobe_version", "")))
        add("torchprobe_live", bool(state.get("live")))
        add("torchprobe_ready", bool(state.get("ready")))
        add("torchprobe_sticky_error", state.get("sticky") is not None)
        checks = state.get("checks") or []
        # One series each, even where a status file names two checks alike.
        shown = distinct_names([(str(c.get("check")), str(c.get("name"))) for c in checks])
        for check, name in zip(checks, shown, strict=True):
            names = (str(check.get("check")), name)
            if check.get("status") in ("pass", "fail"):
                add("torchprobe_check_up", check["status"] == "pass", *names)
            add("torchprobe_check_duration_seconds", check.get("duration") or 0.0, *names)
        busy = state.get("busy") or {}
        add("torchprobe_requests_in_flight", busy.get("in_flight") or 0)
        add("torchprobe_requests_completed", busy.get("completed") or 0)
        add("torchprobe_oldest_request_seconds", busy.get("oldest_seconds") or 0.0)
        if busy.get("loop_lag_seconds") is not None:
            add("torchprobe_event_loop_lag_seconds", busy["loop_lag_seconds"])
        add("torchprobe_state_age_seconds", max(0.0, now - (state.get("updated") or now)))
        gpu = state.get("gpu")
        if gpu:
            where = (str(gpu.get("device") or ""), str(gpu.get("name") or ""))
            add("torchprobe_gpu_memory_used_bytes", gpu.get("memory_used") or 0, *where)
            add("torchprobe_gpu_memory_total_bytes", gpu.get("memory_total") or 0, *where)
        xid = state.get("xid")
        counts = xid.get("counts") if isinstance(xid, dict) else None
        for count in counts if isinstance(counts, list) else []:
            number = count.get("count") if isinstance(count, dict) else None
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                continue  # another worker's file, damaged: the status-file check says so
            add("torchprobe_gpu_xid_events", number, str(count.get("gpu")), str(count.get("xid")))
    return list(out.values())


def render_metrics_text(fams: Iterable[Family]) -> str:
    """The text exposition format by hand, for when prometheus_client is absent."""
    lines: list[str] = []
    for fam in fams:
        # A counter's sample is NAME_total, and its TYPE line names it so, as
        # prometheus_client writes the text format.
        name = f"{fam.name}_total" if fam.kind == "counter" else fam.name
        lines += header(name, fam.help, fam.kind)
        for values, value in fam.samples:
            pairs = list(zip(fam.labels, values, strict=True))
            labels = label_set(pairs) if pairs else ""
            lines.append(f"{name}{labels} {sample(value)}")
    return "\n".join(lines) + "\n"


def gather(monitor: Monitor, aggregate: bool) -> list[Mapping[str, Any]]:
    """This worker's state, and with ``aggregate`` every other live worker's
    status file from the monitor's status directory (none when it has none)."""
    own = monitor.state()
    directory = monitor.status_dir
    if not aggregate or not directory:
        return [own]
    others: list[Mapping[str, Any]] = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        entries = []
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if ext != ".json" or not stem.isdigit() or int(stem) == own["pid"]:
            continue
        try:
            doc = json.loads(read_regular(os.path.join(directory, entry), STATUS_FILE_CAP))
        except (OSError, ValueError):
            continue  # vanished or unreadable: the status-file check reports those
        # A file left by an exited worker describes nothing that still serves.
        if (
            isinstance(doc, dict)
            and doc.get("pid") == int(stem)
            and pid_alive(int(stem), doc.get("pid_start"))
        ):
            others.append(doc)
    return [own, *others]


class MonitorCollector(_CollectorBase):
    """A prometheus_client collector that reads the monitor's state at scrape time."""

    def __init__(self, monitor: Monitor, aggregate: bool = False) -> None:
        self.monitor = monitor
        self.aggregate = aggregate

    def _metrics(self, fams: Iterable[Family]) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        out: list[Metric] = []
        for fam in fams:
            kind = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            family = kind(fam.name, fam.help, labels=fam.labels)
            for values, value in fam.samples:
                family.add_metric(list(values), value)
            out.append(family)
        return out

    def describe(self) -> list[Metric]:
        # Lets the registry check names without calling collect(), which would
        # start the monitor (and its checks) in whatever process registers.
        return self._metrics(families([], self.aggregate))

    def collect(self) -> list[Metric]:
        return self._metrics(families(gather(self.monitor, self.aggregate), self.aggregate))


_registered: list[tuple[CollectorRegistry, MonitorCollector]] = []
_registering = threading.Lock()


def register(
    monitor: Monitor, registry: CollectorRegistry | None = None, aggregate: bool = False
) -> MonitorCollector:
    """Register the monitor's gauges in ``registry`` (default: prometheus_client's
    ``REGISTRY``) once, for apps that already serve their own ``/metrics``.

    Registering the same monitor again (two adapters in one app) returns the
    collector already there; ``aggregate`` then holds if either asked for it.
    """
    import prometheus_client

    target = registry if registry is not None else prometheus_client.REGISTRY
    with _registering:
        for known, collector in _registered:
            if known is target and collector.monitor is monitor:
                collector.aggregate = collector.aggregate or aggregate
                return collector
        collector = MonitorCollector(monitor, aggregate)
        target.register(collector)
        _registered.append((target, collector))
    return collector


def check_paths(*paths: str | None) -> None:
    """Reject a path that cannot be routed, before the app serves anything."""
    given = [p for p in paths if p is not None]
    for path in given:
        if not path.startswith("/"):
            raise ValueError(f"endpoint path {path!r} must start with '/' (or be None)")
    if len(set(given)) != len(given):
        raise ValueError(f"endpoint paths must differ: {given}")


class Endpoints:
    """The answers of one app's three endpoints."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        metrics: bool = True,
        registry: CollectorRegistry | None = None,
        aggregate: bool = False,
    ) -> None:
        self.monitor = monitor
        self.aggregate = aggregate
        self.registry: CollectorRegistry | None = None
        if metrics:
            try:
                import prometheus_client
            except ImportError:
                if registry is not None:
                    raise
            else:
                self.registry = registry if registry is not None else prometheus_client.REGISTRY
                register(monitor, self.registry, aggregate)

    def health(self) -> Answer:
        return self._answer("live")

    def ready(self) -> Answer:
        return self._answer("ready")

    def _answer(self, kind: Kind) -> Answer:
        status, document = health_document(self.monitor.state(), kind)
        body = dumps(document, separators=(",", ":")) + "\n"
        return Answer(status, body.encode(), JSON_TYPE)

    def metrics(self, accept: str | None = None) -> Answer:
        """The registry in the format ``accept`` asks for (OpenMetrics or text)."""
        if self.registry is None:
            text = render_metrics_text(
                families(gather(self.monitor, self.aggregate), self.aggregate)
            )
            return Answer(200, text.encode(), TEXT_TYPE)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return Answer(200, encoder(self.registry), content_type)
