"""The ``nvml`` check: GPU health as the driver sees it, through nvidia-ml-py.

NVML answers in milliseconds and creates no CUDA context, so this check costs
the GPUs nothing. It sees what a separate process can see: a GPU that fell off
the bus or needs a reset, memory exhaustion, ECC and row-remap failures, thermal
slowdown, a recovery action the driver asks for. It cannot see a server's
poisoned CUDA context (that takes the ``cuda`` and ``tensor`` checks in-process).

The binding is imported, started and stopped through :mod:`torchprobe.gpu.nvml`,
only inside the check: ``torchprobe --help`` never loads it, and ``nvmlInit``
never runs at import time. The check runs in the ``nvml`` worker, which the
engine kills at the deadline, because a sick GPU can hang an NVML call while it
holds the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, failed, passed
from torchprobe.gpu import nvml as api
from torchprobe.gpu.nvml import describe, error_name
from torchprobe.options import listof, number

__all__ = ["NvmlCheck"]

_GIB = float(1 << 30)


def _device_id(value: str) -> str:
    if value.isdigit() or value.startswith(("GPU-", "MIG-")):
        return value
    raise ValueError(f"{value!r} is not a GPU index, a GPU-... UUID or a MIG-... UUID")


_device_id.type_name = "index|uuid"  # type: ignore[attr-defined]


class _NoSuchDevice(Exception):
    """A ``device=`` that NVML does not know: that line fails, the others report."""


class _Device:
    """The readings of one device. A reading the GPU lacks is listed in
    ``unsupported``; any other NVML error on a reading becomes a problem, except
    a lost or wedged GPU, which ends the device's probe (raised to the caller)."""

    def __init__(self, nvml: ModuleType, handle: Any, parent: Any, details: dict[str, Any]):
        self.nvml, self.handle, self.parent, self.details = nvml, handle, parent, details
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.unsupported: list[str] = []

    def read(self, what: str, fn: Callable[..., Any] | str, *args: Any) -> Any:
        """``fn(*args)``; a name is an NVML function called on the (parent) GPU."""
        try:
            if isinstance(fn, str):
                return getattr(self.nvml, fn)(self.parent, *args)
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if exc.value in api.DEAD:
                raise
            if exc.value in api.UNSUPPORTED:
                self.unsupported.append(what)
            else:
                self.problems.append(f"{what}: {describe(self.nvml, exc)}")
            return None

    def memory(self, max_percent: float) -> None:
        # v2 reports the driver's own reservation (480 MiB on an idle H100) apart
        # from ``used``; v1 counts it as used. Drivers before v2 answer
        # FunctionNotFound or a version mismatch: fall back to v1, which all have.
        nvml, why_v1 = self.nvml, "the binding has no nvmlMemory_v2"
        info: Any = None
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            try:
                info = nvml.nvmlDeviceGetMemoryInfo(self.handle, version=version)
            except nvml.NVMLError as exc:
                if exc.value in api.DEAD:
                    raise
                why_v1 = f"v2 unavailable: {exc}"
        v2 = info is not None
        if not v2:
            info = self.read("memory", nvml.nvmlDeviceGetMemoryInfo, self.handle)
            if info is None:
                return
        total, used, free = int(info.total), int(info.used), int(info.free)
        percent = 100.0 * used / total if total else 0.0
        self.details.update(
            memory_struct="v2" if v2 else "v1",
            memory_figure="used excludes the driver's reservation (nvmlMemory_v2)"
            if v2
            else f"used includes the driver's reservation (v1 struct; {why_v1})",
            memory_total=total,
            memory_used=used,
            memory_free=free,
            memory_reserved=int(info.reserved) if v2 else None,
            memory_percent=round(percent, 2),
            max_memory=max_percent,
        )
        figure = f"memory {used / _GIB:.1f}/{total / _GIB:.1f} GiB" + ("" if v2 else " (v1)")
        if percent > max_percent:
            self.problems.append(f"{figure} ({percent:.1f}% > {max_percent:g}%)")
        else:
            self.notes.append(f"{figure} ({percent:.1f}% ≤ {max_percent:g}%)")

    def temperature(self, override: float | None) -> None:
        nvml = self.nvml
        temp = self.read("temperature", "nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU)
        if temp is None:
            return
        slowdown = self.read(
            "slowdown_temperature",
            "nvmlDeviceGetTemperatureThreshold",
            nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
        )
        self.details.update(
            temperature=temp, slowdown_temperature=slowdown, max_temperature=override
        )
        if override is not None:
            hot = temp > override
            text = f"{temp}°C ({'>' if hot else '≤'} {override:g}°C)"
        elif slowdown is not None:
            hot = temp >= slowdown  # at its slowdown threshold the GPU throttles itself
            text = f"{temp}°C ({'at or above ' if hot else ''}slowdown {slowdown}°C)"
        else:
            hot, text = False, f"{temp}°C"
        (self.problems if hot else self.notes).append(text)

    def ecc(self) -> None:
        nvml, d = self.nvml, self.details
        mode = self.read("ecc", "nvmlDeviceGetEccMode")
        if mode is None:
            return
        d["ecc_mode"] = "on" if mode[0] else "off"
        if not mode[0]:
            self.notes.append("ECC off")
            return
        # Volatile counts: since the driver was loaded. Corrected errors are the
        # hardware doing its job: reported, never failed.
        for kind in ("uncorrected", "corrected"):
            error_type = getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{kind.upper()}")
            d[f"ecc_{kind}_volatile"] = self.read(
                f"ecc_{kind}", "nvmlDeviceGetTotalEccErrors", error_type, nvml.NVML_VOLATILE_ECC
            )
        bad = d["ecc_uncorrected_volatile"]
        if bad:
            self.problems.append(f"{bad} uncorrectable ECC error{'s' if bad > 1 else ''}")
        elif bad is not None:
            self.notes.append("ECC ok")

    def remapped_rows(self) -> None:
        rows = self.read("remapped_rows", "nvmlDeviceGetRemappedRows")
        if rows is None:
            return
        corrected, uncorrected, pending, failure = (int(v) for v in rows)
        self.details.update(
            remapped_corrected=corrected,
            remapped_uncorrected=uncorrected,
            remapped_pending=bool(pending),
            remapped_failure=bool(failure),
        )
        if failure:
            self.problems.append("row remapping failed (the GPU needs service)")
        if pending:
            self.problems.append("row remapping pending (reset the GPU to apply it)")
        if not failure and not pending:
            self.notes.append("remapped rows ok")

    def retired_pages(self) -> None:
        # Pre-Ampere GPUs retire pages; the H100 remaps rows instead (NotSupported).
        pending = self.read("retired_pages", "nvmlDeviceGetRetiredPagesPendingStatus")
        if pending is None:
            return
        self.details["retired_pages_pending"] = bool(pending)
        if pending:
            self.problems.append("retired pages pending (reset the GPU to retire them)")
        else:
            self.notes.append("retired pages ok")

    def recovery_action(self) -> None:
        nvml, prefix = self.nvml, "NVML_GPU_RECOVERY_ACTION_"
        field = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
        if field is None:  # an nvidia-ml-py older than the field
            self.unsupported.append("recovery_action")
            return
        action = self.read("recovery_action", self._field, field)
        if action is None:
            return
        name = api.constant_name(nvml, prefix, action) or f"{prefix}{action}"
        self.details.update(recovery_action=action, recovery_action_name=name)
        if action:
            readable = name.removeprefix(prefix).lower().replace("_", " ")
            self.problems.append(f"the driver asks for recovery: {readable} ({name})")

    def _field(self, field: int) -> Any:
        return api.field_value(
            self.nvml, self.nvml.nvmlDeviceGetFieldValues(self.parent, [field])[0]
        )


class NvmlCheck(Check):
    name = "nvml"
    description = (
        "GPU health from the driver (NVML, no CUDA context): lost GPUs, memory, "
        "temperature, ECC, row remapping, recovery action; one line per GPU"
    )
    options = (
        Option(
            "device",
            listof(_device_id, unique=True),
            help="GPUs to check: NVML indexes, GPU-... or MIG-... UUIDs, |-separated "
            "(default: all). NVML ignores CUDA_VISIBLE_DEVICES: match torch's GPUs by UUID",
        ),
        Option("max-memory", number(0, 100), default=98.0, help="fail above this % memory used"),
        Option(
            "max-temperature",
            number(0, 200),
            help="fail above this many °C (default: fail at the GPU's own slowdown threshold)",
        ),
    )
    timeout = 5.0
    worker = "nvml"

    device: list[str] | None
    max_memory: float
    max_temperature: float | None

    _nvml: ModuleType | None = None

    def setup(self) -> None:
        # None: run() says so, a failing line, not a crash of the worker.
        self._nvml = api.binding()

    def run(self) -> list[Outcome]:
        if self._nvml is None:
            self.setup()
        try:
            with api.session(self._nvml) as nvml:
                return self._probe_all(nvml)
        except api.Unavailable as exc:
            details = {} if exc.code is None else {"nvml_error": exc.name}
            raise CheckFailed(exc.message, **details) from None

    def _probe_all(self, nvml: ModuleType) -> list[Outcome]:
        system: dict[str, Any] = {}
        try:
            system["driver"] = nvml.nvmlSystemGetDriverVersion()
            cuda = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
            system["cuda_driver"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except nvml.NVMLError:
            pass  # informative only
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            system["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            message = f"NVML cannot list the GPUs: {describe(nvml, exc, whole=True)}"
            raise CheckFailed(message, **system) from None
        if count == 0:
            raise CheckFailed("no NVIDIA GPU found (NVML sees 0 devices)", **system)
        targets = self.device or [str(i) for i in range(count)]
        return [self._probe(nvml, target, count, system) for target in targets]

    def _probe(self, nvml: ModuleType, target: str, count: int, system: dict[str, Any]) -> Outcome:
        details: dict[str, Any] = {"device": target, **system}
        label = f"GPU {target}" if target.isdigit() else target
        try:
            handle = self._handle(nvml, target, count)
            mig = target.startswith("MIG-")
            # A MIG slice has its own memory; its health (temperature, ECC, rows,
            # recovery) is that of the GPU it is carved from.
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle) if mig else handle
            label = details["name"] = nvml.nvmlDeviceGetName(handle)
            details["uuid"] = nvml.nvmlDeviceGetUUID(handle)
            if mig:
                details["parent_uuid"] = nvml.nvmlDeviceGetUUID(parent)
            details["nvml_index"] = int(nvml.nvmlDeviceGetIndex(parent))
            device = _Device(nvml, handle, parent, details)
            device.memory(self.max_memory)
            device.temperature(self.max_temperature)
            device.ecc()
            device.remapped_rows()
            device.retired_pages()
            device.recovery_action()
        except _NoSuchDevice as exc:
            return failed(str(exc), target=target, **details)
        except nvml.NVMLError as exc:
            details["nvml_error"] = error_name(nvml, exc.value)
            message = f"{label}: {describe(nvml, exc, whole=True)}"
            return failed(message, target=target, **details)
        details["unsupported"] = device.unsupported
        message = f"{label}: " + ", ".join(device.problems + device.notes)
        if device.problems:
            return failed(message, target=target, **details)
        return passed(message, target=target, **details)

    @staticmethod
    def _handle(nvml: ModuleType, target: str, count: int) -> Any:
        visible = f"{count} GPU{'s' if count != 1 else ''} visible to NVML"
        try:
            if target.isdigit():
                return nvml.nvmlDeviceGetHandleByIndex(int(target))
            return nvml.nvmlDeviceGetHandleByUUID(target)
        except nvml.NVMLError as exc:
            if exc.value not in (api.INVALID_ARGUMENT, api.NOT_FOUND):
                raise
        if target.isdigit():
            raise _NoSuchDevice(f"no GPU with index {target} ({visible})")
        kind = "MIG device" if target.startswith("MIG-") else "GPU"
        raise _NoSuchDevice(f"no {kind} with UUID {target} ({visible})")
