"""NVML, the one way in: the binding, its start and stop, and what its answers mean.

Every user of NVML goes through here: the ``nvml`` check, the figures the
torch checks put beside their results, the ``--report`` readings and the Xid
watch. Each takes what it needs: :func:`binding` imports ``pynvml``,
:func:`session` holds ``nvmlInit`` … ``nvmlShutdown`` around a block,
:func:`reading` is a figure that is None on any failure, and the codes, names
and messages below say what an error means.

``pynvml`` is imported only when :func:`binding` is called, never when this
module is: ``torchprobe --help`` and the network checks never load it. Each
call imports it again through ``sys.modules`` (a dict look-up once loaded),
so a test that swaps the module in ``sys.modules`` is seen at the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "DEAD", "EVENT_DOUBLE_BIT_ECC", "EVENT_SINGLE_BIT_ECC", "EVENT_XID", "FUNCTION_NOT_FOUND",
    "GPU_IS_LOST", "INIT_MESSAGES", "INVALID_ARGUMENT", "LOST_CONTAINER", "NOT_FOUND",
    "NOT_INSTALLED", "NOT_SUPPORTED", "NO_PERMISSION", "RESET_REQUIRED", "TEMPERATURE_THRESHOLDS",
    "TIMEOUT", "UNKNOWN", "UNSUPPORTED", "VALUE_MEMBERS", "Unavailable", "binding",
    "constant_name", "describe", "error_name", "field_value", "reading", "session",
]  # fmt: skip

T = TypeVar("T")

# -- what nvml.h fixes -----------------------------------------------------------
# Error codes (nvmlReturn_t), named here so that no message needs a look-up.
SUCCESS = 0
INVALID_ARGUMENT, NOT_SUPPORTED, NO_PERMISSION, NOT_FOUND = 2, 3, 4, 6
DRIVER_NOT_LOADED, TIMEOUT, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND = 9, 10, 12, 13
GPU_IS_LOST, RESET_REQUIRED, LIB_RM_VERSION_MISMATCH = 15, 16, 18
UNKNOWN = 999
#: The GPU itself is gone or wedged: every further read of it fails the same way.
DEAD = (GPU_IS_LOST, RESET_REQUIRED)
#: "This GPU, or this driver, has no such reading" (retired pages on an H100, a
#: function newer than the driver): shown as such, never a failure.
UNSUPPORTED = (NOT_SUPPORTED, FUNCTION_NOT_FOUND)
#: c_nvmlValue_t's member for each NVML_VALUE_TYPE_* (the index).
VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
#: The report's names for nvmlTemperatureThresholds_t values.
TEMPERATURE_THRESHOLDS = (("slowdown", 1), ("shutdown", 0), ("gpu_max", 3), ("memory_max", 2))
# Event type bits (nvmlEventType*).
EVENT_SINGLE_BIT_ECC, EVENT_DOUBLE_BIT_ECC, EVENT_XID = 0x1, 0x2, 0x8

# -- what the errors mean ----------------------------------------------------------
# Inside a container, NVML's "Unknown Error" is what a host's `systemctl
# daemon-reload` leaves behind: systemd rewrites the container's device cgroup
# and takes away its access to /dev/nvidia* (nvidia-container-toolkit #48,
# #1227). Only a new container gets the access back.
LOST_CONTAINER = (
    "NVML_ERROR_UNKNOWN: in a container this means it lost its GPU access (a "
    "`systemctl daemon-reload` on the host revokes it): restart the container"
)
#: The ``nvml`` check's line for each way ``nvmlInit`` fails.
INIT_MESSAGES = {
    LIBRARY_NOT_FOUND: "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver is visible "
    "here — in a container, run with the NVIDIA container toolkit (--gpus)",
    DRIVER_NOT_LOADED: "NVIDIA driver not loaded: NVML's library is here but the kernel driver "
    "is not running (see nvidia-smi and dmesg on the host)",
    NO_PERMISSION: "NVML: no permission to open the GPU device files (/dev/nvidia*)",
    LIB_RM_VERSION_MISMATCH: "NVML library and kernel driver versions differ (driver upgraded "
    "without a reboot, or a mismatched libnvidia-ml.so.1 in the image)",
    UNKNOWN: f"NVML failed to start: {LOST_CONTAINER}",
}
#: :attr:`Unavailable.name` when the binding (nvidia-ml-py) does not import.
NOT_INSTALLED = "not installed"


def constant_name(nvml: ModuleType, prefix: str, value: int) -> str | None:
    """The binding's name, starting with ``prefix``, of the constant ``value``."""
    for name in dir(nvml):
        if name.startswith(prefix) and getattr(nvml, name) == value:
            return name
    return None


