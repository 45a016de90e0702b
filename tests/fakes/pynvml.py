"""A fake ``pynvml`` for tests: NVIDIA GPUs where there are none.

With ``tests/fakes`` first on ``sys.path`` (or ``PYTHONPATH``), ``import pynvml``
finds this module. It loads the real nvidia-ml-py under the name
``_pynvml_real`` (exposed here as ``real``), re-exports all of its public names
(constants, structs, ``NVMLError`` and every ``NVMLError_*`` class), and
replaces only the functions that would call ``libnvidia-ml.so.1``. Errors are
the real classes with the real values, so code under test sees what it would
see on a GPU host.

The scenario is the environment variable ``TORCHPROBE_FAKE_NVML``: a JSON
document or the path of a JSON file, read again at every ``nvmlInit``::

    {"driver": "580.159.04", "cuda_driver": 13000, "init_error": null,
     "errors": {"nvmlDeviceGetCount": "UNKNOWN"}, "hang": {"nvmlInit": 30},
     "devices": [{"uuid": "GPU-...", "memory": {"used": 1073741824},
                  "temperature": 91, "retired_pending": 0, "error": null,
                  "errors": {"nvmlDeviceGetTemperature": "NOT_SUPPORTED"},
                  "hang": {"nvmlDeviceGetMemoryInfo": 30}, "mig_devices": []}]}

Every key is optional. A device's readings default to ``_H100`` below (an idle
H100 as NVML read it: docs/checks.md, nvml), with one such device when ``devices`` is absent.

- A reading whose value is an NVML error name (``"NOT_SUPPORTED"``,
  ``"GPU_IS_LOST"``, any ``NVML_ERROR_*`` suffix, case-insensitive) raises that
  error; null means NOT_SUPPORTED. ``init_error`` makes ``nvmlInit`` raise.
- ``errors`` maps a binding function's name to an error name, per device or at
  the top level (all devices); a device's ``error`` makes every call on it
  raise, the handle lookup included (a GPU that fell off the bus).
- ``hang`` maps a function's name (``nvmlInit`` too) to seconds spent in libc
  ``sleep`` through ``ctypes.PyDLL``, which holds the GIL as a stuck native
  NVML call does.
- ``memory.used`` is the v2 figure; v1 reports ``used + reserved`` as used;
  ``free`` defaults to ``total - reserved - used``. ``memory_v2`` set to an
  error name makes the v2 struct raise it (``"FUNCTION_NOT_FOUND"``: a driver
  older than v2).
- ``recovery_action`` is the field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION; ``fields``
  gives other field values by id (``{"230": 1}``); an absent one answers
  NOT_SUPPORTED in its own ``nvmlReturn``, as NVML does.
- ``mig_devices``: ``[{"uuid": "MIG-...", "name": "...", "memory": {...}}]``;
  a MIG handle has a name, UUID, memory and processes; the GPU-wide readings
  answer NOT_SUPPORTED on it (read them on the parent).
- ``processes``: ``[{"pid": 1234, "used_memory": 744488960}]``.
- Event sets: a device's ``event_types`` is the mask that
  ``nvmlDeviceGetSupportedEventTypes`` answers (default: SBE, DBE, PState,
  Xid, Clock, as an H100) or an error name; registering a type outside it, or
  on a MIG handle, raises NOT_SUPPORTED as NVML does. ``events`` is the path of
  a file of JSON lines that a test appends to while the process runs; each
  line appended after an event set was created is delivered once, in order,
  to it if it registered the line's device and type, by
  ``nvmlEventSetWait_v2``: ``{"device": 0, "xid": 79}``,
  ``{"device": 0, "type": "double_bit_ecc"}`` (or ``"single_bit_ecc"``), or
  ``{"error": "GPU_IS_LOST"}``, which that wait raises. A wait with nothing to
  deliver sleeps its timeout (the GIL released, as the real call releases
  it) and raises NVMLError_Timeout.

Without ``TORCHPROBE_FAKE_NVML`` this module replaces itself with the real one,
so a stray ``PYTHONPATH`` never hides a real GPU.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from types import ModuleType
from typing import Any

ENV = "TORCHPROBE_FAKE_NVML"
_HERE = os.path.dirname(os.path.realpath(__file__))


def _load_real(name: str) -> ModuleType:
    paths = [p for p in sys.path if os.path.realpath(p or os.curdir) != _HERE]
    found = importlib.machinery.PathFinder.find_spec("pynvml", paths)
    if found is None or found.origin is None:
        raise ImportError("the fake pynvml needs the real nvidia-ml-py installed", name="pynvml")
    spec = importlib.util.spec_from_file_location(name, found.origin)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The real module builds its NVMLError_* classes from sys.modules[__name__].
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if not os.environ.get(ENV):
    # The import statement returns whatever sys.modules holds once this body ends.
    _load_real("pynvml")
else:
    real = sys.modules.get("_pynvml_real") or _load_real("_pynvml_real")
    globals().update({k: v for k, v in vars(real).items() if not k.startswith("_")})

_MIB = 1 << 20
# An idle H100 as NVML read it: 81559 MiB in all, 480 MiB of it the driver's reservation;
# retired pages NOT_SUPPORTED because an H100 remaps rows instead.
_H100: dict[str, Any] = json.loads(
    """{"name": "NVIDIA H100 80GB HBM3",
    "memory": {"total": 85520809984, "reserved": 503316480, "used": 0}, "memory_v2": true,
    "temperature": 34, "slowdown": 89, "shutdown": 95, "gpu_max": 87, "memory_max": 95,
    "ecc_mode": 1, "ecc_uncorrected_volatile": 0, "ecc_corrected_volatile": 0,
    "ecc_uncorrected_aggregate": 0, "ecc_corrected_aggregate": 0,
    "remapped_rows": [0, 0, 0, 0], "retired_pending": "NOT_SUPPORTED",
    "recovery_action": 0, "processes": []}"""
)
_THRESHOLDS = {0: "shutdown", 1: "slowdown", 2: "memory_max", 3: "gpu_max"}
_state: dict[str, Any] = {"init": 0, "scenario": None}


class _Handle:
    """An opaque device handle: a GPU's index, and a MIG slice's index in it."""

    __slots__ = ("index", "mig")

    def __init__(self, index: int, mig: int | None = None) -> None:
        self.index, self.mig = index, mig

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.index}{'' if self.mig is None else f'/{self.mig}'}>"


def _code(name: str) -> int | None:
    code = getattr(real, "NVML_ERROR_" + name.upper().removeprefix("NVML_ERROR_"), None)
    return code if isinstance(code, int) else None


def _error(name: str | int) -> Exception:
    code = name if isinstance(name, int) else _code(name)
    if code is None:
        raise ValueError(f"{ENV}: {name!r} is not an NVML error name (e.g. GPU_IS_LOST)")
    error: Exception = real.NVMLError(code)  # __new__ picks the NVMLError_* subclass
    return error


def _scenario_from_env() -> dict[str, Any]:
    text = os.environ.get(ENV, "").strip()
    if not text.startswith("{"):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    scenario: dict[str, Any] = {"driver": "580.159.04", "cuda_driver": 13000, **json.loads(text)}
    devices = []
    for i, given in enumerate(scenario.get("devices", [{}])):
        device = {**_H100, "uuid": f"GPU-5e1f{i:04x}-0a1b-4c2d-8e3f-{i:012x}", **given}
        if isinstance(given.get("memory", {}), dict):
            device["memory"] = {**_H100["memory"], **given.get("memory", {})}
        migs = device.setdefault("mig_devices", [])
        device.setdefault("mig_mode", 1 if migs else 0)
        for j, mig in enumerate(migs):
            mig.setdefault("uuid", f"MIG-5e1f{i:04x}-0a1b-4c2d-8e3f-{j:012x}")
            mig.setdefault("name", f"{device['name']} MIG 1g.10gb")
            memory = {"total": 9984 * _MIB, "reserved": 0, "used": 0}
            mig["memory"] = {**memory, **mig.get("memory", {})}
        devices.append(device)
    scenario["devices"] = devices
    return scenario


def _hang(seconds: float) -> None:
    libc = ctypes.PyDLL(None)  # PyDLL keeps the GIL through the call, like a stuck driver
    libc.sleep(int(seconds))
    libc.usleep(int((seconds % 1) * 1_000_000))


def _apply(entry: dict[str, Any], fn: str) -> None:
    if fn in entry.get("hang", {}):
        _hang(float(entry["hang"][fn]))
    if entry.get("errors", {}).get(fn):
        raise _error(entry["errors"][fn])


def _scenario() -> dict[str, Any]:
    if not _state["init"]:  # as the real binding answers before nvmlInit
        raise _error("UNINITIALIZED")
    scenario: dict[str, Any] = _state["scenario"]
    return scenario


def _enter(fn: str) -> dict[str, Any]:
    scenario = _scenario()
    _apply(scenario, fn)
    return scenario


def _device(fn: str, handle: _Handle, mig_ok: bool = False) -> dict[str, Any]:
    gpu: dict[str, Any] = _enter(fn)["devices"][handle.index]
    if gpu.get("error"):
        raise _error(gpu["error"])
    _apply(gpu, fn)
    if handle.mig is None:
        return gpu
    mig: dict[str, Any] = gpu["mig_devices"][handle.mig]
    _apply(mig, fn)
    if not mig_ok:  # device-wide readings are the parent GPU's
        raise _error("NOT_SUPPORTED")
    return mig


def _reading(entry: dict[str, Any], key: str) -> Any:
    value = entry.get(key)
    if value is None:
        raise _error("NOT_SUPPORTED")
    if isinstance(value, str) and _code(value) is not None:
        raise _error(value)
    return value


# -- the replaced functions, with the real binding's signatures --------------------


def nvmlInitWithFlags(flags: int) -> None:
    scenario = _scenario_from_env()
    _apply(scenario, "nvmlInit")
    if scenario.get("init_error"):
        raise _error(scenario["init_error"])
    _state["scenario"] = scenario
    _state["init"] += 1


def nvmlInit() -> None:
    nvmlInitWithFlags(0)


def nvmlShutdown() -> None:
    _enter("nvmlShutdown")
    _state["init"] -= 1


def nvmlSystemGetDriverVersion() -> str:
    return str(_reading(_enter("nvmlSystemGetDriverVersion"), "driver"))


def nvmlSystemGetCudaDriverVersion() -> int:
    return int(_reading(_enter("nvmlSystemGetCudaDriverVersion"), "cuda_driver"))


def nvmlSystemGetCudaDriverVersion_v2() -> int:
    return int(_reading(_enter("nvmlSystemGetCudaDriverVersion_v2"), "cuda_driver"))


def nvmlDeviceGetCount() -> int:
    return len(_enter("nvmlDeviceGetCount")["devices"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    if not 0 <= index < len(_scenario()["devices"]):
        raise _error("INVALID_ARGUMENT")
    handle = _Handle(index)
    _device("nvmlDeviceGetHandleByIndex", handle)
    return handle


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for i, gpu in enumerate(_scenario()["devices"]):
        for j, entry in [(None, gpu), *enumerate(gpu["mig_devices"])]:
            if entry["uuid"] == wanted:
                handle = _Handle(i, j)
                _device("nvmlDeviceGetHandleByUUID", handle, mig_ok=True)
                return handle
    _enter("nvmlDeviceGetHandleByUUID")
    raise _error("NOT_FOUND")


def nvmlDeviceGetName(handle: _Handle) -> str:
    return str(_device("nvmlDeviceGetName", handle, mig_ok=True)["name"])


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return str(_device("nvmlDeviceGetUUID", handle, mig_ok=True)["uuid"])


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    _device("nvmlDeviceGetIndex", handle)
    return handle.index


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> Any:
    entry = _device("nvmlDeviceGetMemoryInfo", handle, mig_ok=True)
    memory = _reading(entry, "memory")
    total, reserved, used = memory["total"], memory["reserved"], memory["used"]
    free = memory.get("free", total - reserved - used)
    if not version:  # v1: the driver's reservation counts as used
        return real.c_nvmlMemory_t(total=total, free=free, used=total - free)
    if version != real.nvmlMemory_v2:
        raise _error("ARGUMENT_VERSION_MISMATCH")
    if entry.get("memory_v2", True) is not True:
        raise _error(entry["memory_v2"])
    return real.c_nvmlMemory_v2_t(
        version=version, total=total, reserved=reserved, free=free, used=used
    )


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    entry = _device("nvmlDeviceGetTemperature", handle)
    if sensor != real.NVML_TEMPERATURE_GPU:
        raise _error("INVALID_ARGUMENT")
    return int(_reading(entry, "temperature"))


def nvmlDeviceGetTemperatureThreshold(handle: _Handle, threshold: int) -> int:
    entry = _device("nvmlDeviceGetTemperatureThreshold", handle)
    if threshold not in _THRESHOLDS:
        raise _error("NOT_SUPPORTED")
    return int(_reading(entry, _THRESHOLDS[threshold]))


def nvmlDeviceGetEccMode(handle: _Handle) -> list[int]:
    mode = int(_reading(_device("nvmlDeviceGetEccMode", handle), "ecc_mode"))
    return [mode, mode]


def nvmlDeviceGetTotalEccErrors(handle: _Handle, errorType: int, counterType: int) -> int:
    entry = _device("nvmlDeviceGetTotalEccErrors", handle)
    if not _reading(entry, "ecc_mode"):
        raise _error("NOT_SUPPORTED")
    kind = "uncorrected" if errorType == real.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "corrected"
    counter = "volatile" if counterType == real.NVML_VOLATILE_ECC else "aggregate"
    return int(_reading(entry, f"ecc_{kind}_{counter}"))


def nvmlDeviceGetRemappedRows(device: _Handle) -> tuple[int, int, int, int]:
    rows = _reading(_device("nvmlDeviceGetRemappedRows", device), "remapped_rows")
    corrected, uncorrected, pending, failure = (int(v) for v in rows)
    return corrected, uncorrected, pending, failure


def nvmlDeviceGetRetiredPagesPendingStatus(device: _Handle) -> int:
    entry = _device("nvmlDeviceGetRetiredPagesPendingStatus", device)
    return int(_reading(entry, "retired_pending"))


def nvmlDeviceGetFieldValues(handle: _Handle, fieldIds: list[Any]) -> Any:
    entry = _device("nvmlDeviceGetFieldValues", handle)
    fields = {str(real.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): entry.get("recovery_action")}
    fields.update(entry.get("fields", {}))
    values = (real.c_nvmlFieldValue_t * len(fieldIds))()
    for value, field in zip(values, fieldIds, strict=True):
        value.fieldId, value.scopeId = field if isinstance(field, tuple) else (field, 0)
        value.timestamp = time.time_ns() // 1000
        # Like NVML: the call succeeds, each field carries its own return code.
        try:
            number = int(_reading(fields, str(value.fieldId)))
        except real.NVMLError as exc:
            value.nvmlReturn = exc.value
            continue
        value.nvmlReturn = real.NVML_SUCCESS
        value.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
        value.value.uiVal = number
    return values


def nvmlDeviceGetMigMode(device: _Handle) -> list[int]:
    mode = int(_reading(_device("nvmlDeviceGetMigMode", device), "mig_mode"))
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(device: _Handle) -> int:
    return int(_device("nvmlDeviceGetMaxMigDeviceCount", device).get("max_mig_devices", 7))


def nvmlDeviceGetMigDeviceHandleByIndex(device: _Handle, index: int) -> _Handle:
    if not 0 <= index < len(_device("nvmlDeviceGetMigDeviceHandleByIndex", device)["mig_devices"]):
        raise _error("NOT_FOUND")
    return _Handle(device.index, index)


def nvmlDeviceIsMigDeviceHandle(device: _Handle) -> Any:
    _device("nvmlDeviceIsMigDeviceHandle", device, mig_ok=True)
    return ctypes.c_uint(device.mig is not None)  # the real binding returns the c_uint


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice: _Handle) -> _Handle:
    _device("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice, mig_ok=True)
    if migDevice.mig is None:
        raise _error("INVALID_ARGUMENT")
    return _Handle(migDevice.index)


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[Any]:
    entry = _device("nvmlDeviceGetComputeRunningProcesses", handle, mig_ok=True)
    return [
        real.nvmlFriendlyObject(
            {
                "pid": p["pid"],
                "usedGpuMemory": p.get("used_memory"),
                "gpuInstanceId": p.get("gpu_instance", 0xFFFFFFFF),
                "computeInstanceId": p.get("compute_instance", 0xFFFFFFFF),
            }
        )
        for p in _reading(entry, "processes")
    ]


nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses


# -- event sets ----------------------------------------------------------------------
_XID, _SBE, _DBE = 0x8, 0x1, 0x2
_EVENT_KINDS = {"xid": _XID, "single_bit_ecc": _SBE, "double_bit_ecc": _DBE}
# What an H100 answers (SBE, DBE, PState, Xid, Clock).
_H100["event_types"] = 0x1F


class _EventSet:
    """An opaque event set: what it registered, and how far it has read."""

    def __init__(self) -> None:
        self.registered: dict[int, int] = {}  # GPU index -> event type mask
        self.delivered = 0
        self.freed = False


class _EventData:
    """Shaped like the real binding's c_nvmlEventData_t."""

    __slots__ = ("device", "eventType", "eventData", "gpuInstanceId", "computeInstanceId")

    def __init__(self, device: _Handle, event_type: int, data: int) -> None:
        self.device, self.eventType, self.eventData = device, event_type, data
        self.gpuInstanceId = self.computeInstanceId = 0xFFFFFFFF  # not a MIG slice


