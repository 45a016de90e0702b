"""A compute probe through the CUDA driver API (``libcuda.so.1``), by ctypes.

Per device: retain its primary context, allocate a few bytes, copy them in,
run a tiny PTX kernel that the driver JIT-compiles for the GPU, synchronise,
copy back and verify, then release everything. No torch, no CUDA runtime:
the same failure modes (a driver/runtime mismatch, a GPU that answers NVML
but cannot compute) for a fraction of the time and memory.

The symbols are those the driver exports for the 64-bit API: ``cuda.h``
maps ``cuMemAlloc`` to ``cuMemAlloc_v2``, ``cuCtxPushCurrent`` to
``cuCtxPushCurrent_v2``, ``cuDevicePrimaryCtxRelease`` to
``cuDevicePrimaryCtxRelease_v2`` and so on; ctypes sees no header, so the
names here are the exported ones.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from torchprobe.checks.curesult import STICKY, meaning_of, name_of

__all__ = ["LIBRARY", "PTX", "CudaCallFailed", "Driver", "expected", "probe_device"]

LIBRARY = "libcuda.so.1"
KERNEL = b"torchprobe_probe"
WORDS = 16  # u32 values the kernel transforms: 64 bytes in, 64 out

# out[i] = in[i] * 3 + 1 (mod 2**32) for i < n, one thread per word. PTX ISA
# 6.0 (CUDA 9) with .target sm_50: the driver JIT-compiles PTX for any GPU at
# or above its target, Maxwell to Blackwell; ptxas 13.5 assembles this text
# for sm_75 to sm_120 (tests/checks/test_cuda_driver.py).
PTX = b"""\
.version 6.0
.target sm_50
.address_size 64

.visible .entry torchprobe_probe(
    .param .u64 out_param,
    .param .u64 in_param,
    .param .u32 n_param
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<9>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [out_param];
    ld.param.u64 %rd2, [in_param];
    ld.param.u32 %r1, [n_param];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd3, %rd2;
    cvta.to.global.u64 %rd4, %rd1;
    mul.wide.u32 %rd5, %r5, 4;
    add.s64 %rd6, %rd3, %rd5;
    ld.global.u32 %r6, [%rd6];
    mul.lo.u32 %r7, %r6, 3;
    add.u32 %r8, %r7, 1;
    add.s64 %rd7, %rd4, %rd5;
    st.global.u32 [%rd7], %r8;
DONE:
    ret;
}
"""


def inputs() -> list[int]:
    """Words with every bit position in use, so a stuck bit shows."""
    return [(0x9E3779B9 * (i + 1)) & 0xFFFFFFFF for i in range(WORDS)]


def expected(values: list[int]) -> list[int]:
    return [(v * 3 + 1) & 0xFFFFFFFF for v in values]


class CudaCallFailed(Exception):
    """A driver call returned a CUresult other than CUDA_SUCCESS."""

    def __init__(self, call: str, code: int, name: str, meaning: str) -> None:
        super().__init__(f"{call} failed: {name} ({code}): {meaning}")
        self.call = call
        self.code = code
        self.name = name
        self.meaning = meaning

    @property
    def sticky(self) -> bool:
        return self.code in STICKY


class Driver:
    """``libcuda.so.1``, loaded; ``call`` raises :class:`CudaCallFailed`.

    Loading raises OSError when the library is not there; a symbol the
    library lacks raises AttributeError at its first call.
    """

    def __init__(self) -> None:
        # ctypes.CDLL releases the GIL around every call: a hung driver call
        # blocks only this worker, which the engine kills at the deadline.
        self.lib = ctypes.CDLL(LIBRARY)

    def call(self, name: str, *args: Any) -> None:
        function = getattr(self.lib, name)
        function.restype = ctypes.c_int
        code = int(function(*args))
        if code != 0:
            said = name_of(code, self._text("cuGetErrorName", code))
            raise CudaCallFailed(
                name, code, said, meaning_of(code, self._text("cuGetErrorString", code))
            )

    def optional(self, *names: str) -> str | None:
        """The first of ``names`` the library exports (newer names first)."""
        for name in names:
            if hasattr(self.lib, name):
                return name
        return None

    def _text(self, getter: str, code: int) -> str | None:
        """The driver's own name or description of ``code`` (CUDA ≥ 6.0)."""
        try:
            function = getattr(self.lib, getter)
        except AttributeError:
            return None
        function.restype = ctypes.c_int
        text = ctypes.c_char_p()
        if function(ctypes.c_int(code), ctypes.byref(text)) != 0 or not text.value:
            return None
        return text.value.decode("utf-8", "replace")[:200]

    def version(self) -> int | None:
        """The CUDA version the driver supports, 12080 for 12.8."""
        value = ctypes.c_int()
        try:
            self.call("cuDriverGetVersion", ctypes.byref(value))
        except (CudaCallFailed, AttributeError):
            return None
        return value.value

    def count(self) -> int:
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        return count.value


