"""From GPU and driver readings to what is wrong and what to do about it.

Pure functions: readings in (plain dicts and strings), :class:`Problem` values
out. Nothing here imports torch or NVML or touches the system, so the ``cuda``
check and the ``--report`` diagnostics phrase the same failure with the same
words, and the tests can pin every hint down without a GPU. NVML errors are
passed by name (``"NVML_ERROR_GPU_IS_LOST"``). What one GPU's readings say is
:mod:`torchprobe.gpu.health`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

__all__ = [
    "HOST_LOGS", "NOT_SUPPORTED", "Problem", "VERDICTS", "cuda_verdict", "device_nodes",
    "driver_cuda", "gpu_lost", "libraries", "nvml_start", "parse_cuda",
]  # fmt: skip

#: A reading the GPU or driver does not have: shown as such, never a failure.
NOT_SUPPORTED = "not supported"
#: Where the host keeps a GPU's story: hints send users there.
HOST_LOGS = "`nvidia-smi` and `dmesg | grep -i xid` on the host"


class Problem(NamedTuple):
    """One failure found: what is wrong, and what to do about it."""

    what: str
    hint: str


# -- versions ------------------------------------------------------------------
def parse_cuda(version: str | int | None) -> tuple[int, int] | None:
    """``"12.8"``, ``"12.8.1"`` or NVML's ``12080`` -> ``(12, 8)``; None when unknown."""
    if isinstance(version, int) and not isinstance(version, bool):
        return (version // 1000, version % 1000 // 10) if version > 0 else None
    if not isinstance(version, str):
        return None
    parts = version.strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


# The driver branch that first supports each CUDA toolkit (NVIDIA's CUDA
# release notes, Linux): says which driver to install, not just "newer".
_DRIVER_FOR = {
    (11, 8): "R520", (12, 0): "R525", (12, 1): "R530", (12, 2): "R535", (12, 3): "R545",
    (12, 4): "R550", (12, 5): "R555", (12, 6): "R560", (12, 8): "R570", (12, 9): "R575",
    (13, 0): "R580",
}  # fmt: skip


def cuda_verdict(
    torch_cuda: str | None, driver_cuda: str | int | None
) -> Literal["ok", "minor", "major", "unknown"]:
    """Can a driver that supports CUDA ``driver_cuda`` run torch built for ``torch_cuda``?

    ``minor``: same major version, newer minor: CUDA's minor-version
    compatibility lets most of torch run, but anything that needs PTX JIT or a
    newer driver API fails. ``major``: it cannot run at all.
    """
    built, supported = parse_cuda(torch_cuda), parse_cuda(driver_cuda)
    if built is None or supported is None:
        return "unknown"
    if built <= supported:
        return "ok"
    return "major" if built[0] > supported[0] else "minor"


VERDICTS = {
    "ok": "the driver can run torch's CUDA",
    "minor": "torch's CUDA is newer than the driver's: minor-version compatibility only",
    "major": "torch's CUDA is newer than the driver can run",
    "unknown": "unknown: needs a CUDA build of torch and a working NVML",
}


def driver_cuda(torch_cuda: str | None, driver_cuda: str | int | None) -> Problem | None:
    """torch built for a newer CUDA than the NVIDIA driver supports."""
    verdict = cuda_verdict(torch_cuda, driver_cuda)
    if verdict in ("ok", "unknown"):
        return None
    built, supported = parse_cuda(torch_cuda), parse_cuda(driver_cuda)
    assert built is not None and supported is not None
    need = _DRIVER_FOR.get(built)
    driver = f"a driver that supports CUDA {built[0]}.{built[1]}" + (
        f" ({need} or newer)" if need else ""
    )
    what = (
        f"driver supports CUDA {supported[0]}.{supported[1]} but torch was built for "
        f"{built[0]}.{built[1]}"
    )
    if verdict == "major":
        what += ": torch cannot use the GPU"
        fix = f"install {driver}, or a torch build for CUDA {supported[0]}.x"
    else:
        what += ": kernels that need PTX JIT or newer driver features will fail"
        fix = (
            f"install {driver}, or a torch build for CUDA ≤ {supported[0]}.{supported[1]} "
            "(pip install torch --index-url https://download.pytorch.org/whl/cuXYZ)"
        )
    return Problem(what, fix)


# -- the system ----------------------------------------------------------------
def device_nodes(nodes: Mapping[str, Any], in_container: bool) -> list[Problem]:
    """``nodes``: ``gpus`` (the /dev/nvidiaN paths), ``missing`` (required nodes
    that are absent), ``inaccessible`` (present, but not readable and writable)."""
    if not nodes.get("gpus") and "/dev/nvidiactl" in (nodes.get("missing") or ()):
        if in_container:
            return [
                Problem(
                    "no /dev/nvidia* device nodes: the container was started without GPU access",
                    "start it with `--gpus all` (docker) or the NVIDIA "
                    "container runtime; in Kubernetes request nvidia.com/gpu",
                )
            ]
        return [
            Problem(
                "no /dev/nvidia* device nodes: the NVIDIA kernel driver is not loaded",
                "install or load the driver (`lsmod | grep nvidia`, `modprobe nvidia`, "
                "`nvidia-smi`)",
            )
        ]
    problems = []
    missing = list(nodes.get("missing") or ())
    if missing:
        problems.append(
            Problem(
                f"device node{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}",
                "CUDA needs /dev/nvidiactl and /dev/nvidia-uvm: on the host run "
                "`nvidia-modprobe -u -c=0` (or `modprobe nvidia-uvm`); in a container use the "
                "NVIDIA container runtime",
            )
        )
    if nodes.get("inaccessible"):
        problems.append(
            Problem(
                f"no read/write access to {', '.join(nodes['inaccessible'])}",
                "run as a user in the group that owns them (often `video`), or fix their mode",
            )
        )
    return problems


def libraries(libs: Mapping[str, Any], nvml_error: str | None) -> list[Problem]:
    """libcuda missing while NVML is there (when both are missing, NVML's own
    problem says why, and saying it twice would only add noise)."""
    cuda = libs.get("libcuda.so.1") or {}
    if not isinstance(cuda, Mapping) or cuda.get("loaded", True):
        return []
    if nvml_error == "NVML_ERROR_LIBRARY_NOT_FOUND":
        return []
    return [
        Problem(
            f"libcuda.so.1 does not load ({cuda.get('error') or 'not found'})",
            "the driver's CUDA library is not mounted: in a container set "
            "NVIDIA_DRIVER_CAPABILITIES to include compute (e.g. compute,utility); on a host "
            "reinstall the driver",
        )
    ]


_NVML_START = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (
        "NVML not found (libnvidia-ml.so.1): the NVIDIA driver's user-space libraries are not "
        "mounted",
        "in a container run with `--gpus all` or the NVIDIA container runtime (with "
        "NVIDIA_DRIVER_CAPABILITIES including utility); on a host install the NVIDIA driver",
    ),
    "NVML_ERROR_DRIVER_NOT_LOADED": (
        "NVIDIA driver not loaded: NVML's library is here but the kernel driver is not running",
        f"load it on the host (`modprobe nvidia`) and see {HOST_LOGS}",
    ),
    "NVML_ERROR_NO_PERMISSION": (
        "NVML has no permission to open the GPU device files (/dev/nvidia*)",
        "run as a user in the group that owns /dev/nvidia* (often `video`)",
    ),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        "NVML library and kernel driver versions differ",
        "reboot after a driver upgrade, or remove a libnvidia-ml.so.1 baked into the image "
        "(the container runtime mounts the host's)",
    ),
    # A host's `systemctl daemon-reload` revokes a running container's device
    # cgroup access to /dev/nvidia*; NVML then answers Unknown Error
    # (nvidia-container-toolkit #48, #1227).
    "NVML_ERROR_UNKNOWN": (
        "NVML answers Unknown Error: inside a container this is how it looks once the "
        "container lost its GPU access (the host ran `systemctl daemon-reload`)",
        f"restart the container (a new one gets its GPU back); on a host, see {HOST_LOGS}",
    ),
    "not installed": (
        "the NVML binding (nvidia-ml-py) is not installed",
        "pip install nvidia-ml-py",
    ),
}


