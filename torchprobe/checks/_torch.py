"""What the torch checks share: importing torch with a clear failure, and
describing the build. Only imported inside a worker process."""

from __future__ import annotations

from typing import Any

from torchprobe.base import CheckFailed
from torchprobe.gpu.nvml import reading

__all__ = [
    "build_info",
    "describe_cuda_error",
    "describe_oom",
    "import_torch",
    "nvml_memory",
]

MiB = 1024 * 1024


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise CheckFailed(
            f"torch is not installed or does not import ({exc}); "
            "install torch, or torchprobe[torch]"
        ) from None
    return torch


def build_info(torch: Any) -> dict[str, Any]:
    """torch's version and what it was built for: CUDA, ROCm (HIP), or CPU only."""
    version = getattr(torch, "version", None)
    cuda = getattr(version, "cuda", None)
    hip = getattr(version, "hip", None)
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": cuda, "hip": hip}
    info["build"] = f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU-only"
    return info


def describe_cuda_error(exc: BaseException, device: str, torch: Any = None) -> str:
    """A device error as one line that says what it means.

    Out of memory is told apart: at context creation (``AcceleratorError``
    code 2, "CUDA error: out of memory": the GPU has no room for a context at
    all) or allocating the probe's tensor (``OutOfMemoryError``); with
    ``torch`` given, NVML's free-memory figure for that GPU goes beside it.
    """
    text = " ".join(str(exc).split())
    code = getattr(exc, "error_code", None)
    if "out of memory" in text.lower():
        memory = nvml_memory(torch, device) if torch is not None else None
        return describe_oom(exc, device, memory)
    prefix = f"{device}: {type(exc).__name__}"
    if code is not None:
        prefix += f" (CUDA error {code})"
    return f"{prefix}: {text[:300]}"


def describe_oom(exc: BaseException, device: str, memory: tuple[int, int] | None) -> str:
    text = " ".join(str(exc).split())
    if type(exc).__name__ == "OutOfMemoryError":
        what = "out of memory allocating the probe's tiny tensor"
    else:
        what = "out of memory creating the CUDA context (it needs several hundred MiB)"
    figure = ""
    if memory is not None:
        free, total = memory
        figure = f"; NVML: {free / MiB:.0f} MiB free of {total / MiB:.0f} MiB"
    return f"{device}: {what}{figure} — the GPU is full ({type(exc).__name__}: {text[:120]})"


def nvml_memory(torch: Any, device: str) -> tuple[int, int] | None:
    """(free, total) bytes of a torch CUDA device as NVML sees it, or None.

    NVML ignores CUDA_VISIBLE_DEVICES, so the device is found by its UUID.
    """
    try:
        index = torch.device(device).index or 0
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # noqa: BLE001 - no figure without the device's UUID
        return None
    uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"

    def read(nvml: Any) -> tuple[int, int]:
        info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByUUID(uuid))
        return int(info.free), int(info.total)

    return reading(read)
