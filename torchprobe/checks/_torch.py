"""What the torch checks share: importing torch with a clear failure, and
describing the build. Only imported inside a worker process."""

from __future__ import annotations

from typing import Any

from ..base import CheckFailed

__all__ = ["import_torch", "build_info", "describe_cuda_error"]


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


def describe_cuda_error(exc: BaseException, device: str) -> str:
    """A device error as one line that says what it means."""
    text = " ".join(str(exc).split())
    code = getattr(exc, "error_code", None)
    lowered = text.lower()
    if "out of memory" in lowered:
        return (
            f"{device}: out of memory ({type(exc).__name__}: {text[:160]}) — "
            "the GPU is full; creating a CUDA context alone needs several hundred MiB"
        )
    prefix = f"{device}: {type(exc).__name__}"
    if code is not None:
        prefix += f" (CUDA error {code})"
    return f"{prefix}: {text[:300]}"
