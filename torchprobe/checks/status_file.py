"""``status-file``: the serving processes' own verdicts, from their status files.

Each process that runs the in-process monitor writes ``<pid>.json`` to the
status directory every interval. This check reads them all — no HTTP, no
torch — and passes only when every live worker's file is fresh and says
healthy. A frozen or deadlocked process stops refreshing its file and fails
as stale; a poisoned CUDA context says so itself; a worker that died is seen
for a grace period before its file is forgotten, so a crash is not missed.
With several workers (gunicorn ``--workers 4``) one bad worker fails the
check, where an HTTP request would reach a random worker and flap.

What the monitor writes is :class:`torchprobe.common.status_doc.StatusDocument`;
what this reads is whatever is in the directory, so each field it uses is
checked here as it is read, never assumed to have that type.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, failed, passed
from torchprobe.common.safeio import STATUS_FILE_CAP, read_regular
from torchprobe.common.statusdir import default_status_dir, pid_alive
from torchprobe.options import choice, duration, text

__all__ = ["FUTURE_SKEW", "StatusFileCheck"]

#: How far ahead of this clock a file's ``updated`` may be. The monitor and
#: this check read the same kernel clock when they share a host (a pod's
#: containers do), so only a file on a network share written by another
#: host's clock can be ahead at all; a few seconds covers an NTP-kept clock.
#: A file further ahead would otherwise look fresh until that time comes.
FUTURE_SKEW = 5.0


class StatusFileCheck(Check):
    name = "status-file"
    description = "the in-process monitor's status files are fresh and say healthy"
    options = (
        Option("path", text, default=None,
               help="status directory or one file; default $TORCHPROBE_STATUS_DIR, "
                    "else /run/torchprobe, else <tempdir>/torchprobe"),
        Option("mode", choice("live", "ready"), default="live",
               help="live: can still do GPU work; ready: live and the model is loaded"),
        Option("max-age", duration, default=None,
               help="oldest acceptable file; default three times the interval it records"),
        Option("grace", duration, default=None,
               help="how long the file of an exited process still counts; default max-age"),
    )  # fmt: skip
    timeout = 3.0
    worker = None  # reads small files: nothing here can block holding the GIL

    path: str | None
    mode: str
    max_age: float | None
    grace: float | None

    def checks_readiness(self) -> bool:
        return self.mode == "ready"

    def run(self) -> Outcome:
        where = self.path or default_status_dir()
        files = self._files(where)
        now = time.time()
        seen: list[dict[str, Any]] = []
        problems: list[str] = []
        for path in files:
            entry, problem = self._judge(path, now)
            if entry is not None:
                seen.append(entry)
            if problem:
                problems.append(problem)
        details: dict[str, Any] = {"path": where, "mode": self.mode, "workers": seen}
        counted = [w for w in seen if not w.get("forgotten")]
        if not counted and not problems:
            raise CheckFailed(
                f"no status file of a running process in {where}: is the in-process monitor "
                "running there (and TORCHPROBE_STATUS_DIR the same for both)?",
                **details,
            )
        healthy = sum(1 for w in counted if w["ok"])
        summary = f"{len(counted)} worker(s), {healthy} {self.mode}"
        if problems:
            return failed(f"{summary}; " + "; ".join(problems), **details)
        return passed(f"{summary} (pid {', '.join(str(w['pid']) for w in counted)})", **details)

    def _files(self, where: str) -> list[str]:
        if os.path.lexists(where) and not os.path.isdir(where):
            return [where]  # a file (a FIFO or device there is refused when read)
        if not os.path.isdir(where):
            raise CheckFailed(f"status directory {where} does not exist: the in-process monitor "
                              "has written nothing there")  # fmt: skip
        try:
            names = sorted(os.listdir(where))
        except OSError as exc:
            raise CheckFailed(f"cannot read {where}: {exc.strerror}") from None
        return [os.path.join(where, n) for n in names if n.endswith(".json")]

    def _judge(self, path: str, now: float) -> tuple[dict[str, Any] | None, str | None]:
        try:
            doc = json.loads(read_regular(path, STATUS_FILE_CAP))
            pid = int(doc["pid"])
            updated = float(doc["updated"])
            interval = float(doc.get("interval") or 10.0)
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
            if isinstance(exc, FileNotFoundError):
                return None, None  # its process removed it on a clean exit
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return None, f"{os.path.basename(path)}: unreadable ({why})"
        name = os.path.basename(path)
        if not math.isfinite(updated):
            return None, f"{name}: 'updated' is not a time ({doc['updated']!r})"
        if not math.isfinite(interval) or interval <= 0:
            return None, f"{name}: 'interval' is not a positive number of seconds ({interval!r})"
        if updated > now + FUTURE_SKEW:
            return None, (f"{name}: written {updated - now:.0f}s in the future (more than the "
                          f"{FUTURE_SKEW:g}s two clocks may differ): its clock is wrong, or the "
                          "file was not written by the monitor")  # fmt: skip
        age = max(0.0, now - updated)
        max_age = self.max_age or 3 * interval
        grace = self.grace or max_age
        entry: dict[str, Any] = {"pid": pid, "age": round(age, 3), "max_age": max_age,
                                 "live": doc.get("live"), "ready": doc.get("ready")}  # fmt: skip
        if not pid_alive(pid, doc.get("pid_start")):
            if age > grace:
                entry.update(ok=True, forgotten=True)
                return entry, None
            entry.update(ok=False, exited=True)
            return entry, f"pid {pid} exited ({_last_words(doc, self.mode)})"
        if age > max_age:
            entry["ok"] = False
            return entry, (f"pid {pid} stale: last written {age:.0f}s ago (max-age {max_age:g}s): "
                           "frozen, deadlocked, or its monitor stopped")  # fmt: skip
        ok = bool(doc.get(self.mode))
        entry["ok"] = ok
        if not ok:
            return entry, f"pid {pid} not {self.mode}: {_last_words(doc, self.mode)}"
        return entry, None


def _last_words(doc: dict[str, Any], mode: str) -> str:
    reasons = (doc.get("reasons") or {}).get(mode) or []
    if doc.get(mode) and not reasons:
        return f"last said {mode}"
    return "; ".join(str(r) for r in reasons)[:300] or f"last said not {mode}"
