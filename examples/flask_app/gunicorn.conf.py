"""gunicorn settings for the example service: ``gunicorn -c gunicorn.conf.py app:app``.

Anything here can be overridden without editing it: ``GUNICORN_CMD_ARGS="--workers 4"``,
``WEB_CONCURRENCY``, or options on the command line.
"""

from __future__ import annotations

import os
from typing import Any

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Threads per worker: a request stuck in one thread leaves the others free to
# answer /health and /ready — with 503 and the reason, from the monitor. The
# flip side is why the monitor is needed: gthread's main loop keeps checking in
# with the master while a handler thread is deadlocked, so gunicorn's own
# timeout never fires for it; the monitor's max_busy does.
worker_class = "gthread"
threads = 4

# The master kills a worker whose main loop has not checked in for this long:
# a worker frozen as a whole (SIGSTOP, a native call holding the GIL). Longer
# than any single request may take; the model loads in a thread, so a slow
# load does not count against it.
timeout = 30
graceful_timeout = 10

# No --preload: each worker imports torch and loads its own model after the
# fork. A process that initialised CUDA cannot be forked ("Cannot re-initialize
# CUDA in forked subprocess"). The hooks below are right with --preload too.
preload_app = False

# gunicorn 25.1 and later open a control socket under $HOME by default; this
# service does not use it, and two servers on one host would fight over its
# path. (Older gunicorn ignores the setting.)
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    """In each worker, right after the fork: start its monitor and load its model.

    Never in the master: the monitor's thread and the model belong to the
    process that serves. Each worker's monitor writes $TORCHPROBE_STATUS_DIR/<pid>.json
    (default /run/torchprobe), which the status-file check reads.
    """
    import app

    app.start_worker()


def worker_exit(server: Any, worker: Any) -> None:
    """A worker leaving cleanly removes its status file; one that crashed or
    was killed leaves it, and status-file reports the exit for a grace period."""
    import app

    app.monitor.stop()
