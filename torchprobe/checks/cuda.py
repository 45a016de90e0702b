"""``cuda``: torch is a CUDA (or ROCm) build, enough devices are visible, and a
context initialises on each. Runs in the ``torch`` worker process.

``backend=driver`` instead runs a tiny kernel on each device through
``libcuda.so.1`` alone (:mod:`torchprobe.checks.cudaprobe`), in a worker of
its own that never imports torch."""

from __future__ import annotations

from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, failed, passed
from torchprobe.checks._torch import build_info, describe_cuda_error, import_torch
from torchprobe.gpu import host
from torchprobe.gpu.hints import device_nodes, driver_cuda
from torchprobe.gpu.nvml import reading
from torchprobe.options import choice, integer

__all__ = ["CudaCheck"]

MiB = 1024 * 1024


class CudaCheck(Check):
    name = "cuda"
    description = (
        "torch is a CUDA or ROCm build, at least min-devices devices are visible, "
        "and a context initialises on each (backend=driver: a tiny kernel runs on each "
        "device through libcuda.so.1, without torch)"
    )
    options = (
        Option("min-devices", integer(0), default=1,
               help="fewest visible devices that count as healthy"),
        Option("backend", choice("torch", "driver"), default="torch",
               help="torch: contexts through torch; driver: a kernel through the CUDA driver "
                    "API (libcuda.so.1), no torch: meant for frequent probes"),
    )  # fmt: skip
    timeout = 10.0
    worker = "torch"

    min_devices: int
    backend: str
    torch: Any = None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.backend == "driver":
            # Its own worker: torch is never imported there, and a hung driver
            # call is killed without taking the torch checks' process along.
            self.worker = "cuda-driver"

    def setup(self) -> None:
        if self.backend == "torch":
            self.torch = import_torch()

    def run(self) -> Outcome | list[Outcome]:
        if self.backend == "driver":
            from torchprobe.checks.cudaprobe import run_driver

            return run_driver(self.min_devices)
        torch = self.torch
        info = build_info(torch)
        if not info["cuda"] and not info["hip"]:
            raise CheckFailed(
                f"torch {info['torch']} is a CPU-only build: it has no CUDA support "
                "(install a CUDA build of torch)",
                **info,
            )
        count = torch.cuda.device_count()
        info["device_count"] = count
        driver = _driver_version(torch)
        if driver:
            info["driver"] = driver
        if count < self.min_devices:
            raise CheckFailed(
                f"{count} CUDA device(s) visible, at least {self.min_devices} required "
                f"({info['build']}; CUDA_VISIBLE_DEVICES and the container's --gpus decide "
                f"what is visible){_hints(info)}",
                **info,
            )
        devices: list[dict[str, Any]] = []
        problems: list[str] = []
        for index in range(count):
            device: dict[str, Any] = {"index": index}
            try:
                props = torch.cuda.get_device_properties(index)
                device["name"] = props.name
                device["capability"] = f"{props.major}.{props.minor}"
                uuid = getattr(props, "uuid", None)
                if uuid is not None:
                    device["uuid"] = _uuid(uuid)
                # mem_get_info needs a context on the device: this creates it.
                free, total = torch.cuda.mem_get_info(index)
                device["memory_free"] = free
                device["memory_total"] = total
            except Exception as exc:  # noqa: BLE001 - one bad device is one problem
                device["error"] = describe_cuda_error(exc, f"cuda:{index}", torch)
                problems.append(device["error"])
            devices.append(device)
        info["devices"] = devices
        versions = f"torch {info['torch']}, {info['build']}" + (
            f", driver {driver}" if driver else ""
        )
        if problems:
            return failed("; ".join(problems) + f" ({versions}){_hints(info)}", **info)
        names = _summarise([d["name"] for d in devices])
        return passed(f"{count} device(s): {names}; {versions}" if count else
                      f"no devices (min-devices=0); {versions}", **info)  # fmt: skip


def _uuid(value: Any) -> str:
    text = str(value)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _summarise(names: list[str]) -> str:
    counted: dict[str, int] = {}
    for name in names:
        counted[name] = counted.get(name, 0) + 1
    return ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in counted.items())


def _driver_version(torch: Any) -> str | None:
    """The NVIDIA driver's version, from the cheapest source that has it.

    The kernel module's /proc file needs no library call; NVML's answer works
    where /proc/driver is not mounted (some sandboxed runtimes); torch's
    private getter, last, gives only the driver's CUDA API version.
    """
    kernel = host.kernel_driver()
    if kernel:
        return kernel
    version = reading(lambda nvml: nvml.nvmlSystemGetDriverVersion())
    if version is not None:
        return version.decode() if isinstance(version, bytes) else str(version)
    getter = getattr(torch._C, "_cuda_getDriverVersion", None)
    try:
        api = int(getter()) if getter is not None else 0
    except Exception:  # noqa: BLE001
        api = 0
    return f"with CUDA {api // 1000}.{(api % 1000) // 10} API" if api else None


def _hints(info: dict[str, Any]) -> str:
    """The hints (the diagnostics report's too) that explain a CUDA failure:
    missing device nodes, or a torch built for a newer CUDA than the driver runs."""
    problems = device_nodes(host.device_nodes(), bool(host.container()["in_container"]))
    mismatch = driver_cuda(info.get("cuda"), _driver_cuda_version())
    if mismatch is not None:
        problems.append(mismatch)
    return "".join(f"; {p.what} — {p.hint}" for p in problems[:2])


def _driver_cuda_version() -> int | None:
    """The highest CUDA version the driver supports (NVML's 12080 form), or None."""

    def read(nvml: Any) -> int:
        getter = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        return int((getter or nvml.nvmlSystemGetCudaDriverVersion)())

    return reading(read)
