"""Real model servers for the preset tests, each from its own virtual environment.

The servers' pins conflict (MLServer's FastAPI/Starlette against KServe's,
Ray's protobuf against the others'), so each gets a venv of its own, made from
``tests/realservers/envs/NAME.txt`` (with ``torch==2.13.0``, the CPU build) the
first time a test asks for it and reused while that file is unchanged: the
venv's folder name carries a hash of the file. Under ``CI=true`` a venv that
fails to install, or a server that fails to start, is a test failure.

A test module starts its server once (a module-scoped fixture) and shares it::

    python = server_venv("kserve")
    server = ServerProcess([str(python), str(APPS / "kserve_app.py"), ...], name="kserve")
    server.start()
    server.wait_http(f"http://127.0.0.1:{port}/v2/health/live", timeout=120)
    ...
    server.stop()
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from conftest import children, require

HERE = Path(__file__).parent
ENVS = HERE / "envs"
APPS = HERE / "apps"
ROOT = HERE.parent.parent
VENVS = Path(os.environ.get("TORCHPROBE_SERVER_VENVS", ROOT / ".venvs"))
INSTALL_TIMEOUT = 900

__all__ = ["APPS", "ServerProcess", "free_port", "http_get", "server_venv", "start_builds"]


_builds: dict[str, threading.Thread] = {}
_failures: dict[str, str] = {}


def start_builds(names: Sequence[str], parallel: int = 3) -> None:
    """Make the venvs of ``names`` in the background, ``parallel`` at a time.

    Installs wait on the network more than on the CPU, so a test session that
    will need several venvs starts them all at once (tests/realservers/conftest.py);
    :func:`server_venv` then waits only for the one it needs.
    """
    slots = threading.Semaphore(parallel)

    def build(name: str) -> None:
        with slots:
            try:
                _install(name)
            except Exception as exc:  # reported by server_venv, in the test that needs it
                _failures[name] = str(exc)

    for name in names:
        if name not in _builds and (ENVS / f"{name}.txt").exists():
            _builds[name] = threading.Thread(target=build, args=(name,), daemon=True)
            _builds[name].start()


def server_venv(name: str) -> Path:
    """The Python of the venv for ``envs/NAME.txt``; fails (CI) or skips if it will not install."""
    if name in _builds:
        _builds[name].join()
    else:
        try:
            _install(name)
        except Exception as exc:
            _failures[name] = str(exc)
    if name in _failures:
        require(False, _failures[name])
    return _venv(name) / "bin" / "python"


def _venv(name: str) -> Path:
    digest = hashlib.sha256((ENVS / f"{name}.txt").read_bytes()).hexdigest()[:10]
    return VENVS / f"{name}-{digest}"


class InstallFailed(Exception):
    pass


def _install(name: str) -> None:
    """Make the venv for ``envs/NAME.txt`` unless it is there (under a file lock)."""
    requirements = ENVS / f"{name}.txt"
    venv = _venv(name)
    python = venv / "bin" / "python"
    done = venv / ".installed"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return
        log = VENVS / f"{name}-install.log"
        started = time.monotonic()
        try:
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            with open(log, "w") as out:
                subprocess.run(
                    [sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out
                )
                subprocess.run(
                    [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                    check=True,
                    stdout=out,
                    stderr=out,
                    timeout=INSTALL_TIMEOUT,
                    env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                )
        except (subprocess.SubprocessError, OSError) as exc:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            why = f"the {name} server venv did not install ({exc}):\n{tail}"
            raise InstallFailed(why) from None
        done.write_text(f"{time.monotonic() - started:.1f} s\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:  # fmt: skip
    """(status, body) of a GET; status 0 when nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


class ServerProcess:
    """A server in its own process group, its output in a log file."""

    def __init__(self, command: Sequence[str], *, name: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.command = list(command)
        self.name = name
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.env.pop("CUDA_VISIBLE_DEVICES", None)
        self.log_path = VENVS / f"{name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        VENVS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def log(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_http(self, url: str, timeout: float, accept: Sequence[int] = (200,),
                  headers: dict[str, str] | None = None) -> float:  # fmt: skip
        """Seconds until ``url`` answers an accepted status; fails the test otherwise."""
        started = time.monotonic()
        status = 0
        while time.monotonic() - started < timeout:
            if not self.running():
                require(False, f"{self.name} exited while starting:\n{self.log()}")
            status, _ = http_get(url, timeout=5, headers=headers)
            if status in accept:
                return time.monotonic() - started
            time.sleep(0.5)
        require(False, f"{self.name}: {url} gave {status} after {timeout:.0f} s:\n{self.log()}")
        return 0.0

    def signal_group(self, signum: int) -> None:
        """Signal the server's process group and every descendant.

        Some servers (BentoML's process manager) start workers in sessions of
        their own, and the worker holds the listening socket.
        """
        if self.process is None:
            return
        pids = children(self.process.pid)
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def freeze(self) -> None:
        """SIGSTOP every process of the server: it keeps its sockets but answers nothing."""
        self.signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal_group(signal.SIGCONT)

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None:
            return
        self.thaw()
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
