"""The monitor's status file, written from a thread of its own.

A request never waits for the file system: the monitor only tells the writer
that there is news, and returns. The writer keeps no queue, only "news
since the last write": each write takes a fresh snapshot of the state, so
whatever happened during a slow write is in the next one, and nothing piles
up behind a hung file system (an NFS server gone, a full disk that blocks).
A write that never returns leaves the file as it was — stale — which the
``status-file`` check reports as such.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from torchprobe.common.status_doc import StatusDocument
from torchprobe.common.statusdir import (
    configured_status_dir,
    remove_quietly,
    resolve_status_dir,
    write_atomically,
)

__all__ = ["StatusWriter"]


class StatusWriter:
    """Writes ``<directory>/<pid>.json`` whenever :meth:`publish` was called
    since the last write; removes it on :meth:`stop`."""

    def __init__(self, setting: Any, snapshot: Callable[[], StatusDocument],
                 warn: Callable[[str, str], None]) -> None:  # fmt: skip
        self._setting = setting
        self._snapshot = snapshot
        self._warn = warn
        #: Where the file goes: the place it was told, else found in the
        #: writer's thread, since finding the default place creates directories.
        self.directory: str | None = configured_status_dir(setting)
        self._news = threading.Event()
        self._stopping = False
        self._done = threading.Event()
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="torchprobe-status", daemon=True).start()

    def publish(self) -> None:
        """There is news: write it soon. Never blocks."""
        self._news.set()

    def stop(self, wait: float) -> bool:
        """Remove the file after the write under way, if any, and end the
        thread. Waits at most ``wait`` seconds; True when the file is gone."""
        self._stopping = True
        self._news.set()
        return self._done.wait(wait)

    def _run(self) -> None:
        directory = resolve_status_dir(self._setting)
        self.directory = directory
        path = os.path.join(directory, f"{self._pid}.json")
        warned = False
        try:
            while True:
                self._news.wait()
                self._news.clear()
                if self._stopping:
                    return
                try:
                    error = write_atomically(path, self._snapshot())
                except Exception as exc:  # noqa: BLE001 - never let the writer die
                    error = f"{type(exc).__name__}: {exc}"
                if error and not warned:
                    warned = True
                    self._warn(directory, error)
        finally:
            # In this thread, after any write: a removal that raced a write
            # would see the file come back.
            remove_quietly(path)
            self._done.set()
