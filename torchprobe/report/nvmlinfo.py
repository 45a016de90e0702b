"""The report's NVML readings, in the ``nvml`` worker.

Separate checks, so that one hung NVML call loses only its part of the
report: the system (driver, CUDA version, device count), one check per GPU,
and the processes holding GPU memory (:mod:`.processes`). A reading the GPU or driver does not
have is the string ``"not supported"``; any other error on a reading is
``"error: NVML_ERROR_..."``; neither ends the check. Only a lost GPU (or one
that needs a reset) ends that GPU's readings, since every further call would
fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from torchprobe.base import Check, Option, Outcome, Status
from torchprobe.options import integer
from torchprobe.report.hints import NOT_SUPPORTED, clock_reasons

__all__ = ["Dead", "NvmlCheck", "ReportGpu", "ReportNvml", "done", "error_name"]

# NVML error codes, fixed by nvml.h.
_NOT_SUPPORTED, _FUNCTION_NOT_FOUND, _GPU_IS_LOST, _RESET_REQUIRED = 3, 13, 15, 16
_UNSUPPORTED = (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND)
_DEAD = (_GPU_IS_LOST, _RESET_REQUIRED)
# c_nvmlValue_t's member for each NVML_VALUE_TYPE_*.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
_THRESHOLDS = (("slowdown", 1), ("shutdown", 0), ("gpu_max", 3), ("memory_max", 2))


def error_name(nvml: ModuleType, value: int) -> str:
    for name in dir(nvml):
        if name.startswith("NVML_ERROR_") and getattr(nvml, name) == value:
            return name
    return f"NVML error {value}"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def done(readings: dict[str, Any]) -> Outcome:
    return Outcome(Status.PASS, "read", {"readings": readings})


class Dead(Exception):
    """The GPU is lost or needs a reset: its readings end here."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class NvmlCheck(Check):
    timeout = 5.0
    worker = "nvml"

    nvml: ModuleType | None = None

    def setup(self) -> None:
        try:
            import pynvml
        except ImportError:
            return  # run() reports it as a reading
        self.nvml = pynvml

    def read(self, convert: Callable[[Any], Any], fn: str, *args: Any) -> Any:
        """``convert(nvml.fn(*args))``, or what the error says instead."""
        nvml = self.nvml
        assert nvml is not None
        function = getattr(nvml, fn, None)
        if function is None:  # an nvidia-ml-py older than the call
            return NOT_SUPPORTED
        try:
            return convert(function(*args))
        except nvml.NVMLError as exc:
            if exc.value in _DEAD:
                raise Dead(error_name(nvml, exc.value)) from None
            if exc.value in _UNSUPPORTED:
                return NOT_SUPPORTED
            return f"error: {error_name(nvml, exc.value)}"

    def started(self) -> str | None:
        """nvmlInit; the error's name when it fails."""
        nvml = self.nvml
        if nvml is None:
            return "not installed"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return error_name(nvml, exc.value)
        return None

    def stop(self) -> None:
        assert self.nvml is not None
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass  # the readings are taken; a failed shutdown changes none of them


class ReportNvml(NvmlCheck):
    """Whether NVML starts, the driver's versions, and how many GPUs it sees."""

    name = "report-nvml"
    description = "the report's NVML system readings"

    def run(self) -> Outcome:
        readings: dict[str, Any] = {"binding": _binding_version()}
        error = readings["error"] = self.started()
        if error:
            return done(readings)
        try:
            readings["driver"] = self.read(_text, "nvmlSystemGetDriverVersion")
            cuda = self.read(int, "nvmlSystemGetCudaDriverVersion_v2")
            if not isinstance(cuda, int):
                cuda = self.read(int, "nvmlSystemGetCudaDriverVersion")
            readings["cuda_driver"] = (
                f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else cuda
            )
            readings["nvml_version"] = self.read(_text, "nvmlSystemGetNVMLVersion")
            readings["device_count"] = self.read(int, "nvmlDeviceGetCount")
        except Dead as dead:  # a system call answering "lost": some GPU is
            readings["device_count"] = f"error: {dead.name}"
        finally:
            self.stop()
        return done(readings)


def _watts(milliwatts: Any) -> float:
    return round(int(milliwatts) / 1000, 1)


def _on_off(mode: Any) -> str:
    return "enabled" if int(mode) else "disabled"


def _rows(rows: Any) -> dict[str, Any]:
    corrected, uncorrected, pending, failure = (int(v) for v in rows)
    return {"corrected": corrected, "uncorrected": uncorrected, "pending": bool(pending),
            "failure": bool(failure)}  # fmt: skip


def _binding_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-ml-py")
    except PackageNotFoundError:
        return None


