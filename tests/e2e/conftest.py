"""End-to-end: Dockerfile.example built and run on a real Docker engine, whose
HEALTHCHECK — torchprobe — decides the container's health.

One image for the whole session: Dockerfile.example built with
``--build-arg BASE=local/bookworm-python:latest`` (a Debian image made with
debootstrap, see .ci/docker-setup.sh) from a build context of host-built
wheels, since no network reaches a build here. Containers run with
``--network none`` under unique names and are always removed.

Where no engine answers the suite skips, saying so — under CI=true it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from . import images
from .images import ROOT


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so that --strict-markers accepts the suite's marker
    # even where pyproject.toml's list lacks it.
    config.addinivalue_line("markers", "e2e: needs a Docker engine (tests/e2e)")


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def engine() -> str:
    """The engine's version; skip (fail under CI=true) where none answers."""
    require(shutil.which("docker") is not None,
            "no docker client on PATH (bash .ci/docker-setup.sh installs the engine)")  # fmt: skip
    try:
        done = docker("version", "-f", "{{.Server.Version}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        done = None
    require(
        done is not None and done.returncode == 0,
        "no Docker engine answers `docker version` (bash .ci/docker-setup.sh starts one)",
    )
    assert done is not None
    return done.stdout.strip()


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Dockerfile.example needs, and wheels/ with everything it installs."""
    try:
        return images.make_context(tmp_path_factory.mktemp("context"))
    except images.BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def image(engine: str, build_context: Path) -> str:
    """Dockerfile.example, built once for the session on the local base image."""
    if not images.base_image_present():
        try:
            images.make_base_image()
        except images.BuildError as exc:
            require(False, str(exc))
    started = time.monotonic()
    try:
        built = images.build_image(build_context)
    except images.BuildError as exc:
        pytest.fail(str(exc))
    print(f"\n[e2e] built {built} on engine {engine} in {time.monotonic() - started:.0f}s")
    return built


@pytest.fixture(scope="session")
def test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugins unpacked as a directory to put on a container's PYTHONPATH:
    checks that misbehave on purpose (a GIL-holding hang), found as entry points
    through the wheel's own dist-info."""
    wheels = tmp_path_factory.mktemp("plugin-wheel")
    try:
        images.pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT / "tests/plugins"))
    except images.BuildError as exc:
        pytest.fail(str(exc))
    target = tmp_path_factory.mktemp("plugins")
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    os.chmod(target, 0o755)  # readable by the container's user
    return target


@dataclass
class Transition:
    at: float
    status: str
    streak: int


