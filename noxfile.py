"""CI sessions beyond the README's test run; .ci/run runs them all.

- ``fast-3.10``, ``fast-3.12``, ``fast-3.13``: the fast suite (``FAST``) on the
  Pythons other than 3.11, where .ci/run runs the whole suite. No torch there:
  pip would resolve torch to a CUDA build of several GB for them (this
  project's CPU wheel is for 3.11), so the tests that need it, marked
  ``torch`` (tests/conftest.py), are deselected.
- ``mypy-notorch``: ``mypy --strict`` where torch is not installed (its
  imports are then Any; see pyproject.toml).

  nox                      # all four
  nox -s fast-3.12 -- -x   # arguments after -- go to pytest
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
# A Python that is missing fails its session rather than skips it.
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["mypy-notorch", "fast-3.10", "fast-3.12", "fast-3.13"]

#: The fast suite, the one place it is defined: no torch, no GPU, no Docker
#: (e2e), no real model servers (integration), no wrk benchmark (bench); and
#: none of the tests that spend seconds each: deadline and crash scenarios
#: (slow), hypothesis properties (property), the server stand-ins' busy and
#: wedged states (standins). Measured on 2 cores, a session then takes 3.5-4
#: min with its install, against 8 with those tests: the three add 11 min to
#: .ci/run rather than 25. Python 3.11 runs them all (the README's test run).
FAST = (
    "not torch and not gpu and not e2e and not integration and not bench"
    " and not slow and not property and not standins"
)

#: Exits 1, saying so, where torch is installed: these sessions are for where it is not.
NO_TORCH = "import importlib.util as u, sys; sys.exit(u.find_spec('torch') and 'torch is here')"


def interpreter(version: str) -> str:
    """``pythonX.Y`` where it runs, else pyenv's newest build of that version:
    pyenv's shim of a version that is installed but not selected exits 127."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-V"], capture_output=True).returncode == 0:
        return found
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    builds = [
        (tuple(int(part) for part in path.parent.parent.name.split(".")), path)
        for path in root.glob(f"versions/{version}.*/bin/python{version}")
        if re.fullmatch(rf"{re.escape(version)}\.\d+", path.parent.parent.name)
    ]
    return str(max(builds)[1]) if builds else version  # nox: "not found", and fails


def fast(session: nox.Session) -> None:
    session.install(".[test]", "./tests/plugins")
    # ptxas, for tests/checks/test_cuda_driver.py; pinned: about 140 MB.
    session.install("--no-deps", "nvidia-cuda-nvcc==13.5.37")
    # Only where torch is missing does the suite show a test that needs it
    # but is not marked so (tests/conftest.py).
    session.run("python", "-c", NO_TORCH)
    session.run("python", "-m", "pytest", "-q", "-m", FAST, *session.posargs)


for _version in ("3.10", "3.12", "3.13"):
    nox.session(name=f"fast-{_version}", python=interpreter(_version))(fast)


@nox.session(name="mypy-notorch")
def mypy_notorch(session: nox.Session) -> None:
    # The lint extra's pinned mypy, and the typed packages torchprobe imports.
    session.install("-e", ".[lint,flask,asgi,metrics]")
    session.run("python", "-c", NO_TORCH)
    # A cache of its own: .mypy_cache holds what mypy found where torch is installed.
    session.run("mypy", "--strict", "--cache-dir", f"{session.virtualenv.location}/mypy-cache")
