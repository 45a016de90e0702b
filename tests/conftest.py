"""Shared helpers: run the installed console script like a user does.

Tests that need something installed (the console script, the test plugins)
skip with a reason where it is missing — but under CI=true they fail, so a
broken install step can never leave CI green.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge behaviour, never speed: these machines are shared, and a
# hypothesis deadline (200 ms by default) fails an example that merely ran on
# a loaded core. Every test module inherits this profile.
settings.register_profile("torchprobe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("torchprobe")

TESTS = Path(__file__).parent
FAKES = TESTS / "fakes"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: Whether torch is installed here: noxfile.py's fast sessions run without it.
HAS_TORCH = importlib.util.find_spec("torch") is not None
#: What a test shows where torch is missing: torchprobe's message ("torch is
#: not installed or does not import"), a require() naming the package
#: ("torch==2.13.0 is not installed"), Python's, pytest.importorskip's.
_NO_TORCH = re.compile(r"\btorch(==\S+)? is not installed|No module named 'torch'"
                       r"|could not import 'torch'")  # fmt: skip
#: Test modules that import torch as they load (pytest.importorskip): where
#: torch is missing they are not collected, since collecting them would skip
#: them before -m can deselect them. Each is marked `torch` as a whole too.
TORCH_MODULES = ["checks/test_matmul.py", "checks/test_torch_checks.py"]
collect_ignore = [] if HAS_TORCH else TORCH_MODULES
_F = TypeVar("_F", bound=Callable[..., Any])


def needs_torch(fixture: _F) -> _F:
    """Say that a fixture needs torch (put it under ``@pytest.fixture``): every
    test that uses it, directly or through other fixtures, is marked ``torch``."""
    fixture._torchprobe_needs_torch = True  # type: ignore[attr-defined]
    return fixture


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: before -m deselects by marker.
    for item in items:
        # hypothesis.given sets is_hypothesis_test on the tests it wraps.
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("torch"):
            continue
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name, ())
            if defs and getattr(defs[-1].func, "_torchprobe_needs_torch", False):
                item.add_marker(pytest.mark.torch)
                break


def _torch_missing(report: pytest.CollectReport | pytest.TestReport) -> bool:
    """A failure or skip that says torch is missing (only looked for where it is)."""
    if HAS_TORCH or report.passed:
        return False
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) else report.longreprtext
    text += "".join(content for _, content in report.sections)
    return _NO_TORCH.search(text) is not None


def _unmarked(report: pytest.CollectReport | pytest.TestReport, what: str, fix: str) -> None:
    text = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
    report.outcome = "failed"
    report.longrepr = f"{text}\n\n{what} needs torch, which is not installed here: {fix}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    """Where torch is missing, a test that fails or skips for want of it but is
    not marked ``torch`` lacks the marker: it fails, saying so, rather than
    pass for a skip or fail for a reason that hides the cause."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not item.get_closest_marker("torch") and _torch_missing(report):
        _unmarked(report, item.nodeid, "mark it @pytest.mark.torch, or its fixture "
                  "@needs_torch (tests/conftest.py)")  # fmt: skip


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if _torch_missing(report):
        _unmarked(report, collector.nodeid, "list it in TORCH_MODULES (tests/conftest.py)")


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing; fail instead under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def script() -> Path:
    """The installed console script: beside this Python, else on PATH."""
    path = Path(sys.executable).parent / "torchprobe"
    if not path.exists():
        found = shutil.which("torchprobe")
        path = Path(found) if found else path
    require(path.exists(), f"the torchprobe console script is not installed at {path}")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that configures torchprobe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHPROBE_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            python: bool = False) -> Run:  # fmt: skip
    command = [sys.executable, "-m", "torchprobe"] if python else [str(script())]
    started = time.monotonic()
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """End a process started with ``start_new_session=True`` and its whole
    group: SIGTERM, then SIGKILL if it is not gone within ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fake_nvml_env(scenario: str, **extra: str) -> dict[str, str]:
    """Environment that makes workers import tests/fakes/pynvml.py."""
    path = os.pathsep.join(p for p in (str(FAKES), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(PYTHONPATH=path, TORCHPROBE_FAKE_NVML=scenario, **extra)


@pytest.fixture(scope="session")
def plugins() -> None:
    """The misbehaving test plugins of tests/plugins must be installed."""
    names = {ep.name for ep in entry_points(group="torchprobe.checks")}
    require(
        {"ok", "gilhang", "segfault"} <= names,
        "the test plugins are not installed (pip install ./tests/plugins)",
    )


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fp:
            state = fp.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fp:
                ppid = int(fp.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def target() -> Iterator[subprocess.Popen[bytes]]:
    """A process for --restart-after to restart: a plain `sleep`, which SIGTERM ends."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()
