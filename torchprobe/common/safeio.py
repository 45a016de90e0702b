"""Files that cannot hang a run or be written through a planted link.

Every file torchprobe opens goes through here, in one of two ways:

- Files it **creates or replaces** (the ``--log`` and its rotation,
  ``--prometheus-textfile``, the ``--restart-after`` state, the monitor's
  status files) are opened with ``O_NOFOLLOW | O_NONBLOCK`` and refused unless
  ``fstat`` says they are regular files: a symbolic link is never written
  through, and a FIFO can neither block the open (no reader) nor take a write.
- Files it **only reads** (the TOML config, ``token-file=``, the status files
  the ``status-file`` check reads, TLS files) may be symbolic links, as
  Kubernetes ConfigMaps and Secrets are, but are opened with ``O_NONBLOCK``,
  refused unless regular, and read up to a cap of their kind (the ``*_CAP``
  values below), so a FIFO, a device or a runaway file costs nothing. A
  ``/proc`` file is read up to a cap too, and cut there (``read_head``).

Every refusal is an ``OSError`` whose ``strerror`` says what the file is, so
a caller's existing ``except OSError`` turns it into its one-line message.
"""

from __future__ import annotations

import errno
import os
import stat
import time

__all__ = [
    "CONFIG_CAP",
    "STATE_CAP",
    "STATUS_FILE_CAP",
    "TLS_FILE_CAP",
    "TOKEN_FILE_CAP",
    "open_locked",
    "open_own",
    "read_fd",
    "read_head",
    "read_regular",
    "remove_quietly",
    "replace_atomically",
    "write_all",
]

#: The TOML file of profiles: a hand-written file of a few KiB.
CONFIG_CAP = 1024 * 1024
#: ``token-file=`` (TorchServe's key_file.json, a few hundred bytes).
TOKEN_FILE_CAP = 64 * 1024
#: One monitor status file (``<pid>.json``: 539 bytes with no checks, a few KiB with
#: several; the monitor cuts each message it keeps to 500 characters).
STATUS_FILE_CAP = 256 * 1024
#: The ``--restart-after`` state (about 200 bytes) and other small state files.
STATE_CAP = 64 * 1024
#: A CA bundle, certificate or key for TLS (Debian's whole CA bundle is about 220 KiB).
TLS_FILE_CAP = 1024 * 1024

#: Pause between two tries of a lock held by another run (they hold it for a millisecond).
LOCK_POLL = 0.005

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _not_regular(mode: int, path: str) -> OSError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    return OSError(code, f"not a regular file ({kind})", path)


def _regular(fd: int, path: str) -> os.stat_result:
    held = os.fstat(fd)
    if not stat.S_ISREG(held.st_mode):
        raise _not_regular(held.st_mode, path)
    return held


def read_fd(fd: int, cap: int, path: str = "") -> bytes:
    """All of an open file, or OSError(EFBIG) when it holds more than ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = os.read(fd, min(65536, cap + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise OSError(errno.EFBIG, f"larger than {_size(cap)}, the most torchprobe reads of it", path)


def read_regular(path: str, cap: int) -> bytes:
    """The bytes of a regular file that torchprobe only reads (links followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if _regular(fd, path).st_size > cap:
            raise OSError(errno.EFBIG, f"larger than {_size(cap)}, the most torchprobe reads "
                          "of it", path)  # fmt: skip
        return read_fd(fd, cap, path)
    finally:
        os.close(fd)


def read_head(path: str, cap: int) -> bytes:
    """At most the first ``cap`` bytes of a regular file that torchprobe only
    reads: a ``/proc`` file, whose ``st_size`` is 0 whatever it holds and of
    which the head is what is wanted (see :mod:`torchprobe.common.procfs`)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        _regular(fd, path)
        chunks: list[bytes] = []
        size = 0
        while size < cap:
            chunk = os.read(fd, min(65536, cap - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_own(path: str, flags: int, mode: int = 0o644) -> int:
    """Open a file torchprobe creates or writes: never through a symbolic
    link, never a FIFO or device. ``flags`` adds the access mode and e.g.
    ``O_CREAT``; the descriptor is non-blocking (no effect on a regular file)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY,
                     mode)  # fmt: skip
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            # ELOOP: the last component is a link; ENXIO: a FIFO nobody reads.
            try:
                raise _not_regular(os.lstat(path).st_mode, path) from None
            except FileNotFoundError:
                pass
        raise
    try:
        _regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock_until(fd: int, until: float) -> bool:
    """An exclusive flock, tried until ``until`` (a ``time.monotonic()`` value),
    and once even when that has passed. False when another process holds it."""
    import fcntl

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = until - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(LOCK_POLL, left))


def open_locked(path: str, flags: int, until: float) -> int:
    """``open_own`` and an exclusive flock, given up at ``until``: then
    OSError(EWOULDBLOCK, "locked by another run"). Writers replace or rotate
    these files by rename, so a lock won on a file that has since been
    replaced is retried on the new one."""
    while True:
        fd = open_own(path, flags)
        try:
            if not _flock_until(fd, until):
                raise OSError(errno.EWOULDBLOCK, "locked by another run", path)
            try:
                held, current = os.fstat(fd), os.lstat(path)
                if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory
    and a rename, so a reader never sees half a file. What is at ``path`` must
    be a regular file or nothing. Raises OSError."""
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(there.st_mode):
            raise _not_regular(there.st_mode, path)
    temporary = f"{path}.{os.getpid()}.tmp"
    remove_quietly(temporary)  # a leftover of a killed run with this PID, or a planted link
    try:
        fd = open_own(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            write_all(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        remove_quietly(temporary)
        raise


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _size(cap: int) -> str:
    return f"{cap // (1024 * 1024)} MiB" if cap % (1024 * 1024) == 0 else f"{cap // 1024} KiB"