def _describe(driver: Driver, ordinal: int, device: ctypes.c_int, info: dict[str, Any]) -> None:
    name = ctypes.create_string_buffer(256)
    driver.call("cuDeviceGet", ctypes.byref(device), ctypes.c_int(ordinal))
    driver.call("cuDeviceGetName", name, ctypes.c_int(len(name)), device)
    info["name"] = name.value.decode("utf-8", "replace")
    # _v2 (CUDA 11.4+) gives a MIG slice its own UUID where v1 gives its
    # parent GPU's; older drivers have only v1. NVML names the slice MIG-....
    got = {n: _uuid(driver, n, device) for n in ("cuDeviceGetUuid_v2", "cuDeviceGetUuid")
           if driver.optional(n)}  # fmt: skip
    if got:
        text = got.get("cuDeviceGetUuid_v2") or got["cuDeviceGetUuid"]
        mig = len(got) == 2 and got["cuDeviceGetUuid_v2"] != got["cuDeviceGetUuid"]
        dashed = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
        info["uuid"] = f"{'MIG' if mig else 'GPU'}-{dashed}"


def _uuid(driver: Driver, getter: str, device: ctypes.c_int) -> str:
    raw = (ctypes.c_ubyte * 16)()
    driver.call(getter, ctypes.byref(raw), device)
    return bytes(raw).hex()


def probe_device(driver: Driver, ordinal: int) -> dict[str, Any]:
    """Run the kernel on device ``ordinal``; the details of the run.

    Raises CudaCallFailed with ``info`` (what was learnt before the failure)
    attached as ``exc.info``; resources taken are released whatever happens,
    and a failure while releasing does not hide the first one.
    """
    info: dict[str, Any] = {"index": ordinal}
    device = ctypes.c_int()
    context = ctypes.c_void_p()
    pointer = ctypes.c_uint64()
    module = ctypes.c_void_p()
    taken: list[str] = []
    started = time.monotonic()
    try:
        _describe(driver, ordinal, device, info)
        driver.call("cuDevicePrimaryCtxRetain", ctypes.byref(context), device)
        taken.append("context")
        driver.call("cuCtxPushCurrent_v2", context)
        taken.append("current")
        size = 2 * WORDS * 4
        driver.call("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(size))
        taken.append("memory")
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        driver.call("cuMemGetInfo_v2", ctypes.byref(free), ctypes.byref(total))
        info["memory_free"], info["memory_total"] = free.value, total.value
        values = inputs()
        host = (ctypes.c_uint32 * (2 * WORDS))(*values)  # the output half starts as zeros
        driver.call("cuMemcpyHtoD_v2", pointer, host, ctypes.c_size_t(size))
        driver.call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(PTX))
        taken.append("module")
        function = ctypes.c_void_p()
        driver.call("cuModuleGetFunction", ctypes.byref(function), module, KERNEL)
        out = ctypes.c_uint64(pointer.value + WORDS * 4)
        count = ctypes.c_uint32(WORDS)
        params = (ctypes.c_void_p * 3)(
            ctypes.cast(ctypes.byref(out), ctypes.c_void_p),
            ctypes.cast(ctypes.byref(pointer), ctypes.c_void_p),
            ctypes.cast(ctypes.byref(count), ctypes.c_void_p),
        )
        one = ctypes.c_uint(1)
        driver.call("cuLaunchKernel", function, one, one, one, ctypes.c_uint(WORDS), one, one,
                    ctypes.c_uint(0), None, params, None)  # fmt: skip
        driver.call("cuCtxSynchronize")
        back = (ctypes.c_uint32 * (2 * WORDS))()
        driver.call("cuMemcpyDtoH_v2", back, pointer, ctypes.c_size_t(size))
        info["seconds"] = round(time.monotonic() - started, 6)
        info["verified"] = list(back[:WORDS]) == values and list(back[WORDS:]) == expected(values)
        if not info["verified"]:
            info["wrong"] = [f"0x{v:08x}" for v in back[WORDS : WORDS + 4]]
            info["want"] = [f"0x{v:08x}" for v in expected(values)[:4]]
    except CudaCallFailed as exc:
        exc.info = info  # type: ignore[attr-defined]
        _release(driver, taken, module, pointer, device)
        raise
    except BaseException:
        _release(driver, taken, module, pointer, device)
        raise
    # A release that fails after a good run is news of its own: the next
    # user of the GPU inherits what was not freed.
    trouble = _release(driver, taken, module, pointer, device)
    if trouble is not None:
        trouble.info = info  # type: ignore[attr-defined]
        raise trouble
    return info


def _release(driver: Driver, taken: list[str], module: ctypes.c_void_p,
             pointer: ctypes.c_uint64, device: ctypes.c_int) -> CudaCallFailed | None:  # fmt: skip
    """Release what was taken, newest first; the first failure, if any.

    Every step is tried: after a sticky error each call fails, and a context
    left retained would keep its memory until the process ends."""
    steps = {
        "module": lambda: driver.call("cuModuleUnload", module),
        "memory": lambda: driver.call("cuMemFree_v2", pointer),
        "current": lambda: driver.call("cuCtxPopCurrent_v2", ctypes.byref(ctypes.c_void_p())),
        "context": lambda: driver.call(
            driver.optional("cuDevicePrimaryCtxRelease_v2") or "cuDevicePrimaryCtxRelease",
            device,
        ),
    }
    first: CudaCallFailed | None = None
    for what in reversed(taken):
        try:
            steps[what]()
        except CudaCallFailed as exc:
            first = first or exc
        except AttributeError:
            pass  # a symbol an old driver lacks: nothing to release through it
    return first
