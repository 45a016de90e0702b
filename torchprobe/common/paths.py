"""The one place torchprobe keeps files between processes, and how each
user falls back from it.

``RUN_DIR`` (``/run/torchprobe``) is shared by two kinds of file, each with
its own environment variable and its own rule for when ``RUN_DIR`` is not
usable (then :func:`fallback_dir`, ``<tempdir>/torchprobe``):

- **The state directory** (:mod:`torchprobe.common.statedir`: the
  ``--restart-after`` count, ``stall=``'s last reading): ``$TORCHPROBE_STATE_DIR``,
  else ``RUN_DIR`` where it exists and is writable or its parent lets it be
  made, else the fallback. Nothing is created before a run needs it.
- **The status directory, as a reader sees it** (the ``status-file`` check,
  :func:`torchprobe.common.statusdir.default_status_dir`):
  ``$TORCHPROBE_STATUS_DIR``, else ``RUN_DIR`` where it is a directory, else
  the fallback. A reader creates nothing, and a directory it cannot write is
  still one it can read.
- **The status directory, as a writer finds it** (the monitor,
  :func:`torchprobe.common.statusdir.resolve_status_dir`): an explicit path,
  else ``$TORCHPROBE_STATUS_DIR``, else ``RUN_DIR`` if it can be made and
  written (it is made here), else the fallback.

A probe and the server it watches resolve the status directory alike, so
neither needs configuring in the common case. No state file ends in
``.json``: the ``status-file`` check reads every ``*.json`` in ``RUN_DIR``.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["RUN_DIR", "fallback_dir"]

RUN_DIR = "/run/torchprobe"


def fallback_dir() -> str:
    """``<tempdir>/torchprobe``: where files go when ``RUN_DIR`` is not usable."""
    return os.path.join(tempfile.gettempdir(), "torchprobe")
