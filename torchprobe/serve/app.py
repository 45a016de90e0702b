"""What the sidecar answers: each endpoint rendered from the last verdicts.

``/live`` and ``/ready``: 200 when the set's last round was healthy, 503
when not; before its first round ``/live`` answers 200 (a sidecar starting
up is no reason to restart the server) and ``/ready`` 503. ``/healthz``: the
sidecar's own liveness, 503 when no round of the live set (or of the ready
set, with no ``--live``) ended within 3 intervals. ``/metrics``: the families
of ``--format prometheus`` for each set, every series labelled ``probe``,
and the sidecar's own figures.

With the Xid watch (:mod:`torchprobe.serve.xid`), a critical GPU event on a
watched GPU makes ``/live`` and ``/ready`` answer 503 naming it from then on
(as the in-process monitor does: a GPU that needs a reset or a drain is not
made whole by restarting the server; a new pod starts clean); ``/metrics``
counts every event as ``torchprobe_gpu_xid_events_total{gpu,xid}``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from torchprobe import __version__
from torchprobe.base import Status
from torchprobe.common.jsonout import dumps
from torchprobe.common.scrub import clean
from torchprobe.renderers.prometheus import header, label_set, render_prometheus, sample
from torchprobe.serve.http import Answer
from torchprobe.serve.rounds import Rounds
from torchprobe.serve.xid import XidHost

__all__ = ["Sidecar", "labelled"]

#: /healthz fails when no round ended within this many intervals.
STALE_INTERVALS = 3
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
#: Every state of the Xid watch, as its state series lists them.
WATCH_STATES = ("starting", "watching", "stalled", "unsupported", "failed")


class Sidecar:
    """The sets' rounds (either may be absent) and the answers made from them."""

    def __init__(self, live: Rounds | None, ready: Rounds | None, interval: float,
                 xid: XidHost | None = None) -> None:  # fmt: skip
        self.sets = {name: r for name, r in (("live", live), ("ready", ready)) if r is not None}
        self.interval = interval
        self.started = time.monotonic()
        self.xid = xid

    def route(self, method: str, path: str) -> Answer:
        if path in ("/live", "/ready"):
            return self.verdict(path[1:])
        if path == "/healthz":
            return self.healthz()
        if path == "/metrics":
            return 200, _PROMETHEUS, clean(self.metrics()).encode()
        if path == "/":
            return 200, _TEXT, self.index().encode()
        return 404, _TEXT, b"not found: /live, /ready, /healthz, /metrics\n"

    def verdict(self, probe: str) -> Answer:
        rounds = self.sets.get(probe)
        if rounds is None:
            return 404, _TEXT, f"no --{probe} checks configured\n".encode()
        last = rounds.last
        now = time.monotonic()
        body: dict[str, object] = {"probe": probe, "rounds": rounds.rounds}
        if last is None:
            code = 200 if probe == "live" else 503
            body.update(healthy=None, verdict="no verdict yet",
                        waiting_seconds=round(now - rounds.started, 3))  # fmt: skip
        else:
            report = last.report
            code = 200 if report.healthy else 503
            body.update(
                healthy=report.healthy,
                verdict="healthy" if report.healthy else "unhealthy",
                age_seconds=round(now - last.ended, 3),
                round_duration_seconds=round(last.duration, 3),
                checks=[{"name": r.name, "check": r.check, "status": r.status.value,
                         "message": r.message, "reason": r.reason}
                        for r in report.results],
            )  # fmt: skip
        if self.xid is not None:
            critical = self.xid.reasons()
            body["xid"] = {"state": self.xid.state(), "critical": critical}
            if critical:
                code = 503
                body.update(healthy=False, verdict="unhealthy")
        return code, _JSON, (dumps(body) + "\n").encode()

    def healthz(self) -> Answer:
        rounds = self.sets.get("live") or self.sets["ready"]
        last = rounds.last
        now = time.monotonic()
        since = now - (last.ended if last is not None else self.started)
        limit = STALE_INTERVALS * self.interval
        ok = since <= limit
        body = {"healthy": ok, "probe": rounds.probe, "seconds_since_round": round(since, 3),
                "limit_seconds": limit}  # fmt: skip
        return (200 if ok else 503), _JSON, (dumps(body) + "\n").encode()

    def metrics(self) -> str:
        families: dict[str, list[str]] = {}
        samples: dict[str, list[str]] = {}
        now = time.monotonic()
        for probe, rounds in self.sets.items():
            last = rounds.last
            if last is None:
                continue
            out = io.StringIO()
            render_prometheus(last.report, out)
            for family, heads, lines in _families(out.getvalue()):
                families.setdefault(family, heads)
                samples.setdefault(family, []).extend(labelled(line, probe) for line in lines)
        text: list[str] = []
        for family, heads in families.items():
            text += heads + samples[family]

        def duration(r: Rounds) -> float | None:
            return r.last.duration if r.last else None

        def age(r: Rounds) -> float | None:
            return now - r.last.ended if r.last else None

        def total(r: Rounds) -> float | None:
            return float(r.rounds)

        def stamp(r: Rounds) -> float | None:
            return r.last.ended_wall if r.last else None

        own: list[tuple[str, str, str, Callable[[Rounds], float | None]]] = [
            ("torchprobe_serve_round_duration_seconds", "Wall time of the set's last round.",
             "gauge", duration),
            ("torchprobe_serve_verdict_age_seconds", "Seconds since the set's last round ended.",
             "gauge", age),
            ("torchprobe_serve_rounds_total", "Rounds of the set finished since the start.",
             "counter", total),
            ("torchprobe_serve_last_round_timestamp_seconds",
             "When the set's last round ended (Unix time).", "gauge", stamp),
        ]  # fmt: skip
        for name, help_text, kind, value in own:
            text += header(name, help_text, kind)
            for probe, rounds in self.sets.items():
                figure = value(rounds)
                if figure is not None:
                    text.append(f'{name}{{probe="{probe}"}} {sample(round(figure, 6))}')
        if self.xid is not None:
            text += self._xid_metrics(self.xid)
        return "\n".join(text) + "\n"

    @staticmethod
    def _xid_metrics(xid: XidHost) -> list[str]:
        # The monitor's family (integrations/metrics), so one alert rule and one
        # dashboard panel serve both.
        name = "torchprobe_gpu_xid_events_total"
        text = header(name, "GPU events (Xid, or double_bit_ecc, single_bit_ecc, gpu_lost) "
                      "on the watched GPUs since the sidecar started.", "counter")  # fmt: skip
        text += [f"{name}{label_set([('gpu', gpu), ('xid', label)])} {count}"
                 for gpu, label, count in xid.counts()]  # fmt: skip
        state = xid.state()
        name = "torchprobe_serve_xid_watch_state"
        text += header(name, "The Xid watch's state: 1 for the current one.", "gauge")
        text += [f'{name}{{state="{s}"}} {int(s == state)}' for s in WATCH_STATES]
        return text

    def index(self) -> str:
        lines = [f"torchprobe {__version__} serve: checks every {self.interval:g}s", ""]
        for probe, rounds in self.sets.items():
            last = rounds.last
            state = "no verdict yet" if last is None else (
                "healthy" if last.report.healthy else
                "unhealthy: " + ", ".join(r.name for r in last.report.results
                                          if r.status is Status.FAIL))  # fmt: skip
            lines.append(f"/{probe}: {state}  ({' '.join(rounds.tokens)})")
        if self.xid is not None:
            doc = self.xid.document()
            gpus = ", ".join(doc["gpus"]) or "every GPU NVML shows"
            note = f": {doc['note']}" if doc["note"] else ""
            lines.append(f"xid watch: {doc['state']} ({gpus}){note}")
            lines += [f"  {reason}" for reason in self.xid.reasons()]
        lines += ["/healthz: the sidecar's own liveness", "/metrics: Prometheus text", ""]
        return clean("\n".join(lines))


def _families(text: str) -> list[tuple[str, list[str], list[str]]]:
    """The exposition split into families: name, HELP/TYPE lines, samples."""
    found: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            found.append((line.split(" ", 3)[2], [line], []))
        elif line.startswith("#"):
            found[-1][1].append(line)
        elif line:
            found[-1][2].append(line)
    return found


def labelled(line: str, probe: str) -> str:
    """A sample line with ``probe="..."`` first among its labels."""
    cut = next((i for i, ch in enumerate(line) if ch in "{ "), len(line))
    name, rest = line[:cut], line[cut:]
    if rest.startswith("{"):
        return f'{name}{{probe="{probe}",{rest[1:]}'
    return f'{name}{{probe="{probe}"}}{rest}'