class ReportGpu(NvmlCheck):
    """Every reading of one GPU, by its NVML index."""

    name = "report-gpu"
    description = "the report's readings of one GPU"
    options = (Option("index", integer(0), default=0, help="NVML index"),)

    index: int

    def run(self) -> Outcome:
        gpu: dict[str, Any] = {"index": self.index}
        error = self.started()
        if error:
            return done({**gpu, "error": error})
        try:
            self._read_all(gpu)
        except Dead as dead:
            gpu["lost"] = dead.name
        finally:
            self.stop()
        return done(gpu)

    def _read_all(self, gpu: dict[str, Any]) -> None:
        nvml, read = self.nvml, self.read
        assert nvml is not None
        handle = read(lambda h: h, "nvmlDeviceGetHandleByIndex", self.index)
        if isinstance(handle, str):
            gpu["error"] = handle
            return
        gpu["name"] = read(_text, "nvmlDeviceGetName", handle)
        gpu["uuid"] = read(_text, "nvmlDeviceGetUUID", handle)
        gpu["bus_id"] = read(lambda p: _text(p.busId), "nvmlDeviceGetPciInfo", handle)
        gpu["compute_capability"] = read(
            lambda c: f"{c[0]}.{c[1]}", "nvmlDeviceGetCudaComputeCapability", handle
        )
        gpu["memory"] = self._memory(handle)
        gpu["utilization"] = read(
            lambda u: {"gpu": int(u.gpu), "memory": int(u.memory)},
            "nvmlDeviceGetUtilizationRates",
            handle,
        )
        temperature = {
            "current": read(int, "nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU)
        }
        for key, threshold in _THRESHOLDS:
            temperature[key] = read(int, "nvmlDeviceGetTemperatureThreshold", handle, threshold)
        gpu["temperature"] = temperature
        gpu["power"] = {
            "draw_w": read(_watts, "nvmlDeviceGetPowerUsage", handle),
            "limit_w": read(_watts, "nvmlDeviceGetEnforcedPowerLimit", handle),
        }
        gpu["clocks_event_reasons"] = self._clocks(handle)
        gpu["ecc"] = self._ecc(handle)
        gpu["retired_pages"] = self._retired(handle)
        gpu["remapped_rows"] = read(_rows, "nvmlDeviceGetRemappedRows", handle)
        gpu["mig_mode"] = read(lambda m: _on_off(m[0]), "nvmlDeviceGetMigMode", handle)
        gpu["persistence_mode"] = read(_on_off, "nvmlDeviceGetPersistenceMode", handle)
        gpu["recovery_action"] = self._recovery(handle)

    def _memory(self, handle: Any) -> Any:
        nvml = self.nvml
        assert nvml is not None

        def figures(m: Any) -> dict[str, Any]:
            reserved = getattr(m, "reserved", None)
            return {
                "total": int(m.total),
                "used": int(m.used),
                "free": int(m.free),
                "reserved": None if reserved is None else int(reserved),
            }

        # v2 tells the driver's own reservation apart from what processes use.
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            memory = self.read(figures, "nvmlDeviceGetMemoryInfo", handle, version)
            if not isinstance(memory, str):
                return dict(memory, struct="v2")
        memory = self.read(figures, "nvmlDeviceGetMemoryInfo", handle)
        return memory if isinstance(memory, str) else dict(memory, struct="v1")

    def _clocks(self, handle: Any) -> Any:
        def decode(mask: Any) -> dict[str, Any]:
            return {"mask": f"0x{int(mask):x}", "names": clock_reasons(int(mask))}

        # The "event reasons" call replaced the "throttle reasons" one in driver 535.
        value = self.read(decode, "nvmlDeviceGetCurrentClocksEventReasons", handle)
        if value == NOT_SUPPORTED:
            value = self.read(decode, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return value

    def _ecc(self, handle: Any) -> Any:
        nvml = self.nvml
        assert nvml is not None
        mode = self.read(lambda m: "on" if int(m[0]) else "off", "nvmlDeviceGetEccMode", handle)
        ecc: dict[str, Any] = {"mode": mode}
        if mode != "on":
            return ecc
        for kind in ("uncorrected", "corrected"):
            error_type = getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{kind.upper()}")
            for counter in ("volatile", "aggregate"):
                counter_type = getattr(nvml, f"NVML_{counter.upper()}_ECC")
                ecc[f"{kind}_{counter}"] = self.read(
                    int, "nvmlDeviceGetTotalEccErrors", handle, error_type, counter_type
                )
        return ecc

    def _retired(self, handle: Any) -> Any:
        nvml = self.nvml
        assert nvml is not None
        # Pre-Ampere GPUs retire pages; an H100 remaps rows instead ("not supported").
        pending = self.read(bool, "nvmlDeviceGetRetiredPagesPendingStatus", handle)
        if pending == NOT_SUPPORTED:
            return NOT_SUPPORTED
        pages: dict[str, Any] = {"pending": pending}
        for key, cause in (
            ("single_bit", "MULTIPLE_SINGLE_BIT_ECC_ERRORS"),
            ("double_bit", "DOUBLE_BIT_ECC_ERROR"),
        ):
            number = getattr(nvml, f"NVML_PAGE_RETIREMENT_CAUSE_{cause}")
            pages[key] = self.read(len, "nvmlDeviceGetRetiredPages", handle, number)
        return pages

    def _recovery(self, handle: Any) -> Any:
        nvml, prefix = self.nvml, "NVML_GPU_RECOVERY_ACTION_"
        assert nvml is not None
        field = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
        if field is None:  # an nvidia-ml-py older than the field
            return NOT_SUPPORTED

        def decode(values: Any) -> str:
            value = values[0]
            if int(value.nvmlReturn) != nvml.NVML_SUCCESS:  # each field has its own status
                raise nvml.NVMLError(_NOT_SUPPORTED)
            action = int(getattr(value.value, _VALUE_MEMBERS[int(value.valueType)]))
            names = [n for n in dir(nvml) if n.startswith(prefix) and getattr(nvml, n) == action]
            return names[0].removeprefix(prefix).lower().replace("_", " ") if names else str(action)

        return self.read(decode, "nvmlDeviceGetFieldValues", handle, [field])
