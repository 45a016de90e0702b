"""The image of the end-to-end suite, built without pytest: the fixtures of
tests/e2e/conftest.py and the container row of the benchmarks
(benchmarks/docker_round.py) build the same image the same way.

Dockerfile.example built with ``--build-arg BASE=local/bookworm-python:latest``
(a Debian image made with debootstrap, see .ci/docker-setup.sh) from a build
context of host-built wheels, since no network reaches a build here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("TORCHPROBE_E2E_BASE", "local/bookworm-python:latest")
IMAGE = "torchprobe-e2e:latest"
#: On every image the suite builds, so that its superseded builds can be pruned.
LABEL = "org.torchprobe.e2e=1"
#: What the wheels are for: the base image's Python.
PYTHON_VERSION = "3.11"
#: The CPU build: an unpinned torch resolves to a CUDA build of several GB.
TORCH = "torch==2.13.0"
# pip wheel makes the same bytes from the same source with a fixed date, so
# Docker's layer cache holds across sessions while the source is unchanged.
FIXED_DATE = "315532800"


class BuildError(RuntimeError):
    """The image could not be built: the message ends with the tool's output."""


def pip(*args: str) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_DATE, PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=600, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"pip {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr}")


def _copytree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt"))


def make_context(context: Path) -> Path:
    """Fill the empty directory ``context`` with what Dockerfile.example
    needs, and wheels/ with everything it installs."""
    for name in ("Dockerfile.example", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    _copytree(ROOT / "torchprobe", context / "torchprobe")
    _copytree(ROOT / "examples" / "flask_app", context / "examples" / "flask_app")
    wheels = context / "wheels"
    pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT))
    # Binary wheels for the base image's Python, whatever Python runs the tests;
    # torch's CPU wheel comes from pip's local find-links where it is configured.
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    pip(
        "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
        "--implementation", "cp", *(f"--platform={p}" for p in platforms),
        "--dest", str(wheels), TORCH, "click>=8.1", "nvidia-ml-py>=12.535",
        "-r", str(ROOT / "examples" / "flask_app" / "requirements.txt"),
    )  # fmt: skip
    return context


def base_image_present() -> bool:
    done = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    return done.returncode == 0


def make_base_image() -> None:
    """.ci/docker-setup.sh: the engine and the local base image (about 70 s)."""
    setup = subprocess.run(["bash", str(ROOT / ".ci" / "docker-setup.sh")],
                           capture_output=True, text=True, timeout=900)  # fmt: skip
    if setup.returncode != 0:
        raise BuildError(
            f"base image {BASE_IMAGE} missing and .ci/docker-setup.sh failed:\n"
            f"{setup.stdout[-1500:]}{setup.stderr[-1500:]}"
        )


def build_image(context: Path) -> str:
    """Dockerfile.example on the local base image, tagged IMAGE; a rebuild of
    an unchanged source takes seconds (the layer cache)."""
    done = subprocess.run(
        ["docker", "build", "-q", "-f", "Dockerfile.example", "--build-arg", f"BASE={BASE_IMAGE}",
         "--label", LABEL, "-t", IMAGE, "."],
        cwd=context, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"docker build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    # The previous build's image, untagged by this one: 1.4 GB each otherwise.
    subprocess.run(["docker", "image", "prune", "-f", "--filter", f"label={LABEL}"],
                   capture_output=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    return IMAGE
