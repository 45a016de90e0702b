"""The app the in-process target serves under gunicorn (gthread): ``/ping``
returns "ok"; with ``TPB_MONITOR=1`` (the default) the torchprobe monitor runs
in the worker, as docs/monitor.md tells a user to set it up, and ``init_app`` adds
``/health``, ``/ready`` and ``/metrics`` and tracks every other request.
``TPB_MONITOR=0`` is the same app without torchprobe: the control for the
monitor's CPU cost. ``/pid`` names the worker; ``/cpu`` is its CPU time.
"""

from __future__ import annotations

import os
import time

from flask import Flask

app = Flask(__name__)


@app.get("/ping")
def ping() -> str:
    return "ok"


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.get("/cpu")
def cpu() -> str:
    # CLOCK_PROCESS_CPUTIME_ID: every thread of the worker, the monitor's
    # short-lived round threads included once they have exited, to the
    # nanosecond; /proc/<pid>/stat has the same sum in 10 ms clock ticks.
    return repr(time.process_time())


if os.environ.get("TPB_MONITOR", "1") == "1":
    from torchprobe.integrations.flask import init_app
    from torchprobe.monitor import Monitor

    # The default interval (10 s); the status file goes to the benchmark's
    # temporary directory, so writing it is part of the cost measured.
    monitor = Monitor(checks=["tensor:device=cpu"], status_dir=os.environ.get("TPB_STATUS_DIR"))
    init_app(app, monitor)
    monitor.loaded()  # no model to load: /ready answers 200, as in a served app
    monitor.start()  # in the worker: gunicorn runs without --preload here
