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
from torchprobe.gpu import nvml as api
from torchprobe.gpu.health import clock_reasons
from torchprobe.gpu.hints import NOT_SUPPORTED
from torchprobe.options import integer

__all__ = ["Dead", "NvmlSection", "ReportGpu", "ReportNvml", "done"]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def done(readings: dict[str, Any]) -> Outcome:
    return Outcome(Status.PASS, "read", {"readings": readings})


class Dead(Exception):
    """The GPU is lost or needs a reset: its readings end here."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class NvmlSection(Check):
    """A part of the report read through NVML: :meth:`read` turns each error
    into a reading, and ``with api.session(self.nvml)`` holds NVML started
    (:class:`~torchprobe.gpu.nvml.Unavailable` names why it did not start)."""

    timeout = 5.0
    worker = "nvml"

    nvml: ModuleType | None = None

    def setup(self) -> None:
        self.nvml = api.binding()  # None: the section says "not installed" as a reading

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
            if exc.value in api.DEAD:
                raise Dead(api.error_name(nvml, exc.value)) from None
            if exc.value in api.UNSUPPORTED:
                return NOT_SUPPORTED
            return f"error: {api.error_name(nvml, exc.value)}"


class ReportNvml(NvmlSection):
    """Whether NVML starts, the driver's versions, and how many GPUs it sees."""

    name = "report-nvml"
    description = "the report's NVML system readings"

    def run(self) -> Outcome:
        readings: dict[str, Any] = {"binding": _binding_version(), "error": None}
        try:
            with api.session(self.nvml):
                self._read_all(readings)
        except api.Unavailable as exc:
            readings["error"] = exc.name
        return done(readings)

    def _read_all(self, readings: dict[str, Any]) -> None:
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


class ReportGpu(NvmlSection):
    """Every reading of one GPU, by its NVML index."""

    name = "report-gpu"
    description = "the report's readings of one GPU"
    options = (Option("index", integer(0), default=0, help="NVML index"),)

    index: int

    def run(self) -> Outcome:
        gpu: dict[str, Any] = {"index": self.index}
        try:
            with api.session(self.nvml):
                try:
                    self._read_all(gpu)
                except Dead as dead:
                    gpu["lost"] = dead.name
        except api.Unavailable as exc:
            return done({**gpu, "error": exc.name})
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
        for key, threshold in api.TEMPERATURE_THRESHOLDS:
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
            try:
                action = int(api.field_value(nvml, values[0]))
            except nvml.NVMLError:  # the field's own status: the report has no such reading
                raise nvml.NVMLError(api.NOT_SUPPORTED) from None
            name = api.constant_name(nvml, prefix, action)
            return name.removeprefix(prefix).lower().replace("_", " ") if name else str(action)

        return self.read(decode, "nvmlDeviceGetFieldValues", handle, [field])
