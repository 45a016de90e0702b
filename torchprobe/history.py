"""Results that outlive the probe: a JSON-lines log and a Prometheus textfile.

Docker keeps the last five probe outputs, Kubernetes less; a post-mortem
starts from the history. Writing here never changes a run's verdict: a
failure (read-only file system, full disk, missing directory, no permission)
is one line on stderr and the probe's result stands.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Callable

from .jsonout import dumps
from .results import Report
from .scrub import clean, clip

__all__ = ["LOG_KEEP", "LOG_MAX_BYTES", "append_event", "append_log", "write_textfile"]

#: The log rotates at this size: FILE, FILE.1, FILE.2 are kept.
LOG_MAX_BYTES = 1024 * 1024
LOG_KEEP = 3


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _line(report: Report) -> str:
    record = {
        "time": _now(),
        "status": "healthy" if report.healthy else "unhealthy",
        "duration": round(report.duration, 6),
        "rounds": report.rounds,
        "checks": [
            {"check": r.check, "name": r.name, "status": r.status.value,
             "message": clip(r.message, 500), "duration": round(r.duration, 6)}
            for r in report.results
        ],
    }  # fmt: skip
    return dumps(record) + "\n"


def append_log(path: str, report: Report, note: Callable[[str], None]) -> None:
    """Append one line for this run; rotate by size."""
    _append(path, _line(report), note)


def append_event(path: str, event: str, message: str, note: Callable[[str], None]) -> None:
    """Append a line for something the probe did (a restart), beside the runs."""
    record = {"time": _now(), "event": event, "message": message}
    _append(path, dumps(record) + "\n", note)


def _append(path: str, text: str, note: Callable[[str], None]) -> None:
    """Overlapping runs take an exclusive lock on the log for the append and
    the rotation."""
    import fcntl

    line = clean(text).encode()  # the edge of this file: no secret past here
    try:
        with open(path, "ab") as fp:
            fcntl.flock(fp.fileno(), fcntl.LOCK_EX)
            if fp.tell() + len(line) > LOG_MAX_BYTES and fp.tell() > 0:
                # Under the lock: the next run re-opens the new, empty file.
                for index in range(LOG_KEEP - 1, 0, -1):
                    older = f"{path}.{index - 1}" if index > 1 else path
                    if os.path.exists(older):
                        os.replace(older, f"{path}.{index}")
                with open(path, "ab") as fresh:
                    fresh.write(line)
                return
            fp.write(line)
    except OSError as exc:
        note(f"torchprobe: cannot write the log {path}: {exc.strerror or exc}")


def write_textfile(path: str, report: Report, note: Callable[[str], None]) -> None:
    """Write the Prometheus exposition atomically, so a collector never reads
    half a file."""
    from .renderers.prometheus import render_prometheus
    from .statusdir import replace_atomically

    buffer = io.StringIO()
    render_prometheus(report, buffer)
    try:
        replace_atomically(path, clean(buffer.getvalue()))
    except OSError as exc:
        note(f"torchprobe: cannot write the Prometheus textfile {path}: {exc.strerror or exc}")
