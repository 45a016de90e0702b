"""The report's torch readings, in the ``torch`` worker (torch imported once).

Two checks, so that a hang in the CUDA runtime (``torch.cuda.is_available()``
calls ``cudaGetDeviceCount``, which can hang on a sick GPU) loses only the
runtime readings: the build readings are sent before it starts.
"""

from __future__ import annotations

import warnings
from typing import Any

from torchprobe.base import Check, Outcome, Status

__all__ = ["ReportTorch", "ReportTorchCuda"]


class _TorchCheck(Check):
    timeout = 10.0
    worker = "torch"

    torch: Any = None
    import_error: str | None = None

    def setup(self) -> None:
        # In setup, before the check's timeout starts: `import torch` alone
        # takes seconds, and only the run's deadline should bound it.
        try:
            import torch
        except Exception as exc:  # noqa: BLE001 - a broken install is a reading
            self.import_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
        else:
            self.torch = torch


def _done(readings: dict[str, Any]) -> Outcome:
    return Outcome(Status.PASS, "read", {"readings": readings})


class ReportTorch(_TorchCheck):
    """torch's version and what it was built for."""

    name = "report-torch"
    description = "the report's torch build readings"

    def run(self) -> Outcome:
        torch = self.torch
        if torch is None:
            return _done({"import_error": self.import_error})
        version = getattr(torch, "version", None)
        cuda, hip = getattr(version, "cuda", None), getattr(version, "hip", None)
        readings: dict[str, Any] = {
            "torch": str(torch.__version__),
            "cuda": cuda,
            "hip": hip,
            "build": f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU-only",
            "path": getattr(torch, "__file__", None),
        }
        try:
            # Loads libcudnn on a CUDA build (no GPU needed); None on a CPU build.
            cudnn = torch.backends.cudnn.version()
            readings["cudnn"] = _cudnn_text(cudnn) if cudnn else None
        except Exception as exc:  # noqa: BLE001 - a broken cuDNN is a reading
            readings["cudnn"] = f"error: {type(exc).__name__}: {exc}"[:300]
        return _done(readings)


def _cudnn_text(version: int) -> str:
    # cuDNN 9 encodes major*10000 + minor*100 + patch; 8 and older major*1000 + minor*100.
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100} ({version})"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100} ({version})"


class ReportTorchCuda(_TorchCheck):
    """What torch's CUDA runtime sees: the devices, and why not when none."""

    name = "report-torch-cuda"
    description = "the report's torch CUDA runtime readings"

    def run(self) -> Outcome:
        torch = self.torch
        if torch is None:
            return _done({"import_error": self.import_error})
        with warnings.catch_warnings(record=True) as caught:
            # torch says why CUDA is unusable only in a warning ("The NVIDIA
            # driver on your system is too old", "no CUDA-capable device").
            warnings.simplefilter("always")
            available = bool(torch.cuda.is_available())
            count = int(torch.cuda.device_count())
        readings: dict[str, Any] = {
            "cuda_available": available,
            "device_count": count,
            "warnings": [" ".join(str(w.message).split())[:500] for w in caught],
        }
        if available:
            readings["arch_list"] = list(torch.cuda.get_arch_list())
            getter = getattr(torch._C, "_cuda_getDriverVersion", None)
            api = int(getter()) if getter is not None and torch.version.cuda else 0
            if api:  # a private getter, gone from newer torch: shown only where it answers
                readings["driver_cuda_api"] = f"{api // 1000}.{api % 1000 // 10}"
        devices = []
        for index in range(count):
            device: dict[str, Any] = {"index": index}
            try:
                # Properties come from the runtime without creating a context:
                # the report costs the GPUs no memory.
                props = torch.cuda.get_device_properties(index)
                device.update(
                    name=props.name,
                    capability=f"{props.major}.{props.minor}",
                    memory_total=int(props.total_memory),
                )
                uuid = getattr(props, "uuid", None)
                if uuid is not None:
                    text = str(uuid)
                    device["uuid"] = text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
            except Exception as exc:  # noqa: BLE001 - one bad device is one reading
                device["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            devices.append(device)
        readings["devices"] = devices
        return _done(readings)
