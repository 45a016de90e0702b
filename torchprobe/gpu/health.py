"""What one GPU's NVML readings (as the ``--report`` diagnostics gather them)
say is wrong. Pure functions, like :mod:`torchprobe.gpu.hints`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchprobe.gpu.hints import NOT_SUPPORTED, Problem

__all__ = ["clock_reasons", "gpu_health"]

_GIB = float(1 << 30)
# Below this much free memory a new process cannot count on room for its CUDA
# context (617 MiB measured on an H100 with lazy loading: docs/performance.md).
_LOW_FREE = 1 << 30

# NVML's clocks event (formerly throttle) reason bits, fixed by nvml.h.
_CLOCK_REASONS = {
    0x1: "gpu idle", 0x2: "applications clocks setting", 0x4: "sw power cap",
    0x8: "hw slowdown", 0x10: "sync boost", 0x20: "sw thermal slowdown",
    0x40: "hw thermal slowdown", 0x80: "hw power brake slowdown",
    0x100: "display clock setting", 0x200: "board limit", 0x400: "reliability",
}  # fmt: skip
# The reasons that mean trouble; the others are settings or an idle GPU.
_BAD_CLOCKS = ("hw slowdown", "sw thermal slowdown", "hw thermal slowdown",
               "hw power brake slowdown")  # fmt: skip


def clock_reasons(mask: int) -> list[str]:
    """Decode a clocks event (throttle) reason bit mask into names."""
    names = [name for bit, name in _CLOCK_REASONS.items() if mask & bit]
    rest = mask & ~sum(_CLOCK_REASONS)
    return names + ([f"unknown 0x{rest:x}"] if rest else [])


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


def _group(value: Any) -> Mapping[str, Any]:
    """A group of readings; a whole group may be "not supported" or an error."""
    return value if isinstance(value, Mapping) else {}


def gpu_health(label: str, gpu: Mapping[str, Any]) -> list[Problem]:
    """What a GPU's readings (as the report gathers them) say is wrong."""
    problems: list[Problem] = []
    temp = _group(gpu.get("temperature"))
    now, slowdown = _number(temp.get("current")), _number(temp.get("slowdown"))
    if now is not None and slowdown is not None and now >= slowdown:
        problems.append(
            Problem(
                f"{label} is at {now:g}°C, at or above its slowdown "
                f"threshold {slowdown:g}°C: it throttles itself",
                "check the cooling: fans, airflow, the data-centre inlet temperature",
            )
        )
    clocks = _group(gpu.get("clocks_event_reasons"))
    bad = [n for n in clocks.get("names") or () if n in _BAD_CLOCKS]
    if bad:
        problems.append(
            Problem(
                f"{label} clocks slowed by {', '.join(bad)}",
                "check cooling and the power supply; `nvidia-smi -q -d "
                "PERFORMANCE` on the host says more",
            )
        )
    ecc = _group(gpu.get("ecc"))
    uncorrected = _number(ecc.get("uncorrected_volatile"))
    if uncorrected:
        problems.append(
            Problem(
                f"{label} has {uncorrected:g} uncorrectable ECC error(s) since the driver loaded",
                "drain the node and reset the GPU (`nvidia-smi -r`); replace it if they recur",
            )
        )
    rows = _group(gpu.get("remapped_rows"))
    if rows.get("failure") is True:
        problems.append(
            Problem(
                f"{label}: row remapping failed",
                "the GPU's memory is out of spare rows: it needs service (RMA)",
            )
        )
    if rows.get("pending") is True or _group(gpu.get("retired_pages")).get("pending") is True:
        problems.append(
            Problem(
                f"{label}: a memory repair (row remap / page retirement) is pending",
                "reset the GPU (`nvidia-smi -r`) or reboot to apply it",
            )
        )
    action = gpu.get("recovery_action")
    if (
        isinstance(action, str)
        and action not in ("none", NOT_SUPPORTED)
        and not action.startswith("error")
    ):
        problems.append(
            Problem(
                f"{label}: the driver asks for recovery: {action}",
                "do what it asks (reset the GPU, drain or reboot the node)",
            )
        )
    memory = _group(gpu.get("memory"))
    free, total = _number(memory.get("free")), _number(memory.get("total"))
    if free is not None and total and free < _LOW_FREE:
        problems.append(
            Problem(
                f"{label} has {free / _GIB:.2f} GiB free of {total / _GIB:.0f} "
                "GiB: a new CUDA context (about 600 MiB) may not fit",
                "see the GPU processes section for who holds the memory",
            )
        )
    return problems
