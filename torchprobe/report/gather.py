"""Gathering the report's readings under its deadline, through the engine.

The readings that can hang (torch, NVML, loading driver libraries) are
internal checks run by :func:`torchprobe.engine.loop.run`, each in a worker process
under its own timeout, so one hung call costs only its own section. They run
in two rounds: the first asks NVML how many GPUs there are (beside torch and
the libraries), the second reads each GPU as a check of its own, so that a GPU
that hangs NVML loses that GPU's readings only. The second round starts a fresh
``nvml`` worker: that costs one more import of the binding (tens of ms), the
price of a timeout per GPU.
"""

from __future__ import annotations

import time
from typing import Any

from torchprobe.base import Check, Status
from torchprobe.common.deadline import Deadline
from torchprobe.engine.loop import Planned, run
from torchprobe.engine.spec import format_check, parse_occurrence
from torchprobe.gpu.host import container, device_nodes
from torchprobe.report import host
from torchprobe.report.hints import VERDICTS, cuda_verdict
from torchprobe.report.nvmlinfo import ReportGpu, ReportNvml
from torchprobe.report.processes import ReportGpuProcesses
from torchprobe.report.torchinfo import ReportTorch, ReportTorchCuda

__all__ = ["gather"]

#: Share of the budget kept back from the first round for the second (per-GPU)
#: one, so that a hung torch or nvmlInit cannot leave the GPUs unread.
SECOND_ROUND_SHARE = 0.3
SECOND_ROUND_MAX = 10.0


def _planned(position: int, cls: type[Check], timeout: float, **options: Any) -> Planned:
    pieces = [(key, str(value)) for key, value in options.items()]
    token = format_check(cls.name, [*pieces, ("timeout", f"{timeout:.3f}")])
    # Parsed as the worker will parse it: the worker rebuilds the check from
    # this token and the reference, never from the instance made here.
    occurrence = parse_occurrence(token, {o.key: o for o in cls.options}, {})
    instance = cls(**occurrence.values, timeout=timeout)
    reference = f"{cls.__module__}:{cls.__qualname__}"
    return Planned(position, occurrence, cls, reference, False, instance)


def _section(p: Planned, verbose: bool) -> dict[str, Any]:
    """One check's result as a section: its readings, or why there are none."""
    if not p.results:
        return {"status": "not run", "message": "no result"}
    result = p.results[0]
    readings = result.details.get("readings")
    if result.status is Status.PASS and isinstance(readings, dict):
        return {"status": "ok", **readings}
    message = result.message
    if result.reason == "timeout" or (result.reason == "deadline" and p.phase == "running"):
        status = "timed out"
    elif result.reason == "deadline":
        status = "not finished"
    else:
        status = "failed"
    section: dict[str, Any] = {"status": status, "message": message}
    if verbose and result.error:
        section["traceback"] = result.error
    return section


def gather(budget: float, deadline: float, verbose: bool) -> dict[str, Any]:
    """Every reading, as JSON-able sections; returns by ``deadline`` (monotonic)."""
    sections: dict[str, Any] = {
        "torchprobe": host.versions(),
        "container": container(),
        "environment": host.environment(),
        "device_nodes": device_nodes(),
    }
    now = time.monotonic()
    reserve = min(SECOND_ROUND_MAX, SECOND_ROUND_SHARE * (deadline - now))
    # A tight deadline tightens each reading's timeout too, so that one hung
    # call leaves time for the others (5 s per GPU and 10 s for nvmlInit, which
    # takes seconds on a big machine without persistence mode, at the default 30 s).
    reading = max(1.0, min(5.0, budget / 6))
    first = [
        _planned(0, host.ReportLibraries, reading),
        _planned(1, ReportNvml, 2 * reading),
        _planned(2, ReportTorch, 4 * reading),
        _planned(3, ReportTorchCuda, 2 * reading),
    ]
    run(first, Deadline(deadline - reserve, budget))
    libraries, nvml, build, runtime = (_section(p, verbose) for p in first)
    sections.update(libraries=libraries, nvml=nvml, torch=build, torch_cuda=runtime)

    gpus: list[dict[str, Any]] = []
    started = nvml["status"] == "ok" and not nvml.get("error")
    count = nvml.get("device_count") if started else None
    why = "NVML could not count the GPUs" if started else "NVML did not start"
    processes: dict[str, Any] = {"status": "not run", "message": why}
    if isinstance(count, int) and count > 0:
        second = [_planned(i, ReportGpu, reading, index=i) for i in range(count)]
        second.append(_planned(count, ReportGpuProcesses, reading))
        run(second, Deadline(deadline, budget))
        for i, p in enumerate(second[:-1]):
            gpus.append({"index": i, **_section(p, verbose)})
        processes = _section(second[-1], verbose)
    elif isinstance(count, int):
        processes = {"status": "not run", "message": "NVML sees no GPU"}
    sections.update(gpus=gpus, processes=processes)
    torch_cuda = build.get("cuda") if build["status"] == "ok" else None
    driver_cuda = nvml.get("cuda_driver") if nvml["status"] == "ok" else None
    verdict = cuda_verdict(torch_cuda, driver_cuda)
    sections["cuda_compatibility"] = {
        "torch_cuda": torch_cuda,
        "driver_cuda": driver_cuda,
        "verdict": verdict,
        "says": VERDICTS[verdict],
    }
    return sections
