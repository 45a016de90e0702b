"""The report's readings about the machine that :mod:`torchprobe.gpu.host` does
not make: torchprobe and Python, the environment — and, in a worker, the
NVIDIA libraries.

Everything but :class:`ReportLibraries` only reads, which cannot hang, so it
runs in torchprobe's own process. Loading a driver library runs its
initialisers and can hang on a sick driver: that runs in the ``host`` worker,
which the engine kills at its timeout.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from torchprobe import __version__
from torchprobe.base import Check, Outcome, Status
from torchprobe.gpu.host import kernel_driver, mapped

__all__ = ["ENV_VARS", "ReportLibraries", "environment", "versions"]

ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDA_MODULE_LOADING",
)


def versions() -> dict[str, Any]:
    return {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libc": " ".join(platform.libc_ver()).strip() or None,
    }


def environment(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    environ = dict(os.environ) if environ is None else environ
    return {name: environ.get(name) for name in ENV_VARS}


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
                entry.update(loaded=True, path=mapped(soname))
            except OSError as exc:
                entry.update(loaded=False, error=" ".join(str(exc).split()))
            readings[soname] = entry
        readings["kernel_driver"] = kernel_driver()
        return Outcome(Status.PASS, "read", {"readings": readings})
