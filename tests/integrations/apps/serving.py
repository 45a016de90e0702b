"""Serve a test app for real — gunicorn or uvicorn in a subprocess — and talk
to it over HTTP.

The test binds the listening socket itself (port 0) and hands its descriptor
to the server (``gunicorn -b fd://N``, ``uvicorn --fd N``): every server gets
its own free port with no bind race, and a restart keeps the port, with any
connection made meanwhile waiting in the backlog. Each server runs in its own
session, so stopping it kills exactly its processes (master and workers).

A sticky CUDA error is permanent by design, so a test that causes one needs
a process of its own afterwards. :meth:`Served.fresh` gives a never-touched
process (restarting only when needed); :meth:`Served.loaded` one whose model
is loaded, restarting only when a test marked the process ``broken``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPS = Path(__file__).parent
# No proxy from the environment: these servers are on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def gunicorn(module: str, *, workers: int = 1, threads: int = 4) -> list[str]:
    """gunicorn's command line; ``{fd}`` is filled in at start."""
    return [
        sys.executable, "-m", "gunicorn", "--bind", "fd://{fd}", "--pythonpath", str(APPS),
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--graceful-timeout", "1", "--log-level", "warning", f"{module}:app",
    ]  # fmt: skip


def uvicorn(module: str) -> list[str]:
    """uvicorn's command line (one process, so a test talks to the process it changes)."""
    return [
        sys.executable, "-m", "uvicorn", "--fd", "{fd}", "--app-dir", str(APPS),
        "--log-level", "warning", "--no-access-log", f"{module}:app",
    ]  # fmt: skip


@dataclass
class Served:
    """One server process (and its workers) on its own port."""

    command: list[str]
    env: dict[str, str]
    log: Path
    probe: str = "/health"
    proc: subprocess.Popen[bytes] | None = None
    #: Never touched since it started: no lifecycle call, no error, no request held.
    clean: bool = False
    #: In a state a test cannot undo (a sticky error): restart before reuse.
    broken: bool = True
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    # -- the process -------------------------------------------------------------------
    def start(self) -> Served:
        fd = self.sock.fileno()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [part.replace("{fd}", str(fd)) for part in self.command],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(fd,), start_new_session=True,
            )  # fmt: skip
        self.clean, self.broken = True, False
        return self

    def wait_up(self, timeout: float = 30.0) -> Reply:
        """Wait until the server answers its probe path (any status)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                return self.get(self.probe, timeout=2)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not answering:\n{self.tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start().wait_up()

    def close(self) -> None:
        self.stop()
        self.sock.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # -- the state a test needs ----------------------------------------------------------
    def fresh(self, breaks: bool = True) -> Served:
        """A process nothing has touched yet; ``breaks``: the test will break it."""
        if not self.clean:
            self.restart()
        self.clean, self.broken = False, breaks
        return self

    def loaded(self) -> Served:
        """A process whose model is loaded (and no sticky error)."""
        if self.broken or self.proc is None:
            self.restart()
        self.clean = False
        assert self.post("/_test/lifecycle/loaded").status == 200
        return self

    # -- HTTP ----------------------------------------------------------------------------
    def request(self, method: str, path: str, timeout: float = 10.0,
                headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, dict(error.headers), error.read())

    def get(self, path: str, timeout: float = 10.0, **headers: str) -> Reply:
        return self.request("GET", path, timeout, headers)

    def post(self, path: str, timeout: float = 10.0) -> Reply:
        return self.request("POST", path, timeout)

    def until(self, path: str, status: int, timeout: float = 10.0) -> Reply:
        """Poll ``path`` until it answers ``status``; the last answer otherwise fails."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.get(path)
            if reply.status == status or time.monotonic() > deadline:
                assert reply.status == status, (reply.status, reply.body)
                return reply
            time.sleep(0.05)
