"""The report's reading of the processes that hold GPU memory, in the ``nvml``
worker: a check of its own, so that a hang listing them costs only this part."""

from __future__ import annotations

from typing import Any

from torchprobe.base import Outcome
from torchprobe.common.procfs import comm
from torchprobe.gpu import nvml as api
from torchprobe.report.nvmlinfo import Dead, NvmlSection, done

__all__ = ["ReportGpuProcesses"]


class ReportGpuProcesses(NvmlSection):
    """The processes holding memory on each GPU."""

    name = "report-gpu-processes"
    description = "the report's GPU process readings"

    def run(self) -> Outcome:
        gpus: list[dict[str, Any]] = []
        try:
            with api.session(self.nvml):
                try:
                    count = self.read(int, "nvmlDeviceGetCount")
                    for index in range(count if isinstance(count, int) else 0):
                        gpus.append(self._one(index))
                except Dead as dead:
                    count = f"error: {dead.name}"
        except api.Unavailable as exc:
            return done({"error": exc.name})
        if isinstance(count, str):
            return done({"error": count.removeprefix("error: "), "gpus": gpus})
        return done({"gpus": gpus})

    def _one(self, index: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index}
        try:
            handle = self.read(lambda h: h, "nvmlDeviceGetHandleByIndex", index)
            if isinstance(handle, str):
                return dict(entry, error=handle)
            found: list[dict[str, Any]] = []
            for kind in ("compute", "graphics"):
                listed = self.read(list, f"nvmlDeviceGet{kind.title()}RunningProcesses", handle)
                if isinstance(listed, str):
                    entry[f"{kind}_error"] = listed
                    continue
                found.extend(_process(p, kind) for p in listed)
            entry["processes"] = found
        except Dead as dead:
            entry["lost"] = dead.name
        return entry


def _process(p: Any, kind: str) -> dict[str, Any]:
    pid = int(p.pid)
    used = getattr(p, "usedGpuMemory", None)
    return {
        "pid": pid,
        # NVML may answer with PIDs of another PID namespace (the host's):
        # their names are then not visible from here (None).
        "name": comm(pid),
        "type": kind,
        "used_memory": int(used) if isinstance(used, int) else None,
    }
