"""``--format prometheus``: the text exposition format (version 0.0.4).

Labels are ``check`` (the check's type) and ``name`` (the occurrence), never
``instance`` or ``job``, which Prometheus sets itself when it scrapes. Meant
for node_exporter's textfile collector or any scraper of a file.

Every series is written once: both reject a file that repeats one. Results
already have distinct names (see :func:`torchprobe.results.distinct_names`);
a name that a secret's mask makes equal to another gets a ``#N`` here.
"""

from __future__ import annotations

import math
from typing import TextIO

from torchprobe.base import Status
from torchprobe.common.scrub import clean
from torchprobe.results import Report, Result, distinct_names

__all__ = ["escape", "header", "label_set", "render_prometheus", "sample"]


def escape(value: str) -> str:
    """A label value as the text format spells it: ``\\``, ``\\n`` and ``\\"`` escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def header(name: str, text: str, kind: str = "gauge") -> list[str]:
    """A family's ``# HELP`` and ``# TYPE`` lines (``kind``: gauge or counter)."""
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def label_set(pairs: dict[str, str] | list[tuple[str, str]]) -> str:
    """``{k="v",...}`` with each value scrubbed of secrets and escaped."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return "{" + ",".join(f'{k}="{escape(clean(v))}"' for k, v in items) + "}"


def _labels(**labels: str) -> str:
    return label_set(labels)


def sample(value: float) -> str:
    """A sample value as the exposition format spells it (``NaN``, ``+Inf``).

    A figure whose digits happen to spell a secret is written as ``NaN``: the
    mask at the output's edge would otherwise leave ``***`` where a number
    must be."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    shown = str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return shown if clean(shown) == shown else "NaN"


def render_prometheus(report: Report, fp: TextIO) -> None:
    names = distinct_names([(r.check, clean(r.name)) for r in report.results])
    results = list(zip(report.results, names, strict=True))
    lines = [
        *header("torchprobe_up", "Whether the whole run was healthy (1) or not (0)."),
        f"torchprobe_up {1 if report.healthy else 0}",
        *header("torchprobe_info", "The torchprobe version that produced these figures."),
        f"torchprobe_info{_labels(version=report.version)} 1",
        *header("torchprobe_run_duration_seconds", "Wall time of the whole run."),
        f"torchprobe_run_duration_seconds {sample(round(report.duration, 6))}",
        *header("torchprobe_check_up",
                "Whether a check passed (1) or failed (0); skipped checks are absent."),
    ]  # fmt: skip
    for r, name in results:
        if r.status is not Status.SKIP:
            up = 1 if r.status is Status.PASS else 0
            lines.append(f"torchprobe_check_up{_labels(check=r.check, name=name)} {up}")
    lines += header("torchprobe_check_status", "The status of each check, one series per status.")
    for r, name in results:
        for status in Status:
            value = 1 if r.status is status else 0
            labels = _labels(check=r.check, name=name, status=status.value)
            lines.append(f"torchprobe_check_status{labels} {value}")
    lines += header("torchprobe_check_duration_seconds", "Wall time of each check.")
    for r, name in results:
        labels = _labels(check=r.check, name=name)
        lines.append(f"torchprobe_check_duration_seconds{labels} {sample(round(r.duration, 6))}")
    lines += _progress(results)
    fp.write("\n".join(lines) + "\n")


def _progress(results: list[tuple[Result, str]]) -> list[str]:
    """The figures of stall= and the progress check, where a check has them."""
    figures = [(r, name, r.details.get("progress")) for r, name in results]
    shown = [(r, name, f) for r, name, f in figures if isinstance(f, dict) and "pending" in f]
    if not shown:
        return []
    lines = header("torchprobe_progress_pending", "Work pending in the server's metrics (stall=).")
    lines += [f"torchprobe_progress_pending{_labels(check=r.check, name=name)} "
              f"{sample(float(f['pending']))}" for r, name, f in shown]  # fmt: skip
    lines += header("torchprobe_progress_seconds_since", "Seconds since a done counter last moved.")
    lines += [f"torchprobe_progress_seconds_since{_labels(check=r.check, name=name)} "
              f"{sample(float(f.get('seconds_since_progress', 0.0)))}"
              for r, name, f in shown]  # fmt: skip
    return lines
