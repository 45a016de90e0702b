"""``--format prometheus``: the text exposition format (version 0.0.4).

Labels are ``check`` (the check's type) and ``name`` (the occurrence), never
``instance`` or ``job``, which Prometheus sets itself when it scrapes. Meant
for node_exporter's textfile collector or any scraper of a file.
"""

from __future__ import annotations

from typing import TextIO

from ..base import Status
from ..results import Report

__all__ = ["render_prometheus"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def render_prometheus(report: Report, fp: TextIO) -> None:
    lines = [
        "# HELP torchprobe_up Whether the whole run was healthy (1) or not (0).",
        "# TYPE torchprobe_up gauge",
        f"torchprobe_up {1 if report.healthy else 0}",
        "# HELP torchprobe_info The torchprobe version that produced these figures.",
        "# TYPE torchprobe_info gauge",
        f"torchprobe_info{_labels(version=report.version)} 1",
        "# HELP torchprobe_run_duration_seconds Wall time of the whole run.",
        "# TYPE torchprobe_run_duration_seconds gauge",
        f"torchprobe_run_duration_seconds {report.duration:.6f}",
        "# HELP torchprobe_check_up Whether a check passed (1) or failed (0); "
        "skipped checks are absent.",
        "# TYPE torchprobe_check_up gauge",
    ]
    for r in report.results:
        if r.status is not Status.SKIP:
            up = 1 if r.status is Status.PASS else 0
            lines.append(f"torchprobe_check_up{_labels(check=r.check, name=r.name)} {up}")
    lines += [
        "# HELP torchprobe_check_status The status of each check, one series per status.",
        "# TYPE torchprobe_check_status gauge",
    ]
    for r in report.results:
        for status in Status:
            value = 1 if r.status is status else 0
            labels = _labels(check=r.check, name=r.name, status=status.value)
            lines.append(f"torchprobe_check_status{labels} {value}")
    lines += [
        "# HELP torchprobe_check_duration_seconds Wall time of each check.",
        "# TYPE torchprobe_check_duration_seconds gauge",
    ]
    for r in report.results:
        labels = _labels(check=r.check, name=r.name)
        lines.append(f"torchprobe_check_duration_seconds{labels} {r.duration:.6f}")
    lines += _progress(report)
    fp.write("\n".join(lines) + "\n")


def _progress(report: Report) -> list[str]:
    """The figures of stall= and the progress check, where a check has them."""
    figures = [(r, r.details.get("progress")) for r in report.results]
    shown = [(r, f) for r, f in figures if isinstance(f, dict) and "pending" in f]
    if not shown:
        return []
    lines = [
        "# HELP torchprobe_progress_pending Work pending in the server's metrics (stall=).",
        "# TYPE torchprobe_progress_pending gauge",
    ]
    lines += [f"torchprobe_progress_pending{_labels(check=r.check, name=r.name)} "
              f"{float(f['pending']):g}" for r, f in shown]  # fmt: skip
    lines += [
        "# HELP torchprobe_progress_seconds_since Seconds since a done counter last moved.",
        "# TYPE torchprobe_progress_seconds_since gauge",
    ]
    lines += [f"torchprobe_progress_seconds_since{_labels(check=r.check, name=r.name)} "
              f"{float(f.get('seconds_since_progress', 0.0)):g}" for r, f in shown]  # fmt: skip
    return lines
