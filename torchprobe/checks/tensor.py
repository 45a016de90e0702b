"""``tensor``: on each device, copy a tiny tensor in, run one operation,
synchronise, copy the result back and verify it. Never a model: the probe
stays light. Runs in the ``torch`` worker process. ``verify=matmul`` swaps
the tiny operation for a fixed-seed matrix product checked against a float64
reference (see :mod:`torchprobe.checks.matmul`)."""

from __future__ import annotations

import re
import time
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, UsageError, failed, passed
from torchprobe.checks import matmul
from torchprobe.checks._torch import build_info, describe_cuda_error, import_torch
from torchprobe.common.errors import error_details
from torchprobe.options import boolean, choice, integer, listof

__all__ = ["TensorCheck"]

MiB = 1024 * 1024
_VALUES = (1.0, 2.0, 3.0, 4.0)
_EXPECTED = sum(v * v for v in _VALUES)
#: The device types torch.device() parses (torch 2.13's list, c10/core/DeviceType.cpp);
#: a backend that renames privateuse1 is still reached as privateuseone.
DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip",
                "ve", "fpga", "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia",
                "privateuseone")  # fmt: skip
_DEVICE = re.compile(r"([a-z]+)(?::(0|[1-9][0-9]*))?")
#: c10::DeviceIndex is an int8: torch 2.13 reads cuda:128 as cuda:-128.
_MAX_INDEX = 127


def _device(value: str) -> str:
    """A torch device string, checked here without importing torch."""
    kind = value.partition(":")[0]
    if kind not in DEVICE_TYPES:
        import difflib  # only on the way to a usage error

        close = difflib.get_close_matches(kind.lower(), (*DEVICE_TYPES, "gpu"), n=1)
        hint = ("cuda" if close[0] == "gpu" else close[0]) if close else None
        suggestion = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(f"{value!r} is not a torch device type{suggestion}; the types are "
                         f"{', '.join(DEVICE_TYPES)}")  # fmt: skip
    match = _DEVICE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a torch device: TYPE or TYPE:N, N a number "
                         "without leading zeros")  # fmt: skip
    if match.group(2) is not None and int(match.group(2)) > _MAX_INDEX:
        raise ValueError(f"{value!r}: torch device indexes go up to {_MAX_INDEX}")
    return value


_device.type_name = "device"  # type: ignore[attr-defined]


