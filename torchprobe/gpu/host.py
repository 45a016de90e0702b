"""Facts about the machine that decide whether its GPUs can be used: whether
this runs in a container, the /dev/nvidia* device nodes, the kernel driver's
version and where a driver library was loaded from.

Each only reads files and ``stat``s paths, which cannot hang on a sick driver,
so any process may call them (the ``cuda`` check's hints, the ``--report``
diagnostics). Loading a library to find out whether it loads is not here: that
runs its initialisers, which can hang.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

__all__ = ["container", "device_nodes", "kernel_driver", "mapped"]

# CUDA needs the control node and the unified-memory node besides one node per GPU.
_REQUIRED_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm")
_CGROUP = re.compile(r"docker|kubepods|containerd|libpod|crio|lxc|podman")
# The version after "Kernel Module" (or "Kernel Module for <arch>") in
# /proc/driver/nvidia/version's first line.
_KERNEL_MODULE = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")


def _read(path: str, limit: int = 65536) -> str | None:
    """The first ``limit`` bytes of a /proc (or /sys) file, bounded and non-blocking."""
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


def kernel_driver() -> str | None:
    """The NVIDIA kernel module's version, from /proc: no library call needed."""
    match = _KERNEL_MODULE.search(_read("/proc/driver/nvidia/version", 4096) or "")
    return match.group(1) if match else None


def mapped(soname: str) -> str | None:
    """Where the dynamic loader found a library: the file mapped into this process."""
    stem = soname.split(".so")[0] + ".so"
    for line in (_read("/proc/self/maps", 1 << 22) or "").splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if os.path.basename(path).startswith(stem):
            return os.path.realpath(path)
    return None
