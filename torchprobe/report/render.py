"""Rendering the report: sections and problems in, text or JSON out, to a file.

Unlike a probe's output, the text report is for a person at a shell: it is
not capped at Docker's 4096 bytes, and shows every reading.

JSON stability: ``schema_version`` is an integer; within one version keys are
only ever added, never removed or changed in meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from torchprobe.common.jsonout import dumps
from torchprobe.report.hints import Problem

__all__ = ["SCHEMA_VERSION", "render_report_json", "render_report_text"]

SCHEMA_VERSION = 1
_GIB = float(1 << 30)
_MIB = float(1 << 20)


def render_report_json(document: dict[str, Any], problems: Sequence[Problem], fp: TextIO) -> None:
    out = {
        "schema_version": SCHEMA_VERSION,
        **document,
        "problems": [p._asdict() for p in problems],
    }
    fp.write(dumps(out, indent=2) + "\n")


def render_report_text(document: dict[str, Any], problems: Sequence[Problem], fp: TextIO) -> None:
    s = document["sections"]
    lines = [
        f"torchprobe {s['torchprobe']['version']} diagnostics report "
        f"({document['generated']}, took {document['duration']:.1f}s)"
    ]
    _block(lines, "torchprobe and Python", s["torchprobe"])
    c = s["container"]
    _block(
        lines,
        "container",
        {
            "in a container": (
                "yes" + (f" ({c['runtime']})" if c["runtime"] else "")
                if c["in_container"]
                else "no (no container marks found)"
            ),
            "seen": ", ".join(c["hints"]) or "nothing",
            "NVIDIA marks": ", ".join(c["nvidia_hints"]) or "none",
        },
    )
    _block(
        lines,
        "environment",
        {k: "(unset)" if v is None else repr(v) for k, v in s["environment"].items()},
    )
    n = s["device_nodes"]
    _block(
        lines,
        "device nodes",
        {
            "present": " ".join(n["present"]) or "none",
            "missing": " ".join(n["missing"]) or "none",
            **({"no read/write access": " ".join(n["inaccessible"])} if n["inaccessible"] else {}),
        },
    )
    libs = s["libraries"]
    _block(lines, "NVIDIA libraries", _libraries(libs) if libs["status"] == "ok" else libs)
    _block(lines, "torch", _torch(s["torch"]))
    _block(lines, "torch CUDA runtime", _runtime(s["torch_cuda"]))
    _block(lines, "NVML", _nvml(s["nvml"], s["cuda_compatibility"], s["torch"]))
    for gpu in s["gpus"]:
        title = f"GPU {gpu['index']}" + (
            f": {gpu['name']}" if isinstance(gpu.get("name"), str) else ""
        )
        rows = (
            _gpu(gpu) if gpu["status"] == "ok" else {k: v for k, v in gpu.items() if k != "index"}
        )
        _block(lines, title, rows)
    _block(lines, "GPU processes", _processes(s["processes"]))
    lines.append("")
    if problems:
        lines.append(f"== problems ({len(problems)}) ==")
        for number, p in enumerate(problems, 1):
            lines.append(f"  {number}. {p.what}")
            lines.append(f"     -> {p.hint}")
    else:
        lines.append("== no problems found ==")
    fp.write("\n".join(lines) + "\n")


def _block(lines: list[str], title: str, rows: dict[str, Any]) -> None:
    lines.append("")
    lines.append(f"== {title} ==")
    rows = dict(rows)
    status = rows.pop("status", "ok")
    traceback = rows.pop("traceback", None)
    if status != "ok":
        lines.append(f"  {status.upper()}: {rows.pop('message', '')}")
    width = max((len(str(k)) for k in rows), default=0)
    for key, value in rows.items():
        lines.append(f"  {str(key).ljust(width)}  {_value(value)}")
    if traceback:
        lines.extend("  | " + line for line in str(traceback).rstrip().splitlines())


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value) or "none"
    return str(value)


def _libraries(libs: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in ("libnvidia-ml.so.1", "libcuda.so.1"):
        entry = libs.get(name) or {}
        if entry.get("loaded"):
            rows[name] = f"loads ({entry.get('path') or entry.get('find_library')})"
        else:
            rows[name] = f"does not load: {entry.get('error') or 'not found'}"
    rows["kernel driver"] = libs.get("kernel_driver") or "not loaded (/proc/driver/nvidia absent)"
    return rows


def _torch(build: dict[str, Any]) -> dict[str, Any]:
    if build.get("status") != "ok" or build.get("import_error"):
        return build
    return {
        "version": build["torch"],
        "built for": build["build"],
        "cuDNN": build.get("cudnn") or "none",
        "path": build.get("path"),
    }


def _nvml(
    nvml: dict[str, Any], compatibility: dict[str, Any], build: dict[str, Any]
) -> dict[str, Any]:
    binding = f"nvidia-ml-py {nvml.get('binding') or '(version unknown)'}"
    if nvml.get("status") != "ok":
        return nvml
    if nvml.get("error"):
        return {"started": f"no: {nvml['error']}", "binding": binding}
    return {
        "started": "yes",
        "binding": binding,
        "driver": nvml.get("driver"),
        "CUDA (driver)": f"up to {nvml.get('cuda_driver')}",
        "torch vs driver": (
            f"torch built for CUDA {compatibility['torch_cuda']}: {compatibility['says']}"
            if compatibility["torch_cuda"]
            else "does not apply: torch has no CUDA build"
            if build.get("status") == "ok" and not build.get("import_error")
            else "unknown: torch was not read"
        ),
        "NVML version": nvml.get("nvml_version"),
        "GPUs": nvml.get("device_count"),
    }


def _runtime(runtime: dict[str, Any]) -> dict[str, Any]:
    if runtime.get("status") != "ok":
        return runtime
    rows = {k: v for k, v in runtime.items() if k != "devices"}
    for device in runtime.get("devices") or ():
        shown = {k: v for k, v in device.items() if k != "index"}
        if "memory_total" in shown:
            shown["memory_total"] = _gib(shown["memory_total"])
        rows[f"cuda:{device['index']}"] = shown
    return rows


def _gib(value: Any) -> str:
    return f"{value / _GIB:.1f} GiB" if isinstance(value, int) else str(value)


def _gpu(gpu: dict[str, Any]) -> dict[str, Any]:
    rows = {k: v for k, v in gpu.items() if k not in ("index", "name")}
    memory = gpu.get("memory")
    if isinstance(memory, dict):
        rows["memory"] = (
            f"{_gib(memory['used'])} used, {_gib(memory['free'])} free of "
            f"{_gib(memory['total'])}"
            + (
                f", {_gib(memory['reserved'])} reserved by the driver"
                if memory.get("reserved") is not None
                else ""
            )
            + f" ({memory.get('struct')})"
        )
    utilization = gpu.get("utilization")
    if isinstance(utilization, dict):
        rows["utilization"] = f"gpu {utilization['gpu']}%, memory {utilization['memory']}%"
    temperature = gpu.get("temperature")
    if isinstance(temperature, dict):
        rows["temperature"] = ", ".join(
            f"{k} {v}°C" if isinstance(v, int) else f"{k} {v}" for k, v in temperature.items()
        )
    power = gpu.get("power")
    if isinstance(power, dict):
        rows["power"] = " of ".join(
            f"{v} W" if isinstance(v, float) else str(v)
            for v in (power["draw_w"], power["limit_w"])
        )
    clocks = gpu.get("clocks_event_reasons")
    if isinstance(clocks, dict):
        rows["clocks_event_reasons"] = (
            ", ".join(clocks["names"]) or "none"
        ) + f" ({clocks['mask']})"
    if gpu.get("lost"):
        taken = [k for k in rows if k not in ("status", "lost")]
        before = " (the readings above were taken before)" if taken else ""
        rows["lost"] = f"{gpu['lost']}{before}"
    return rows


def _processes(section: dict[str, Any]) -> dict[str, Any]:
    if section.get("status") != "ok":
        return section
    rows: dict[str, Any] = {}
    if section.get("error"):
        rows["error"] = section["error"]
    for gpu in section.get("gpus") or ():
        key = f"GPU {gpu['index']}"
        if "processes" not in gpu:
            rows[key] = f"lost ({gpu['lost']})" if gpu.get("lost") else gpu.get("error")
            continue
        listed = [
            f"pid {p['pid']} {p['name'] or '(name not visible here)'} ({p['type']}, "
            + (
                f"{p['used_memory'] / _MIB:.0f} MiB)"
                if p["used_memory"] is not None
                else "memory not available)"
            )
            for p in gpu["processes"]
        ]
        rows[key] = "; ".join(listed) or "none"
        for kind in ("compute", "graphics"):
            if gpu.get(f"{kind}_error"):
                rows[f"{key} {kind}"] = gpu[f"{kind}_error"]
    return rows or {"GPUs": "none"}