class TensorCheck(Check):
    name = "tensor"
    description = (
        "allocate a tiny tensor on each device, compute, synchronise and verify "
        "(verify=matmul: a matrix product against a float64 reference)"
    )
    options = (
        Option("device", listof(_device, unique=True), default=None,
               help="cuda, cuda:N, cpu, or another torch device type, |-separated; "
                    "default: every visible CUDA device"),
        Option("verify", choice("matmul"), default=None,
               help="matmul: a fixed-seed matrix product compared with a float64 CPU "
                    "reference (against silent data corruption; costs a second or more)"),
        Option("dtype", choice(*matmul.DTYPES), default=None,
               help="with verify=matmul: the dtype; default float16 on CUDA, else float32"),
        Option("size", integer(matmul.MIN_SIZE, matmul.MAX_SIZE), default=None,
               help="with verify=matmul: the matrices' side; default 1024 on CUDA, else 256"),
        Option("tf32", boolean, default=False,
               help="with verify=matmul,dtype=float32 on CUDA: allow TF32 tensor cores"),
    )  # fmt: skip
    timeout = 10.0
    worker = "torch"

    device: list[str] | None
    verify: str | None
    dtype: str | None
    size: int | None
    tf32: bool
    torch: Any = None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        # Told when the run is planned, before torch is imported.
        pairs = (("dtype", self.dtype), ("size", self.size), ("tf32", self.tf32 or None))
        given = [key for key, value in pairs if value is not None]
        if given and self.verify is None:
            raise UsageError(f"check {self.name!r}: option {given[0]!r} applies only with "
                             "verify=matmul")  # fmt: skip
        if self.tf32:
            if self.dtype != "float32":
                raise UsageError(f"check {self.name!r}: tf32=true applies only to dtype=float32 "
                                 "(verify=matmul,dtype=float32,tf32=true)")  # fmt: skip
            other = [d for d in self.device or () if not d.startswith("cuda")]
            if other:
                raise UsageError(f"check {self.name!r}: tf32=true applies only to CUDA "
                                 f"devices, not {other[0]!r}")  # fmt: skip

    def product(self, a: Any, b: Any) -> Any:
        """The product that ``verify=matmul`` checks: the one operation a
        corrupting device gets wrong."""
        return a @ b

    def setup(self) -> None:
        self.torch = import_torch()

    def run(self) -> list[Outcome]:
        torch = self.torch
        devices = self.device or self._all_cuda(torch)
        return [self._probe(torch, name) for name in devices]

    def _all_cuda(self, torch: Any) -> list[str]:
        count = torch.cuda.device_count()
        if count == 0:
            info = build_info(torch)
            why = ("a CPU-only build of torch" if info["build"] == "CPU-only"
                   else f"{info['build']}, but torch.cuda.device_count() is 0")  # fmt: skip
            raise CheckFailed(
                f"no CUDA device visible (torch {info['torch']}: {why}); "
                "tensor:device=cpu tests the CPU",
                **info,
            )
        return [f"cuda:{i}" for i in range(count)]

    def _probe(self, torch: Any, name: str) -> Outcome:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError) as exc:
            return failed(f"{name!r} is not a torch device: {exc}", target=name)
        if device.type == "cuda":
            if torch.cuda.device_count() == 0:
                return failed(f"{name}: no CUDA device visible ({build_info(torch)['build']} "
                              "torch)", target=name)  # fmt: skip
            if device.index is not None and device.index >= torch.cuda.device_count():
                return failed(f"{name}: no such device ({torch.cuda.device_count()} visible)",
                              target=name)  # fmt: skip
        started = time.monotonic()
        if self.verify == "matmul":
            try:
                return matmul.verify(self, torch, device, name, _synchronize)
            except Exception as exc:  # noqa: BLE001 - one bad device is one failing line
                return failed(describe_cuda_error(exc, name, torch), target=name,
                              seconds=round(time.monotonic() - started, 6),
                              **error_details(exc))  # fmt: skip
        try:
            x = torch.tensor(_VALUES, dtype=torch.float32).to(device)
            y = (x * x).sum()
            _synchronize(torch, device)
            value = float(y.item())
        except Exception as exc:  # noqa: BLE001 - one bad device is one failing line
            # The raw error goes into the details too: the in-process monitor
            # tells a sticky CUDA error from a passing one by its code.
            return failed(describe_cuda_error(exc, name, torch), target=name,
                          seconds=round(time.monotonic() - started, 6),
                          **error_details(exc))  # fmt: skip
        elapsed = time.monotonic() - started
        details: dict[str, Any] = {"device": str(device), "seconds": round(elapsed, 6),
                                   "value": value}  # fmt: skip
        memory = ""
        if device.type == "cuda":
            details["name"] = torch.cuda.get_device_name(device)
            details["memory_allocated"] = torch.cuda.memory_allocated(device)
            details["memory_reserved"] = torch.cuda.memory_reserved(device)
            free, total = torch.cuda.mem_get_info(device)
            details["memory_free"], details["memory_total"] = free, total
            memory = (f", {details['memory_reserved'] / MiB:.0f} MiB reserved by the probe, "
                      f"{free / MiB:.0f} of {total / MiB:.0f} MiB free")  # fmt: skip
        if value != _EXPECTED:
            return failed(f"{name}: wrong result {value} (expected {_EXPECTED}): "
                          "the device computes garbage", target=name, **details)  # fmt: skip
        ms = elapsed * 1000
        return passed(f"{name}: computed and verified in {ms:.0f} ms{memory}", target=name,
                      **details)  # fmt: skip


def _synchronize(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return
    accelerator = getattr(torch, "accelerator", None)
    if device.type != "cpu" and accelerator is not None:
        try:
            accelerator.synchronize(device)
        except (RuntimeError, ValueError, TypeError):
            pass  # .item() below synchronises anyway
