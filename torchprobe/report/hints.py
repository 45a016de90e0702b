"""The report's hints: from readings to what is wrong and what to do about it.

Pure functions: readings in (plain dicts and strings, as the report gathers
them), :class:`Problem` values out. The GPU and driver hints, which the
``cuda`` check words its failures with too, are :mod:`torchprobe.gpu.hints`
and :mod:`torchprobe.gpu.health`; they are re-exported here so that the
report's modules find every hint in one place. The ones below are the
report's alone: torch's build and runtime, what CUDA_VISIBLE_DEVICES hides,
and a section that could not be read. torch's build is described as
:func:`torchprobe.checks._torch.build_info` describes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchprobe.gpu.health import clock_reasons, gpu_health
from torchprobe.gpu.hints import (
    HOST_LOGS,
    NOT_SUPPORTED,
    VERDICTS,
    Problem,
    cuda_verdict,
    device_nodes,
    driver_cuda,
    gpu_lost,
    libraries,
    nvml_start,
    parse_cuda,
)

__all__ = [
    "HOST_LOGS", "NOT_SUPPORTED", "Problem", "VERDICTS", "clock_reasons", "cuda_verdict",
    "device_nodes", "driver_cuda", "gpu_health", "gpu_lost", "libraries", "not_read",
    "nvml_start", "parse_cuda", "torch_build", "torch_runtime", "visibility",
]  # fmt: skip


# -- torch ---------------------------------------------------------------------
def torch_build(build: Mapping[str, Any]) -> Problem | None:
    """torch missing, or a CPU-only build. ``build``: ``torch``, ``cuda``, ``hip``
    (and ``import_error`` when it did not import)."""
    if build.get("import_error"):
        return Problem(
            f"torch does not import: {build['import_error']}",
            "install torch (a CUDA build: pip install torch), or fix the error above",
        )
    if build.get("cuda") or build.get("hip"):
        return None
    return Problem(
        f"torch {build.get('torch', '?')} is a CPU build: it cannot use any GPU",
        "install a CUDA build of torch (pip install torch --index-url "
        "https://download.pytorch.org/whl/cu128, with the CUDA version your driver supports)",
    )


def torch_runtime(runtime: Mapping[str, Any], build: Mapping[str, Any]) -> list[Problem]:
    """A CUDA build of torch that finds no GPU, or GPUs it has no kernels for."""
    problems: list[Problem] = []
    if not (build.get("cuda") or build.get("hip")) or runtime.get("status", "ok") != "ok":
        return problems
    if not runtime.get("cuda_available"):
        said = "; ".join(runtime.get("warnings") or ()) or "no reason given"
        hint = "see the NVML and device-node findings; CUDA_VISIBLE_DEVICES decides what torch sees"
        if "too old" in said.lower():
            hint = "upgrade the NVIDIA driver, or install a torch build for an older CUDA"
        problems.append(Problem(f"torch {build.get('build')} cannot use CUDA ({said})", hint))
    archs = runtime.get("arch_list") or []
    for device in runtime.get("devices") or ():
        capability = str(device.get("capability") or "")
        sm = "sm_" + capability.replace(".", "")
        if archs and capability and sm not in archs and not _ptx_covers(archs, capability):
            problems.append(
                Problem(
                    f"cuda:{device.get('index')} ({device.get('name')}, compute capability "
                    f"{capability}) is not among torch's compiled architectures "
                    f"({' '.join(archs)})",
                    "install a torch build that supports this GPU (a newer torch, or another CUDA "
                    "variant); otherwise kernels fail with 'no kernel image is available'",
                )
            )
    return problems


def _ptx_covers(archs: Sequence[str], capability: str) -> bool:
    """compute_XY in the list: PTX the driver can JIT for any newer GPU."""
    wanted = parse_cuda(capability) or (0, 0)
    for arch in archs:
        if arch.startswith("compute_") and arch[8:].isdigit():
            number = int(arch[8:])
            if (number // 10, number % 10) <= wanted:
                return True
    return False


def visibility(
    env: Mapping[str, Any], nvml_count: int | None, torch_count: int | None
) -> list[Problem]:
    """GPUs the driver has that torch cannot see, because of CUDA_VISIBLE_DEVICES."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if not nvml_count or torch_count is None or torch_count > 0 or visible is None:
        return []
    return [
        Problem(
            f"NVML sees {nvml_count} GPU(s) but torch none: "
            f"CUDA_VISIBLE_DEVICES={visible!r} hides them",
            "unset CUDA_VISIBLE_DEVICES, or set it to GPU indexes or UUIDs (GPU-...) that exist",
        )
    ]


def not_read(section: str, status: str, message: str) -> Problem:
    """A part of the report that timed out, crashed or failed to run."""
    if status == "timed out":
        return Problem(
            f"{section}: {message}",
            "a driver call hung: the GPU or driver is stuck; see "
            f"{HOST_LOGS}; a GPU that hangs NVML usually needs a reset",
        )
    return Problem(f"{section}: {message}", "run `torchprobe --report -v` for the traceback")
