"""``cuda:backend=driver``: the driver-API probe's verdicts, one line per device.

:mod:`torchprobe.checks.cudadriver` makes the calls; this module turns what
they return into outcomes, with the hints the diagnostics report gives too
(:mod:`torchprobe.gpu.hints`).
"""

from __future__ import annotations

from typing import Any

from torchprobe.base import CheckFailed, Outcome, failed, passed
from torchprobe.checks.cudadriver import LIBRARY, CudaCallFailed, Driver, probe_device
from torchprobe.gpu import host
from torchprobe.gpu.hints import HOST_LOGS, device_nodes, gpu_lost, libraries

__all__ = ["run_driver"]

# What to do about a CUresult, where there is more to say than its meaning.
_TODO: dict[int, str] = {
    2: "the GPU is full: `torchprobe --report` lists the processes holding its memory",
    34: "a directory of CUDA toolkit stubs (…/lib64/stubs) is on LD_LIBRARY_PATH ahead of the "
    "driver's library: remove it",
    46: "the GPU's compute mode lets only one process use it and another does "
    "(`nvidia-smi -q -d COMPUTE` on the host)",
    209: "the driver is too old for this GPU: upgrade the NVIDIA driver",
    218: "the driver's PTX JIT failed: upgrade the NVIDIA driver",
    221: "mount the driver's compute libraries: NVIDIA_DRIVER_CAPABILITIES must include compute",
    222: "the driver is too old for PTX ISA 6.0: upgrade the NVIDIA driver (CUDA 9 or newer)",
    802: "start the host's NVIDIA daemons (nvidia-fabricmanager on NVSwitch systems, "
    "nvidia-persistenced)",
    803: "reboot after a driver upgrade, or remove a libcuda.so.1 baked into the image (the "
    "NVIDIA container runtime mounts the host's)",
    999: "if the host ran `systemctl daemon-reload`, the container lost its GPU: restart the "
    "container; otherwise drain the node and reset the GPU",
}
NO_DEVICE = 100  # cuInit's answer on a machine with the driver but no visible GPU
# Codes about what this process can see, not about one GPU.
_VISIBILITY = frozenset({3, 100, 101, 304})


def run_driver(min_devices: int) -> list[Outcome]:
    try:
        driver = Driver()
    except OSError as exc:
        raise CheckFailed(
            _no_library(str(exc)), backend="driver", library=LIBRARY, error=str(exc)[:300]
        ) from None
    info: dict[str, Any] = {"backend": "driver", "library": LIBRARY}
    try:
        driver.call("cuInit", 0)
        version = driver.version()
        if version:
            info["driver_cuda"] = f"{version // 1000}.{version % 1000 // 10}"
        count = driver.count()
    except CudaCallFailed as exc:
        if exc.code == NO_DEVICE and min_devices == 0:
            return [passed(f"no devices (min-devices=0; cuInit: {exc.name}); {LIBRARY}", **info)]
        raise CheckFailed(_failure(exc, None), **info, error=exc.name) from None
    except AttributeError as exc:
        raise CheckFailed(_missing(exc), **info) from None
    info["device_count"] = count
    versions = f"{LIBRARY}, CUDA {info['driver_cuda']} driver" if version else LIBRARY
    if count < min_devices:
        raise CheckFailed(
            f"{count} CUDA device(s) visible to the driver, at least {min_devices} required "
            f"({versions}; CUDA_VISIBLE_DEVICES and the container's --gpus decide what is "
            f"visible){_host_hints()}",
            **info,
        )
    if count == 0:
        return [passed(f"no devices (min-devices=0); {versions}", **info)]
    return [_one(driver, index, versions, info) for index in range(count)]


def _one(driver: Driver, index: int, versions: str, info: dict[str, Any]) -> Outcome:
    label = f"cuda:{index}"
    try:
        device = probe_device(driver, index)
    except CudaCallFailed as exc:
        device = getattr(exc, "info", {"index": index})
        return failed(_failure(exc, _label(label, device)), target=label, **info,
                      device=device, error=exc.name)  # fmt: skip
    except AttributeError as exc:
        return failed(_missing(exc), target=label, **info)
    where = _label(label, device)
    if not device["verified"]:
        return failed(
            f"{where}: the kernel's result is wrong (got {' '.join(device['wrong'])}…, want "
            f"{' '.join(device['want'])}…): the device computes garbage — {_reset()}",
            target=label, **info, device=device,
        )  # fmt: skip
    return passed(
        f"{where}: kernel ran and verified in {device['seconds'] * 1000:.1f} ms; {versions}",
        target=label, **info, device=device,
    )  # fmt: skip


def _label(label: str, device: dict[str, Any]) -> str:
    said = [str(device[k]) for k in ("name", "uuid") if device.get(k)]
    return f"{label} ({', '.join(said)})" if said else label


def _failure(exc: CudaCallFailed, where: str | None) -> str:
    line = f"{where}: {exc}" if where else str(exc)
    todo = _TODO.get(exc.code)
    if exc.code in _VISIBILITY:
        line += "; CUDA_VISIBLE_DEVICES and the container's --gpus decide what is visible"
        return line + _host_hints()
    if todo is None and exc.sticky:
        todo = _reset()
    return line + (f" — {todo}" if todo else "")


def _reset() -> str:
    problem = gpu_lost("", "NVML_ERROR_RESET_REQUIRED")
    assert problem is not None
    return f"{problem.hint}; see {HOST_LOGS}"


def _missing(exc: AttributeError) -> str:
    return (f"{LIBRARY} lacks a driver API entry point ({exc}): the NVIDIA driver is too old "
            "for this probe (its kernel needs a CUDA 9 driver or newer); upgrade it")  # fmt: skip


def _no_library(error: str) -> str:
    """No libcuda: the report's words for it, and why the GPU is missing."""
    problems = libraries({LIBRARY: {"loaded": False, "error": " ".join(error.split())[:200]}},
                         None)  # fmt: skip
    meaning = (
        ": no NVIDIA driver is visible here (a container started without the NVIDIA runtime, "
        "or a host without the driver)"
    )
    line = "; ".join(f"{p.what}{meaning} — {p.hint}" for p in problems)
    return (line or f"{LIBRARY} does not load{meaning}") + _host_hints()


def _host_hints() -> str:
    """The device-node hints (the report's too): a container started without GPU access."""
    problems = device_nodes(host.device_nodes(), bool(host.container()["in_container"]))
    return "".join(f"; {p.what} — {p.hint}" for p in problems[:2])