def error_name(nvml: ModuleType, value: int) -> str:
    """``NVML_ERROR_GPU_IS_LOST`` for 15; a code the binding does not name, by number."""
    return constant_name(nvml, "NVML_ERROR_", value) or f"NVML error {value}"


def describe(nvml: ModuleType, exc: Any, whole: bool = False) -> str:
    """An ``NVMLError`` as the ``nvml`` check words it. ``whole``: the error
    ended the GPU's (or the system's) readings, not one of them."""
    name = error_name(nvml, exc.value)
    if exc.value == GPU_IS_LOST:
        return f"lost ({name}): the GPU fell off the bus or stopped answering"
    if exc.value == RESET_REQUIRED:
        return f"needs a reset ({name}): the driver will not use it until it is reset"
    if exc.value == UNKNOWN and whole:  # one reading alone failing is not the lost container
        return f"Unknown Error: {LOST_CONTAINER}"
    return f"NVML error: {exc} ({name})"


def field_value(nvml: ModuleType, value: Any) -> Any:
    """The reading in one ``c_nvmlFieldValue_t`` of ``nvmlDeviceGetFieldValues``.

    The call succeeds as a whole while each field has its own status: a field
    that failed raises that status as ``NVMLError``; a driver older than the
    field does not know its id (INVALID_ARGUMENT), which is NOT_SUPPORTED.
    """
    ret = int(value.nvmlReturn)
    if ret == INVALID_ARGUMENT:
        ret = NOT_SUPPORTED
    if ret != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(ret)
    return getattr(value.value, VALUE_MEMBERS[int(value.valueType)])


# -- the binding, started ------------------------------------------------------------
class Unavailable(Exception):
    """NVML cannot be used here: the binding does not import, or ``nvmlInit`` failed.

    ``code`` is nvmlInit's error code (None: not installed), ``name`` its
    ``NVML_ERROR_*`` name (or :data:`NOT_INSTALLED`), ``message`` the ``nvml``
    check's line for it.
    """

    def __init__(self, code: int | None, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message


def binding() -> ModuleType | None:
    """``pynvml`` (nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


@contextmanager
def session(nvml: ModuleType | None) -> Iterator[ModuleType]:
    """``nvml`` between ``nvmlInit`` and ``nvmlShutdown``; raises :class:`Unavailable`
    (before the block runs) when it is None or does not start.

    A failed shutdown is ignored: the readings are taken, and it changes none of them.
    """
    if nvml is None:
        raise Unavailable(
            None, NOT_INSTALLED, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        message = INIT_MESSAGES.get(exc.value, f"NVML failed to start: {exc}")
        raise Unavailable(exc.value, error_name(nvml, exc.value), message) from None
    try:
        yield nvml
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def reading(read: Callable[[ModuleType], T]) -> T | None:
    """``read(pynvml)`` in a :func:`session`, or None on any error: for a figure
    beside a result, never the result itself."""
    try:
        with session(binding()) as nvml:
            return read(nvml)
    except Exception:  # noqa: BLE001 - a missing figure must not change what it is beside
        return None
