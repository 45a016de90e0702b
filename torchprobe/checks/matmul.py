"""``tensor:verify=matmul``: a fixed-seed matrix product on the device,
compared with a float64 reference computed on the CPU, to catch a device that
computes wrong answers without raising an error (silent data corruption).

The error metric is ``max |C - C_ref| / (|A| |B|)``, element by element: the
rounding error of a computed product is bounded by the product of the
absolute values, ``|fl(AB) - AB| <= gamma_n |A| |B|`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., section 3.5), whatever order the
n-term sums are added in, so dividing by ``|A| |B|`` gives a figure that a
tolerance from the unit roundoff can bound without depending on
cancellation. The tolerance is twice the first-order bound::

    2 * (2 u_tf32 [tf32 only] + u_dtype + n * 2^-24)

``u_dtype`` rounds the result to the dtype (float32 2^-24, float16 2^-11,
bfloat16 2^-8); ``n * 2^-24`` is the n-term accumulation in float32 (the
products of float16 or bfloat16 inputs are exact in float32: 11 + 11 and
8 + 8 significand bits fit in its 24); tf32 rounds both float32 factors to 11
significand bits (unit roundoff 2^-11). The factor 2 covers the second-order
terms, one extra rounding of a partial sum, and accumulation that rounds
toward zero (error up to 2u a step), as NVIDIA's tensor cores do (Fasi,
Higham, Mikaitis and Pranesh, "Numerical behavior of NVIDIA tensor cores",
PeerJ Computer Science, 2021). torch may otherwise reduce
float16 and bfloat16 split-K partial sums in their own precision on CUDA; the
check turns that off while it computes, so the float32 accumulation holds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from torchprobe.base import Outcome, failed, passed

__all__ = ["DTYPES", "MAX_SIZE", "MIN_SIZE", "SEED", "defaults", "tolerance", "verify"]

MiB = 1024 * 1024
#: Unit roundoff of each dtype the check computes in (half an ulp of 1.0).
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
DTYPES = tuple(UNIT_ROUNDOFF)
#: TF32 keeps 10 explicit significand bits: unit roundoff 2^-11.
TF32_ROUNDOFF = 2.0**-11
#: The accumulation is in float32 for every dtype the check computes in.
ACCUMULATE_ROUNDOFF = 2.0**-24
SAFETY = 2.0
#: 16 is the side of one float16 tensor-core tile (mma m16n8k16); at 8192 each
#: float64 matrix of the CPU reference is 512 MiB and its products take minutes.
MIN_SIZE, MAX_SIZE = 16, 8192
SEED = 20261201
METRIC = "max |C - C_ref| / (|A| |B|)"


def defaults(device_type: str) -> tuple[str, int]:
    """The dtype and size for a device: float16 at 1024 on CUDA (large enough to
    run on the tensor cores), float32 at 256 elsewhere (a CPU has no faster dtype)."""
    return ("float16", 1024) if device_type == "cuda" else ("float32", 256)


def tolerance(dtype: str, size: int, tf32: bool) -> float:
    inputs = 2 * TF32_ROUNDOFF if tf32 else 0.0
    return SAFETY * (inputs + UNIT_ROUNDOFF[dtype] + size * ACCUMULATE_ROUNDOFF)


@contextlib.contextmanager
def _precision(torch: Any, tf32: bool) -> Iterator[None]:
    """torch's CUDA matmul switches for the computation, restored afterwards.

    They are process-wide: only those that differ are set. torch >= 2.9 has
    ``fp32_precision`` ("ieee", "tf32", "none": inherit) beside the older
    ``allow_tf32``, and raises RuntimeError on reading ``allow_tf32`` once
    both were set (measured on torch 2.13.0), so the newer one is used where
    it exists; restoring it restores what either API reads.
    """
    flags = torch.backends.cuda.matmul
    wanted: dict[str, Any] = {"allow_fp16_reduced_precision_reduction": False,
                              "allow_bf16_reduced_precision_reduction": False}  # fmt: skip
    if hasattr(flags, "fp32_precision"):
        wanted["fp32_precision"] = "tf32" if tf32 else "ieee"
    else:
        wanted["allow_tf32"] = tf32
    saved = {key: getattr(flags, key) for key in wanted}
    changed = [key for key in wanted if saved[key] != wanted[key]]
    try:
        for key in changed:
            setattr(flags, key, wanted[key])
        yield
    finally:
        for key in changed:
            setattr(flags, key, saved[key])


def _inputs(torch: Any, dtype: Any, size: int) -> tuple[Any, Any]:
    """A and B, uniform in [-1, 1] from a fixed seed on the CPU, rounded to the
    dtype: the same matrices on every machine and every run."""
    generator = torch.Generator().manual_seed(SEED)
    a = torch.rand((size, size), generator=generator, dtype=torch.float64) * 2 - 1
    b = torch.rand((size, size), generator=generator, dtype=torch.float64) * 2 - 1
    return a.to(dtype), b.to(dtype)


def verify(check: Any, torch: Any, device: Any, name: str,
           synchronize: Any) -> Outcome:  # fmt: skip
    """One device's line: ``check.product(A, B)`` on ``device`` against the
    float64 reference of the same (rounded) inputs."""
    dtype_name, size = defaults(device.type)
    dtype_name = check.dtype or dtype_name
    size = check.size or size
    limit = tolerance(dtype_name, size, check.tf32)
    a, b = _inputs(torch, getattr(torch, dtype_name), size)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    reference = a64 @ b64
    scale = a64.abs() @ b64.abs()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    started = time.monotonic()
    with _precision(torch, check.tf32):
        result = check.product(a.to(device), b.to(device))
        synchronize(torch, device)
    seconds = time.monotonic() - started
    extra = int(torch.cuda.max_memory_allocated(device) - before) if cuda else None
    what = f"matmul {dtype_name} {size}x{size}{' tf32' if check.tf32 else ''}"
    details: dict[str, Any] = {
        "device": str(device), "verify": "matmul", "dtype": dtype_name, "size": size,
        "tf32": check.tf32, "metric": METRIC, "tolerance": limit, "seconds": round(seconds, 6),
        "memory_extra": extra,
    }  # fmt: skip
    if tuple(result.shape) != (size, size):
        return failed(f"{name}: {what}: the product has shape {list(result.shape)}, expected "
                      f"[{size}, {size}]", target=name, error=None, **details)  # fmt: skip
    computed = result.to("cpu", torch.float64)
    errors = (computed - reference).abs() / scale
    bad = (~torch.isfinite(computed)).nonzero()
    if len(bad):
        row, col = (int(v) for v in bad[0])
        error = float("nan")
        found = f"nan (a non-finite result, {float(computed[row, col])}, at [{row}, {col}])"
    else:
        row, col = divmod(int(errors.argmax()), size)
        error = float(errors[row, col])
        found = f"{error:.2e} at [{row}, {col}]"
    details.update(error=error, error_at=[row, col])
    memory = f", {extra / MiB:.0f} MiB extra" if extra is not None else ""
    if not error <= limit:
        return failed(f"{name}: {what}: max relative error {found} exceeds the tolerance "
                      f"{limit:.2e}: the device computes wrong results", target=name,
                      **details)  # fmt: skip
    return passed(f"{name}: {what} verified: max relative error {error:.2e} ≤ tolerance "
                  f"{limit:.2e} in {seconds * 1000:.0f} ms{memory}", target=name,
                  **details)  # fmt: skip
