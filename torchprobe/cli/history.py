"""Results that outlive the probe: a JSON-lines log and a Prometheus textfile.

Docker keeps the last five probe outputs, Kubernetes less; a post-mortem
starts from the history. Writing here never changes a run's verdict: a
failure (read-only file system, full disk, missing directory, no permission)
is one line on stderr and the probe's result stands.
"""

from __future__ import annotations

import datetime
import errno
import io
import os
from collections.abc import Callable

from torchprobe.common.jsonout import dumps
from torchprobe.common.safeio import open_locked, open_own, replace_atomically, write_all
from torchprobe.common.scrub import clean, clip
from torchprobe.results import Report

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


def append_log(path: str, report: Report, note: Callable[[str], None], until: float) -> None:
    """Append one line for this run; rotate by size. ``until`` (a
    ``time.monotonic()`` value, the run's deadline) bounds the wait for the lock."""
    _append(path, _line(report), note, until)


def append_event(path: str, event: str, message: str, note: Callable[[str], None],
                 until: float) -> None:  # fmt: skip
    """Append a line for something the probe did (a restart), beside the runs."""
    record = {"time": _now(), "event": event, "message": message}
    _append(path, dumps(record) + "\n", note, until)


def _append(path: str, text: str, note: Callable[[str], None], until: float) -> None:
    """Overlapping runs take an exclusive lock on the log for the append and
    the rotation; one that holds it past this run's deadline costs this run
    its line, never its deadline."""
    line = clean(text).encode()  # the edge of this file: no secret past here
    try:
        fd = open_locked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, until)
    except OSError as exc:
        if exc.errno == errno.EWOULDBLOCK:
            note(f"torchprobe: cannot write the log {path}: locked by another run past this "
                 "run's deadline; this run's line is skipped")  # fmt: skip
        else:
            note(f"torchprobe: cannot write the log {path}: {exc.strerror or exc}")
        return
    try:
        size = os.fstat(fd).st_size
        if size + len(line) > LOG_MAX_BYTES and size > 0:
            # Under the lock: a run waiting for it finds the file replaced and
            # re-opens the new, empty one.
            for index in range(LOG_KEEP - 1, 0, -1):
                older = f"{path}.{index - 1}" if index > 1 else path
                if os.path.lexists(older):
                    os.replace(older, f"{path}.{index}")
            fresh = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                write_all(fresh, line)
            finally:
                os.close(fresh)
            return
        write_all(fd, line)
    except OSError as exc:
        note(f"torchprobe: cannot write the log {path}: {exc.strerror or exc}")
    finally:
        os.close(fd)


def write_textfile(path: str, report: Report, note: Callable[[str], None]) -> None:
    """Write the Prometheus exposition atomically, so a collector never reads
    half a file."""
    from torchprobe.renderers.prometheus import render_prometheus

    buffer = io.StringIO()
    render_prometheus(report, buffer)
    try:
        replace_atomically(path, clean(buffer.getvalue()))
    except OSError as exc:
        note(f"torchprobe: cannot write the Prometheus textfile {path}: {exc.strerror or exc}")