def nvmlEventSetCreate() -> _EventSet:
    _enter("nvmlEventSetCreate")
    events = _EventSet()
    # Like NVML: a new set hears of what happens from now on, not of the past.
    events.delivered = len(_pending(events))
    return events


def nvmlEventSetFree(eventSet: _EventSet) -> None:
    _enter("nvmlEventSetFree")
    eventSet.freed = True


def nvmlDeviceGetSupportedEventTypes(handle: _Handle) -> int:
    return int(_reading(_device("nvmlDeviceGetSupportedEventTypes", handle), "event_types"))


def nvmlDeviceRegisterEvents(handle: _Handle, eventTypes: int, eventSet: _EventSet) -> None:
    entry = _device("nvmlDeviceRegisterEvents", handle)  # a MIG handle: NOT_SUPPORTED
    supported = int(_reading(entry, "event_types"))
    if eventTypes & ~supported:
        raise _error("NOT_SUPPORTED")
    eventSet.registered[handle.index] = eventSet.registered.get(handle.index, 0) | eventTypes


def _pending(eventSet: _EventSet) -> list[dict[str, Any]]:
    path = _scenario().get("events")
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            # A line still being written is not complete until its newline.
            lines = [line for line in f.read().split("\n")[:-1] if line.strip()]
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[eventSet.delivered :]]


def nvmlEventSetWait_v2(eventSet: _EventSet, timeoutms: int) -> _EventData:
    _enter("nvmlEventSetWait_v2")
    if eventSet.freed:
        raise _error("INVALID_ARGUMENT")
    deadline = time.monotonic() + timeoutms / 1000
    while True:
        for line in _pending(eventSet):
            eventSet.delivered += 1
            if line.get("error"):
                raise _error(line["error"])
            index = int(line.get("device", 0))
            kind = _EVENT_KINDS[line.get("type", "xid")]
            if eventSet.registered.get(index, 0) & kind:
                data = int(line.get("xid", 0)) if kind == _XID else 0
                return _EventData(_Handle(index), kind, data)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _error("TIMEOUT")
        time.sleep(min(left, 0.02))


nvmlEventSetWait = nvmlEventSetWait_v2