@dataclass
class Container:
    """One container of the image, named uniquely; removed by the fixture."""

    name: str
    started: float = field(default_factory=time.monotonic)
    transitions: list[Transition] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        out = docker("inspect", "-f", "{{json .State.Health}}", self.name).stdout
        return json.loads(out) or {}

    def state(self) -> dict[str, Any]:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def watch(self, until: set[str], deadline: float, avoid: set[str] = frozenset()) -> str:
        """Poll the health status, recording each change, until it is one of
        ``until`` (returned) or the deadline passes (a failure)."""
        end = time.monotonic() + deadline
        while True:
            health = self.health()
            status = health.get("Status", "none")
            last = self.transitions[-1] if self.transitions else None
            if last is None or (last.status, last.streak) != (status, health["FailingStreak"]):
                now = time.monotonic() - self.started
                self.transitions.append(Transition(now, status, health["FailingStreak"]))
            assert status not in avoid, f"went {status}:\n{self.report()}"
            if status in until:
                return status
            state = self.state()
            assert state["Running"], f"container stopped: {state}\n{self.logs()}"
            if time.monotonic() > end:
                pytest.fail(f"not {' or '.join(until)} within {deadline}s:\n{self.report()}")
            time.sleep(0.2)

    def since(self, status: str) -> float:
        """When the status was first seen (seconds since start)."""
        return next(t.at for t in self.transitions if t.status == status)

    def report(self) -> str:
        lines = [f"{t.at:6.1f}s  {t.status:<9} failing streak {t.streak}" for t in self.transitions]
        for entry in self.health().get("Log", []):
            lines.append(f"  exit {entry['ExitCode']}: {entry['Output'].strip()}")
        return "\n".join(lines)

    def logs(self) -> str:
        done = docker("logs", "--tail", "40", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *argv, timeout=timeout, check=False)

    def http(self, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        """A request from inside the container (it has no network of its own)."""
        script = (
            "import json, sys, urllib.request as u, urllib.error as e\n"
            "path, body, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
            "data = body.encode() if body else None\n"
            "req = u.Request('http://127.0.0.1:8000' + path, data,\n"
            "                {'Content-Type': 'application/json'} if data else {})\n"
            "try:\n"
            "    r = u.urlopen(req, timeout=timeout); print(r.status); print(r.read().decode())\n"
            "except e.HTTPError as x:\n"
            "    print(x.code); print(x.read().decode())\n"
        )
        payload = "" if body is None else json.dumps(body)
        done = self.exec("python", "-c", script, path, payload, str(timeout), timeout=timeout + 20)
        assert done.returncode == 0, done.stderr
        status, _, text = done.stdout.partition("\n")
        return int(status), json.loads(text)

    def processes(self) -> list[tuple[str, str, str]]:
        """(stat, comm, args) of every process inside, zombies included
        (``docker top`` leaves zombies out)."""
        done = self.exec("ps", "-eo", "stat=,comm=,args=")
        assert done.returncode == 0, done.stderr
        rows = []
        for line in done.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                rows.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
        return rows

    def host_pid(self) -> int:
        return int(docker("inspect", "-f", "{{.State.Pid}}", self.name).stdout)

    def host_processes(self) -> list[tuple[int, int, str, str]]:
        """(host pid, host ppid, comm, cmdline) of the processes in this
        container's PID namespace, seen from the host."""
        namespace = os.readlink(f"/proc/{self.host_pid()}/ns/pid")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                with open(f"/proc/{entry}/stat") as fp:
                    stat = fp.read()
                with open(f"/proc/{entry}/cmdline", "rb") as fp:
                    cmdline = fp.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue  # gone meanwhile
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found.append((int(entry), ppid, comm, cmdline))
        return found

    def gunicorn_workers(self) -> list[int]:
        """Host PIDs of the gunicorn workers: gunicorn processes whose parent is
        gunicorn (the master's parent is the init, whose command line names
        gunicorn too)."""
        procs = [p for p in self.host_processes() if p[2] == "gunicorn"]
        masters = {pid for pid, _, _, _ in procs}
        return sorted(pid for pid, ppid, _, _ in procs if ppid in masters)


def unique_name(label: str) -> str:
    return f"torchprobe-e2e-{label}-{uuid.uuid4().hex[:8]}"


#: Short probe timings for the tests, on top of the image's own HEALTHCHECK
#: command: a probe every second, unhealthy after 2 failures in a row.
FAST = {"interval": 1.0, "timeout": 5.0, "retries": 2}


@pytest.fixture
def run_container(image: str) -> Iterator[Any]:
    started: list[str] = []

    def run(label: str, *args: str, env: dict[str, str] | None = None,
            start_period: float = 60, health: dict[str, float] | None = None,
            health_cmd: str | None = None) -> Container:  # fmt: skip
        timings = dict(FAST, **(health or {}))
        name = unique_name(label)
        started.append(name)
        environment = {"DEVICE": "cpu", "MONITOR_INTERVAL": "1", **(env or {})}
        argv = ["run", "-d", "--init", "--network", "none", "--name", name,
                f"--health-interval={timings['interval']}s",
                f"--health-timeout={timings['timeout']}s",
                f"--health-retries={int(timings['retries'])}",
                f"--health-start-period={start_period}s"]  # fmt: skip
        if health_cmd is not None:
            argv.append(f"--health-cmd={health_cmd}")
        for key, value in environment.items():
            argv += ["-e", f"{key}={value}"]
        docker(*argv, *args, image)
        return Container(name)

    yield run
    for name in started:
        docker("rm", "-f", name, check=False, timeout=60)


def detection_bound(max_age: float, timings: dict[str, float] | None = None) -> float:
    """Worst case from the fault to "unhealthy": the fault shows after
    ``max_age``, then ``retries + 1`` probes ``interval`` apart, each taking up
    to ``timeout``."""
    t = dict(FAST, **(timings or {}))
    return max_age + t["interval"] * (t["retries"] + 1) + t["timeout"]


# -- docker compose (test_compose*.py) ---------------------------------------------


@pytest.fixture(scope="module")
def compose() -> str:
    found = shutil.which("docker-compose")
    require(found is not None, "no docker-compose on PATH (.ci/run apt-get installs it)")
    assert found is not None
    return found


@pytest.fixture
def project(compose: str, tmp_path: Path) -> Any:
    """Makes compose projects from specs; each is brought down at the end."""
    from .compose import Project  # it imports this module's docker()

    made: list[Project] = []

    def make(spec: dict[str, Any]) -> Project:
        directory = tmp_path / str(len(made))
        directory.mkdir()
        made.append(Project(compose, directory, spec))
        return made[-1]

    yield make
    for p in made:
        p.down()
