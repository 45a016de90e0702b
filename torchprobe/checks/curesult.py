"""CUDA driver API result codes (``CUresult``): each code's name and what it
means, in one line, for the ``cuda:backend=driver`` check.

Numbers and names are those of the ``cudaError_enum`` in the CUDA Toolkit's
``cuda.h`` (CUDA 12/13); the meanings condense the header's own comments.
Codes not listed here are named by the driver's ``cuGetErrorName`` and
explained by its ``cuGetErrorString`` where the library has them.
"""

from __future__ import annotations

__all__ = ["CURESULT", "STICKY", "name_of", "meaning_of"]

CURESULT: dict[int, tuple[str, str]] = {
    0: ("CUDA_SUCCESS", "no error"),
    1: ("CUDA_ERROR_INVALID_VALUE", "a parameter of the call is out of range"),
    2: ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory: the GPU has no room left"),
    3: ("CUDA_ERROR_NOT_INITIALIZED",
        "the driver is not initialised: cuInit was not called or failed"),
    4: ("CUDA_ERROR_DEINITIALIZED", "the driver is shutting down"),
    34: ("CUDA_ERROR_STUB_LIBRARY",
         "libcuda.so.1 is the CUDA toolkit's stub, not the NVIDIA driver's library"),
    46: ("CUDA_ERROR_DEVICE_UNAVAILABLE",
         "the device is unavailable now: its compute mode is exclusive-process (another "
         "process holds it) or prohibited"),
    100: ("CUDA_ERROR_NO_DEVICE", "the driver detects no CUDA-capable device"),
    101: ("CUDA_ERROR_INVALID_DEVICE", "no such device, or the action is invalid for it"),
    102: ("CUDA_ERROR_DEVICE_NOT_LICENSED", "the vGPU (GRID) licence is not applied"),
    200: ("CUDA_ERROR_INVALID_IMAGE", "the kernel image (module) is invalid"),
    201: ("CUDA_ERROR_INVALID_CONTEXT", "no valid CUDA context is current"),
    209: ("CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for this GPU"),
    214: ("CUDA_ERROR_ECC_UNCORRECTABLE", "an uncorrectable ECC error was detected"),
    218: ("CUDA_ERROR_INVALID_PTX", "the driver's PTX JIT compilation failed"),
    220: ("CUDA_ERROR_NVLINK_UNCORRECTABLE", "an uncorrectable NVLink error was detected"),
    221: ("CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
          "the PTX JIT compiler library (libnvidia-ptxjitcompiler) was not found"),
    222: ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
          "the PTX is of a version this driver does not support"),
    223: ("CUDA_ERROR_JIT_COMPILATION_DISABLED", "PTX JIT compilation is disabled"),
    226: ("CUDA_ERROR_CONTAINED",
          "a device exception was contained (a hardware error or a bad NVLink access); the "
          "process must be restarted"),
    304: ("CUDA_ERROR_OPERATING_SYSTEM", "an operating-system call of the driver failed"),
    400: ("CUDA_ERROR_INVALID_HANDLE", "a handle passed to the call is not valid"),
    500: ("CUDA_ERROR_NOT_FOUND", "a named symbol (here the probe's kernel) was not found"),
    700: ("CUDA_ERROR_ILLEGAL_ADDRESS",
          "a kernel accessed an invalid memory address; the context is unusable"),
    701: ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "the launch lacks resources on the device"),
    702: ("CUDA_ERROR_LAUNCH_TIMEOUT",
          "the kernel ran past the device's watchdog; the context is unusable"),
    710: ("CUDA_ERROR_ASSERT", "a device-side assert fired; the context is unusable"),
    714: ("CUDA_ERROR_HARDWARE_STACK_ERROR", "a device stack error; the context is unusable"),
    715: ("CUDA_ERROR_ILLEGAL_INSTRUCTION",
          "the device hit an illegal instruction; the context is unusable"),
    719: ("CUDA_ERROR_LAUNCH_FAILED",
          "an exception on the device while the kernel ran; the context is unusable"),
    800: ("CUDA_ERROR_NOT_PERMITTED", "the operation is not permitted"),
    801: ("CUDA_ERROR_NOT_SUPPORTED", "the operation is not supported on this system or device"),
    802: ("CUDA_ERROR_SYSTEM_NOT_READY",
          "the system is not ready for CUDA work: a required driver daemon (on NVSwitch "
          "systems nvidia-fabricmanager) is not running"),
    803: ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
          "libcuda.so.1 and the NVIDIA kernel driver are of different versions"),
    804: ("CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
          "the CUDA forward-compatibility package does not support this GPU"),
    999: ("CUDA_ERROR_UNKNOWN", "an unknown internal error of the driver"),
}  # fmt: skip

#: Codes after which the device needs attention beyond this process: the
#: header says of each that the context is left unusable (700, 702, 714, 715,
#: 719), or they report a hardware fault (214, 220, 226) or an unknown error.
STICKY = frozenset({214, 220, 226, 700, 702, 714, 715, 719, 999})


def name_of(code: int, driver_name: str | None = None) -> str:
    """``CUDA_ERROR_OUT_OF_MEMORY``; the driver's own name for a code not listed."""
    known = CURESULT.get(code)
    if known is not None:
        return known[0]
    return driver_name or f"CUresult {code}"


def meaning_of(code: int, driver_string: str | None = None) -> str:
    known = CURESULT.get(code)
    if known is not None:
        return known[1]
    return driver_string or "a result code this version of torchprobe does not know"
