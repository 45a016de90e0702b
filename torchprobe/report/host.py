"""Readings about the machine: torchprobe and Python, the container, the
environment, the device nodes — and, in a worker, the NVIDIA libraries.

Everything but :class:`ReportLibraries` only reads files and ``stat``s paths,
which cannot hang, so it runs in torchprobe's own process. Loading a driver
library runs its initialisers and can hang on a sick driver: that runs in the
``host`` worker, which the engine kills at its timeout.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import sys
from typing import Any

from torchprobe import __version__
from torchprobe.base import Check, Outcome, Status

__all__ = ["ENV_VARS", "ReportLibraries", "container", "device_nodes", "environment", "versions"]

ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDA_MODULE_LOADING",
)
# CUDA needs the control node and the unified-memory node besides one node per GPU.
_REQUIRED_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm")
_CGROUP = re.compile(r"docker|kubepods|containerd|libpod|crio|lxc|podman")


def versions() -> dict[str, Any]:
    return {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libc": " ".join(platform.libc_ver()).strip() or None,
    }


def _read(path: str, limit: int = 65536) -> str | None:
    from torchprobe.common.procfs import read_text

    return read_text(path, limit)


def container(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Whether this runs in a container, by the marks runtimes leave, and which."""
    environ = dict(os.environ) if environ is None else environ
    hints: list[str] = []
    runtime: str | None = None
    if os.path.exists("/.dockerenv"):
        hints.append("/.dockerenv")
        runtime = "docker"
    if os.path.exists("/run/.containerenv"):  # podman and buildah write it
        hints.append("/run/.containerenv")
        runtime = "podman"
    if environ.get("container"):  # podman, systemd-nspawn, lxc set it for PID 1
        hints.append(f"container={environ['container']}")
        runtime = runtime or environ["container"]
    cgroup = _read("/proc/1/cgroup") or ""
    found = sorted(set(_CGROUP.findall(cgroup)))
    if found:
        hints.append("cgroup: " + ", ".join(found))
        runtime = runtime or found[0]
    if environ.get("KUBERNETES_SERVICE_HOST"):
        hints.append("KUBERNETES_SERVICE_HOST")
        runtime = "kubernetes" + (f" ({runtime})" if runtime else "")
    gpu_hints = [
        p
        for p in ("/proc/driver/nvidia", "/run/nvidia-persistenced/socket", "/usr/bin/nvidia-smi")
        if os.path.exists(p)
    ]
    return {
        "in_container": bool(hints),
        "runtime": runtime,
        "hints": hints,
        "nvidia_hints": gpu_hints,
    }


def environment(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    environ = dict(os.environ) if environ is None else environ
    return {name: environ.get(name) for name in ENV_VARS}


def device_nodes() -> dict[str, Any]:
    present = sorted(glob.glob("/dev/nvidia*"))
    gpus = [p for p in present if re.fullmatch(r"/dev/nvidia\d+", p)]
    return {
        "present": present,
        "gpus": gpus,
        "missing": [p for p in _REQUIRED_NODES if p not in present],
        # Mode bits only: a container's device cgroup may still refuse the open.
        "inaccessible": [
            p for p in present if not os.path.isdir(p) and not os.access(p, os.R_OK | os.W_OK)
        ],
    }


class ReportLibraries(Check):
    """Whether the driver's libraries are found and load, and the kernel driver's version."""

    name = "report-libraries"
    description = "the report's library readings"
    timeout = 5.0
    worker = "host"

    def run(self) -> Outcome:
        import ctypes.util

        readings: dict[str, Any] = {}
        for short, soname in (("nvidia-ml", "libnvidia-ml.so.1"), ("cuda", "libcuda.so.1")):
            entry: dict[str, Any] = {"find_library": ctypes.util.find_library(short)}
            try:
                ctypes.CDLL(soname)
                entry.update(loaded=True, path=_mapped(soname))
            except OSError as exc:
                entry.update(loaded=False, error=" ".join(str(exc).split()))
            readings[soname] = entry
        text = _read("/proc/driver/nvidia/version", 4096)
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text or "")
        readings["kernel_driver"] = match.group(1) if match else None
        return Outcome(Status.PASS, "read", {"readings": readings})


def _mapped(soname: str) -> str | None:
    """Where the dynamic loader found a library: the file mapped into this process."""
    stem = soname.split(".so")[0] + ".so"
    for line in (_read("/proc/self/maps", 1 << 22) or "").splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if os.path.basename(path).startswith(stem):
            return os.path.realpath(path)
    return None
