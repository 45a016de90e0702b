"""The table, the JSON document and the exit status, all from the same targets."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .harness import MISSED, NOT_MEASURED, OK, REPO, REPORT, Settings, Target

SCHEMA_VERSION = 1
_HEADER = ("target", "torchprobe", "baseline", "ratio", "target", "ok")
_WIDTHS = (34, 12, 12, 7, 9)


def value(figure: float | None, unit: str) -> str:
    if figure is None:
        return "—"
    if unit == "s":
        return f"{figure:.3f} s"
    if unit == "modules":
        return "none" if figure == 0 else f"{figure:g}"
    return f"{figure:.2f} {unit}" if unit in ("ms", "%") else f"{figure:.1f} {unit}"


def limit(t: Target) -> str:
    if t.limit is None or t.kind == REPORT:
        return "—"
    if t.kind == "ratio":
        return f"≤ {t.limit:.2f}"
    return "none" if t.unit == "modules" else f"≤ {t.limit:g} {t.unit}".replace(" %", "%")


def _cells(t: Target) -> tuple[str, ...]:
    verdict = {OK: "yes", MISSED: "NO", REPORT: "—", NOT_MEASURED: "not measured"}[t.status]
    ratio = "—" if t.ratio is None else f"{t.ratio:.2f}"
    return (
        t.title,
        value(t.torchprobe, t.unit),
        value(t.baseline, t.unit),
        ratio,
        limit(t),
        verdict,
    )


def table(targets: list[Target]) -> str:
    lines = ["".join(c.ljust(w) for c, w in zip(_HEADER, _WIDTHS, strict=False)) + _HEADER[-1]]
    for t in targets:
        cells = _cells(t)
        lines.append("".join(c.ljust(w) for c, w in zip(cells, _WIDTHS, strict=False)) + cells[-1])
    lines.append("")
    lines.extend(f"- {t.title}: {t.note}" for t in targets if t.note)
    return "\n".join(lines)


def markdown(targets: list[Target]) -> str:
    rows = ["| " + " | ".join(_HEADER) + " |", "|" + " --- |" * len(_HEADER)]
    rows += ["| " + " | ".join(_cells(t)) + " |" for t in targets]
    return "\n".join(rows) + "\n"


def exit_code(targets: list[Target]) -> int:
    """1 when a target was missed, else 0 (report-only and unmeasured rows pass)."""
    return 1 if any(t.status == MISSED for t in targets) else 0


def machine() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "versions": {
            d: version(d)
            for d in (
                "torchprobe",
                "torch",
                "click",
                "nvidia-ml-py",
                "flask",
                "gunicorn",
                "matplotlib",
            )
        },
        "git": _git(),
    }


def _git() -> dict[str, Any]:
    """The commit measured, and whether torchprobe's sources differ from it:
    someone may be editing them while the suite runs."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "torchprobe"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "torchprobe_modified": None}
    return {"commit": head or None, "torchprobe_modified": bool(dirty)}


def document(
    targets: list[Target], settings: Settings, meta: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    meta = dict(meta, loadavg_at_end=os.getloadavg())
    return {
        "schema_version": SCHEMA_VERSION,
        "quick": settings.quick,
        "settings": dataclasses.asdict(settings),
        "machine": meta,
        "seconds_per_group": {k: round(v, 1) for k, v in timings.items()},
        "ok": exit_code(targets) == 0,
        "missed": [t.id for t in targets if t.status == MISSED],
        "targets": [t.as_dict() for t in targets],
    }


def write(path: Path, doc: dict[str, Any], targets: list[Target]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(markdown(targets))
