"""``--format json``: one JSON document per run.

Stability policy: ``schema_version`` is an integer. Within one version, keys
are only ever added, never removed, renamed or changed in meaning; a change
that would break a reader bumps it. ``details`` of each check is free-form
per check type and documented with the check. A value JSON cannot hold (a
NaN or infinite float) is ``null``; see :mod:`torchprobe.common.jsonout`.
"""

from __future__ import annotations

from typing import Any, TextIO

from torchprobe.base import Status
from torchprobe.common.jsonout import dumps
from torchprobe.common.scrub import clip
from torchprobe.results import Report

__all__ = ["SCHEMA_VERSION", "render_json", "report_dict"]

SCHEMA_VERSION = 1
#: A message or traceback this long is cut: a probe's output is read by
#: machines that keep only a few KiB of it.
MAX_MESSAGE = 1000
MAX_ERROR = 4000


def report_dict(report: Report, *, verbose: bool = False) -> dict[str, Any]:
    checks = []
    for r in report.results:
        entry: dict[str, Any] = {
            "check": r.check,
            "name": r.name,
            "status": r.status.value,
            "message": clip(r.message, MAX_MESSAGE),
            "duration": round(r.duration, 6),
            "options": r.options,
            "details": r.details,
        }
        if verbose and r.error:
            entry["error"] = clip(r.error, MAX_ERROR, tail=True)
        checks.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "torchprobe_version": report.version,
        "status": "healthy" if report.healthy else "unhealthy",
        "healthy": report.healthy,
        "exit_code": report.exit_code,
        "duration": round(report.duration, 6),
        "rounds": report.rounds,
        "counts": {
            "passed": report.count(Status.PASS),
            "failed": report.count(Status.FAIL),
            "skipped": report.count(Status.SKIP),
        },
        "checks": checks,
    }


def render_json(report: Report, fp: TextIO, *, verbose: bool = False) -> None:
    fp.write(dumps(report_dict(report, verbose=verbose), indent=2) + "\n")
