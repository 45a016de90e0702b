"""Where ``stall=`` keeps a server's last reading between probe runs.

A probe run is a process of its own, so the reading that the next run
compares with must outlive it: :class:`FileStore` keeps one file per server
in the state directory (see :mod:`torchprobe.common.statedir`), named
``progress-<hash>.state`` where the hash is of the metrics URL — no URL, no
token and no ``.json`` in the name. Each file is replaced atomically under a
lock and belongs to one life of the container's PID 1, as the restart count
does. :class:`MemoryStore` keeps the same records in a dictionary, for a
process that outlives its checks: ``torchprobe serve`` calls :func:`use_store`
once, and every in-process check (``worker = None``: ``stall=`` and the
progress check are) then keeps its readings there (:func:`default_store`).

A store that cannot be read or written raises :class:`StateError`; the check
then fails saying why, rather than judging every run as the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from torchprobe.common.statedir import (
    STATE_ENV,
    default_state_dir,
    lock_file,
    process_life,
    read_all,
)
from torchprobe.common.statusdir import replace_atomically

__all__ = [
    "FileStore",
    "MemoryStore",
    "StateError",
    "StateStore",
    "default_store",
    "state_name",
    "use_store",
]

Record = dict[str, Any]


class StateError(Exception):
    """The state cannot be read or written; the message says where and why."""


class StateStore(Protocol):
    """Records by key. ``get`` and ``put`` are called inside ``hold(key)``, which
    keeps overlapping probe runs from interleaving their read and write; it
    waits for another holder no later than ``until`` (a ``time.monotonic()``
    value: the check's deadline), then raises StateError."""

    def hold(
        self, key: str, until: float | None = None
    ) -> contextlib.AbstractContextManager[None]: ...

    def get(self, key: str) -> Record | None: ...

    def put(self, key: str, record: Record) -> None: ...


def state_name(key: str) -> str:
    """The file name of a key's state: a hash, so the name tells nothing of the URL."""
    return f"progress-{hashlib.sha256(key.encode()).hexdigest()[:20]}.state"


class MemoryStore:
    """Records in this process's memory (a long-running process's own store)."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str, until: float | None = None) -> Iterator[None]:
        wait = -1.0 if until is None else max(0.0, until - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise StateError(f"progress state of {key!r} held by another round past the deadline")
        try:
            yield
        finally:
            self._lock.release()

    def get(self, key: str) -> Record | None:
        record = self._records.get(key)
        return json.loads(json.dumps(record)) if record is not None else None

    def put(self, key: str, record: Record) -> None:
        self._records[key] = json.loads(json.dumps(record))


class FileStore:
    """One file per key in ``directory``, each tied to a life of process ``pid``."""

    def __init__(
        self,
        directory: str,
        pid: int = 1,
        life: Callable[[int], str | None] = process_life,
    ) -> None:
        self.directory = directory
        self.pid = pid
        # No PID 1 to read (no procfs): one life for as long as the files last.
        self.life = life(pid) or "unknown"
        self._fd: int | None = None

    @classmethod
    def default(cls, environ: Mapping[str, str] = os.environ) -> FileStore:
        return cls(default_state_dir(environ))

    def path(self, key: str) -> str:
        return os.path.join(self.directory, state_name(key))

    @contextlib.contextmanager
    def hold(self, key: str, until: float | None = None) -> Iterator[None]:
        path = self.path(key)
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._fd = lock_file(path, until=until)
        except OSError as exc:
            raise self._error(path, exc) from None
        try:
            yield
        finally:
            os.close(self._fd)
            self._fd = None

    def get(self, key: str) -> Record | None:
        """The record of this life of PID 1, or None: none yet, a previous life's,
        or a file that is not a record (it is then replaced by the next put)."""
        if self._fd is None:
            raise RuntimeError("FileStore.get outside hold()")
        try:
            data = read_all(self._fd)
        except OSError as exc:
            raise self._error(self.path(key), exc) from None
        try:
            document = json.loads(data) if data else None
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("life") != self.life:
            return None
        record = document.get("record")
        return record if isinstance(record, dict) else None

    def put(self, key: str, record: Record) -> None:
        path = self.path(key)
        try:
            replace_atomically(path, json.dumps({"life": self.life, "record": record}))
        except OSError as exc:
            raise self._error(path, exc) from None

    def _error(self, path: str, exc: OSError) -> StateError:
        why = exc.strerror or str(exc) or type(exc).__name__
        return StateError(
            f"cannot keep progress state in {path}: {why} (set {STATE_ENV} to a writable directory)"
        )


#: The store of this process, once a long-running one has chosen it (use_store).
_chosen: StateStore | None = None


def use_store(store: StateStore | None) -> None:
    """Make ``store`` every check's default in this process (None: files again)."""
    global _chosen
    _chosen = store


def default_store(environ: Mapping[str, str] = os.environ) -> StateStore:
    """The store this process chose, else the state directory's files."""
    return _chosen if _chosen is not None else FileStore.default(environ)
