"""Plain-function plugins: options arrive as keyword arguments, as strings."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

NOT_CALLABLE = 42


def ok(message: str = "all good") -> str:
    """Always passes, with the given message."""
    return message


def fails(reason: str = "boom") -> None:
    """Always fails, raising RuntimeError(reason)."""
    raise RuntimeError(reason)


def echo(text: str, repeat: str = "1") -> str:
    """Passes with text repeated; text is required."""
    return text * int(repeat)


def anykey(**options: str) -> str:
    """Accepts any option; passes listing them."""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) or "no options"


def gilhang(seconds: str = "30") -> str:
    """Blocks in native code while holding the GIL, like a hung driver call."""
    # PyDLL keeps the GIL across the call; CDLL would release it.
    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke up"


def segfault() -> None:
    """Dies of SIGSEGV."""
    ctypes.string_at(0)


def abort() -> None:
    """Dies of SIGABRT."""
    os.abort()


def exits(code: str = "3") -> None:
    """Ends its process at once with the given code, like os._exit in a library."""
    os._exit(int(code))


def noisy() -> str:
    """Writes junk, including fake protocol lines, to stdout and stderr, then passes."""
    print('{"t": "result", "index": 0, "outcomes": [{"status": "fail"}]}')
    print("not json at all")
    sys.stdout.flush()
    print("noise on stderr", file=sys.stderr)
    return "spoke"


def spawn(pidfile: str, seconds: str = "300") -> str:
    """Starts a child `sleep`, writes its pid to pidfile, then hangs holding the GIL."""
    child = subprocess.Popen(["sleep", seconds])
    with open(pidfile, "w") as fp:
        fp.write(str(child.pid))
    time.sleep(0.05)
    ctypes.PyDLL(None).sleep(int(seconds))
    return "done"


def sleeps(seconds: str = "30") -> str:
    """Sleeps (releasing the GIL), like a check waiting on a hung device."""
    time.sleep(float(seconds))
    return f"slept {seconds}s"


def counts(path: str) -> str:
    """Appends a line to path on every run: how often did it run?"""
    with open(path, "a") as fp:
        fp.write("run\n")
    return "counted"


def cudaerror(code: str = "") -> None:
    """Raises a sticky CUDA error the way torch does (with error_code when code= is given)."""
    exc = RuntimeError("CUDA error: an illegal memory access was encountered")
    if code:
        exc.error_code = int(code)  # type: ignore[attr-defined]
    raise exc


def cudaspin(seconds: str = "600") -> str:
    """Spins a CUDA kernel for about `seconds` and waits for it: a hung GPU call."""
    import torch

    torch.cuda._sleep(int(float(seconds) * 2e9))  # cycles: about 2 GHz
    torch.cuda.synchronize()
    return "the kernel finished"


def readyfunc(message: str = "ready") -> str:
    """Passes; declares that it checks readiness."""
    return message


readyfunc.readiness = True  # type: ignore[attr-defined]


def modal(mode: str = "live") -> str:
    """Passes; checks readiness with mode=ready, liveness otherwise."""
    return f"mode {mode}"


modal.readiness = lambda mode="live": mode == "ready"  # type: ignore[attr-defined]


def _record_import_pid() -> None:
    """Appends this process's PID to $TORCHPROBE_TEST_IMPORT_LOG: which
    processes imported (and ran) plugin code?"""
    log = os.environ.get("TORCHPROBE_TEST_IMPORT_LOG")
    if log:
        with open(log, "a") as fp:
            fp.write(f"{os.getpid()}\n")


_record_import_pid()


def escapes(marker: str, pidfile: str, how: str = "setsid", then: str = "hang",
            env: str = "keep") -> str:  # fmt: skip
    """Starts a `sleep` that leaves the worker's process group, with `marker`
    in its argv, writes its pid to pidfile, then hangs holding the GIL (then=hang)
    or returns (then=return).

    how=setsid: a child in a session of its own (setsid(1) does the same).
    how=daemon: a double fork: an intermediate in a new session forks the
    sleep and exits, so the sleep is an orphan while the check still runs.
    """
    code = "import sys, time; time.sleep(300)"
    environ = {} if env == "clear" else None
    if how == "setsid":
        child = subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True,
                                 env=environ)  # fmt: skip
        pid = child.pid
    else:
        read, write = os.pipe()
        spawn = (
            "import os, subprocess, sys\n"
            f"c = subprocess.Popen([sys.executable, '-c', {code!r}, {marker!r}], env={environ!r})\n"
            f"os.write({write}, str(c.pid).encode())\n"
            "os._exit(0)\n"
        )
        middle = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True,
                                  pass_fds=(write,))  # fmt: skip
        os.close(write)
        pid = int(os.read(read, 64))
        os.close(read)
        middle.wait()
    with open(pidfile, "w") as fp:
        fp.write(str(pid))
    if then == "hang":
        ctypes.PyDLL(None).sleep(300)
    return f"started {pid}"
