"""The text report: one line per check, then one summary line.

Docker keeps only 4096 bytes of a probe's output (and appends "..."), so the
whole report never exceeds :data:`LIMIT` bytes, ``-v`` included: details and
tracebacks are cut first, then messages, then passing lines, then failing
ones — the summary line is never dropped.
"""

from __future__ import annotations

import math
from typing import Any, TextIO

from torchprobe.base import Status
from torchprobe.common.scrub import clip
from torchprobe.results import Report, Result

__all__ = ["LIMIT", "render_run_text", "format_text", "format_duration"]

LIMIT = 4096
_TAG = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}

# Successively tighter settings: (message length, detail lines per check,
# traceback lines per check, keep passing/skipped lines).
_LEVELS = (
    (400, 12, 12, True),
    (200, 6, 6, True),
    (200, 0, 3, True),
    (120, 0, 0, True),
    (120, 0, 0, False),
    (60, 0, 0, False),
)


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def _summary(report: Report) -> str:
    passed, failed, skipped = (report.count(s) for s in (Status.PASS, Status.FAIL, Status.SKIP))
    verdict = "healthy" if report.healthy else "UNHEALTHY"
    if not report.healthy and not failed:
        verdict += " (no check passed)"
    rounds = f" after {report.rounds} rounds" if report.rounds > 1 else ""
    return (f"{verdict}: {passed} passed, {failed} failed, {skipped} skipped "
            f"in {format_duration(report.duration)}{rounds}")  # fmt: skip


def _cut(text: str, limit: int) -> str:
    return clip(text, limit, squeeze=True)


def _shown(value: Any) -> Any:
    """A value as a line shows it: a NaN or infinite float (which JSON writes
    as null) says "not a number"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "not a number"
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    return value


def _detail_lines(details: dict[str, Any], options: dict[str, Any]) -> list[str]:
    lines = [f"{k}: {_shown(v)}" for k, v in options.items()]
    lines += [f"{k}: {_shown(v)}" for k, v in details.items()]
    return lines


def _block(r: Result, width: int, level: tuple[int, int, int, bool], verbose: bool) -> list[str]:
    message_len, detail_n, trace_n, _ = level
    head = f"{_TAG[r.status]}  {r.name:<{width}}  {_cut(r.message, message_len)}"
    lines = [f"{head}  ({format_duration(r.duration)})"]
    if verbose:
        extra = _detail_lines(r.details, r.options)[:detail_n]
        lines += ["      " + _cut(line, 160) for line in extra]
        if r.error and r.status is Status.FAIL and trace_n:
            trace = [ln for ln in r.error.rstrip().splitlines() if ln.strip()]
            if len(trace) > trace_n:
                # The first line says what happened (a crash dump's "Fatal
                # Python error"), the last ones where (a traceback's end).
                trace = [trace[0], "…", *trace[len(trace) - trace_n + 2 :]][:trace_n]
            lines += ["      | " + _cut(line, 160) for line in trace]
    return lines


def format_text(report: Report, *, quiet: bool = False, verbose: bool = False,
                limit: int = LIMIT) -> str:  # fmt: skip
    summary = _summary(report)
    shown = [r for r in report.results if not quiet or r.status is Status.FAIL]
    width = min(24, max((len(r.name) for r in shown), default=0))
    text = ""
    for level in _LEVELS:
        keep_others = level[3]
        lines: list[str] = []
        hidden_others = 0
        for r in shown:
            if r.status is not Status.FAIL and not keep_others:
                hidden_others += 1
                continue
            lines += _block(r, width, level, verbose)
        if hidden_others:
            lines.append(f"… {hidden_others} passing or skipped checks not shown")
        text = "\n".join([*lines, summary]) + "\n"
        if len(text.encode()) <= limit:
            return text
    # Still too long: keep as many failing lines as fit, then the summary.
    tail = "\n" + summary + "\n"
    budget = limit - len(tail.encode()) - 128
    kept: list[str] = []
    used = 0
    failing = [r for r in shown if r.status is Status.FAIL]
    for r in failing:
        line = _block(r, width, _LEVELS[-1], False)[0]
        size = len(line.encode()) + 1
        if used + size > budget:
            break
        kept.append(line)
        used += size
    if len(kept) < len(failing):
        kept.append(f"… {len(failing) - len(kept)} more failing checks not shown")
    others = len(shown) - len(failing)
    if others:
        kept.append(f"… {others} passing or skipped checks not shown")
    return "\n".join(kept) + tail


def render_run_text(report: Report, fp: TextIO, *, quiet: bool = False,
                verbose: bool = False) -> None:  # fmt: skip
    fp.write(format_text(report, quiet=quiet, verbose=verbose))