def nvml_start(error: str | None) -> Problem | None:
    """Why NVML did not start, by the NVML error name of ``nvmlInit``."""
    if not error:
        return None
    what, hint = _NVML_START.get(error, (f"NVML failed to start ({error})", f"see {HOST_LOGS}"))
    return Problem(what, hint)


# -- one GPU ---------------------------------------------------------------------
def gpu_lost(label: str, error: str | None) -> Problem | None:
    """A GPU that fell off the bus or needs a reset."""
    if error == "NVML_ERROR_GPU_IS_LOST":
        return Problem(
            f"{label} is lost (NVML_ERROR_GPU_IS_LOST): it fell off the bus or stopped answering",
            f"look for Xid 79 in {HOST_LOGS}; reset the GPU "
            "(`nvidia-smi -r`) or reboot the node; replace it if it recurs",
        )
    if error == "NVML_ERROR_RESET_REQUIRED":
        return Problem(
            f"{label} needs a reset (NVML_ERROR_RESET_REQUIRED)",
            "drain the node and reset the GPU (`nvidia-smi -r`) or reboot",
        )
    if error == "NVML_ERROR_UNKNOWN":  # see nvml_start
        return Problem(
            f"{label}: NVML answers Unknown Error (in a container: it lost its GPU access, "
            "as a host's `systemctl daemon-reload` does)",
            "restart the container (a new one gets its GPU back)",
        )
    return None
