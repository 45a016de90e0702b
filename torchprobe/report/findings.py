"""The report's problems: every section's readings through the hints, in the
order a user should fix them (the machine's GPU access first, then NVML, then
torch, then each GPU), each problem once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchprobe.report import hints
from torchprobe.report.hints import Problem

__all__ = ["problems"]

_TITLES = {
    "libraries": "library readings",
    "nvml": "NVML",
    "torch": "torch",
    "torch_cuda": "torch CUDA runtime",
    "processes": "GPU processes",
}


def problems(sections: Mapping[str, Any]) -> list[Problem]:
    found: list[Problem] = []
    add = found.append
    container = sections.get("container") or {}
    in_container = bool(container.get("in_container"))
    for key, title in _TITLES.items():
        section = sections.get(key) or {}
        status = section.get("status", "ok")
        if status not in ("ok", "not run"):
            add(hints.not_read(title, status, str(section.get("message", ""))))

    build = _ok(sections.get("torch"))
    runtime = _ok(sections.get("torch_cuda"))
    nvml = _ok(sections.get("nvml"))
    rocm = bool(build.get("hip"))
    nodes = sections.get("device_nodes") or {}
    if not rocm:  # ROCm GPUs have neither /dev/nvidia* nor NVML
        found.extend(hints.device_nodes(nodes, in_container))
        nvml_error = nvml.get("error")
        problem = hints.nvml_start(nvml_error)
        if problem:
            add(problem)
        found.extend(hints.libraries(_ok(sections.get("libraries")), nvml_error))
        count = nvml.get("device_count")
        if isinstance(count, int) and count == 0:
            add(
                Problem(
                    "NVML sees no GPU",
                    "in a container: --gpus all / NVIDIA_VISIBLE_DEVICES; on a host: "
                    "see `nvidia-smi`",
                )
            )
    if build:
        problem = hints.torch_build(build)
        if problem:
            add(problem)
        problem = hints.driver_cuda(build.get("cuda"), nvml.get("cuda_driver"))
        if problem:
            add(problem)
        found.extend(hints.torch_runtime(runtime or {"status": "not run"}, build))
    nvml_count = nvml.get("device_count")
    torch_count = runtime.get("device_count")
    found.extend(
        hints.visibility(
            sections.get("environment") or {},
            nvml_count if isinstance(nvml_count, int) else None,
            torch_count if isinstance(torch_count, int) else None,
        )
    )

    for gpu in sections.get("gpus") or ():
        label = f"GPU {gpu.get('index')}"
        if gpu.get("status") != "ok":
            add(hints.not_read(label, gpu.get("status", "failed"), str(gpu.get("message", ""))))
            continue
        error = str(gpu.get("error") or "").removeprefix("error: ") or None
        lost = hints.gpu_lost(label, gpu.get("lost") or error)
        if lost:
            add(lost)
        elif gpu.get("error"):
            add(
                Problem(
                    f"{label}: NVML cannot read it ({gpu['error']})",
                    f"see `nvidia-smi -i {gpu.get('index')}` and dmesg on the host",
                )
            )
        else:
            found.extend(hints.gpu_health(label, gpu))
    unique: list[Problem] = []
    for problem in found:
        if problem not in unique:
            unique.append(problem)
    return unique


def _ok(section: Any) -> dict[str, Any]:
    """A section's readings, or nothing when it was not read."""
    if isinstance(section, dict) and section.get("status", "ok") == "ok":
        return section
    return {}
