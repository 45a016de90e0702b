"""tensor:verify=matmul on the real CPU build of torch: the product checked
against a float64 reference, and a product made wrong on purpose (the
``wrongmatmul`` test plugin) caught."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from typing import Any

import pytest
from conftest import clean_env, require, run_cli

from torchprobe.checks.matmul import tolerance

pytestmark = pytest.mark.torch
pytest.importorskip("torch")


def _plugins() -> None:
    names = {e.name for e in entry_points(group="torchprobe.checks")}
    require("wrongmatmul" in names, "test plugins not installed (pip install ./tests/plugins)")


def _one(*args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("--format", "json", *args, timeout=120)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert len(checks) == 1, checks
    return result.rc, checks[0]


def _wrong(dtype: str, found: str, details: dict[str, Any]) -> str:
    return (f"cpu: matmul {dtype} 256x256: max relative error {found} exceeds the tolerance "
            f"{details['tolerance']:.2e}: the device computes wrong results")  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_verify_matmul_passes_on_the_cpu_for_each_dtype(dtype: str) -> None:
    rc, check = _one(f"tensor:device=cpu,verify=matmul,dtype={dtype}")
    assert rc == 0, check
    details = check["details"]
    assert details["dtype"] == dtype and details["size"] == 256
    assert details["tolerance"] == tolerance(dtype, 256, False)
    assert 0 < details["error"] <= details["tolerance"]
    assert details["seconds"] > 0
    # torch's CPU allocator keeps no peak figure: none rather than a guess.
    assert details["memory_extra"] is None
    assert check["message"].startswith(f"cpu: matmul {dtype} 256x256 verified: max relative "
                                       f"error {details['error']:.2e} ≤ tolerance")  # fmt: skip


def test_verify_matmul_defaults_to_float32_at_256_on_the_cpu() -> None:
    rc, check = _one("tensor:device=cpu,verify=matmul")
    assert rc == 0, check
    assert (check["details"]["dtype"], check["details"]["size"]) == ("float32", 256)
    assert check["details"]["tf32"] is False


def test_the_same_inputs_give_the_same_error_on_every_run() -> None:
    first = _one("tensor:device=cpu,verify=matmul,size=64")[1]["details"]
    second = _one("tensor:device=cpu,verify=matmul,size=64")[1]["details"]
    assert (first["error"], first["error_at"]) == (second["error"], second["error_at"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_one_element_one_percent_off_fails_and_says_by_how_much(dtype: str) -> None:
    _plugins()
    rc, check = _one(f"wrongmatmul:device=cpu,verify=matmul,dtype={dtype}")
    assert rc == 1
    assert check["status"] == "fail"
    details = check["details"]
    assert details["error"] > details["tolerance"]
    row, col = details["error_at"]
    assert check["message"] == _wrong(dtype, f"{details['error']:.2e} at [{row}, {col}]", details)


def test_bfloat16_needs_a_larger_fault_and_catches_it() -> None:
    # bfloat16 rounds to 2^-8 (0.4%): 1% of the largest element is within its
    # tolerance at size 256, 10% is far outside.
    _plugins()
    rc, check = _one("wrongmatmul:device=cpu,verify=matmul,dtype=bfloat16,by=0.01")
    assert rc == 0, check
    rc, check = _one("wrongmatmul:device=cpu,verify=matmul,dtype=bfloat16,by=0.1")
    assert rc == 1
    assert "max relative error" in check["message"] and "exceeds the tolerance" in check["message"]


def test_a_nan_in_the_product_fails_and_is_named() -> None:
    _plugins()
    rc, check = _one("wrongmatmul:device=cpu,verify=matmul,fault=nan")
    assert rc == 1
    details = check["details"]
    row, col = details["error_at"]
    assert details["error"] is None  # NaN, written as strict JSON's null
    found = f"nan (a non-finite result, nan, at [{row}, {col}])"
    assert check["message"] == _wrong("float32", found, details)


def test_the_wrong_product_passes_without_verify_matmul() -> None:
    # The fault is in the product, which only verify=matmul computes.
    _plugins()
    rc, check = _one("wrongmatmul:device=cpu")
    assert rc == 0, check


def test_a_device_that_cannot_compute_is_its_own_failing_line() -> None:
    # xla is a device type torch parses; this torch has no XLA support.
    result = run_cli("--format", "json", "tensor:device=cpu|xla,verify=matmul", timeout=120)
    assert result.rc == 1
    checks = json.loads(result.stdout)["checks"]
    assert [(c["name"], c["status"]) for c in checks] == [("tensor[cpu]", "pass"),
                                                          ("tensor[xla]", "fail")]  # fmt: skip
    assert checks[1]["message"].startswith("xla: RuntimeError: ")


def test_a_large_size_is_bounded_by_the_checks_timeout() -> None:
    # Size 4096 costs two float64 products of 4096^3 multiply-adds on the CPU:
    # tens of seconds on a 2-core machine, far beyond the timeout of 1 s.
    result = run_cli("tensor:device=cpu,verify=matmul,size=4096,timeout=1", "--timeout", "30",
                     timeout=120)  # fmt: skip
    assert result.rc == 1
    assert "timed out after 1s (its worker process was killed)" in result.stdout
    assert result.elapsed < 30


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tensor:device=cpu,verify=matmul,dtype=float64",
         "option 'dtype': 'float64' is not one of float32, float16, bfloat16"),
        ("tensor:device=cpu,verify=matmul,size=8193", "option 'size': '8193' is above the "
                                                      "maximum 8192"),
        ("tensor:device=cpu,verify=matmul,size=15", "option 'size': '15' is below the minimum 16"),
        ("tensor:device=cpu,verify=matmul,size=1e3", "option 'size': '1e3' is not an integer"),
        ("tensor:device=cpu,verify=matmul,tf32=yes", "option 'tf32': 'yes' is not a boolean"),
        ("tensor:device=cpu,verify=cholesky", "option 'verify': 'cholesky' is not one of matmul"),
        ("tensor:device=cpu,dtype=float16", "option 'dtype' applies only with verify=matmul"),
        ("tensor:device=cpu,size=512", "option 'size' applies only with verify=matmul"),
        ("tensor:device=cpu,verify=matmul,tf32=true,dtype=float32",
         "tf32=true applies only to CUDA devices, not 'cpu'"),
        ("tensor:verify=matmul,tf32=true", "tf32=true applies only to dtype=float32"),
        ("tensor:verify=matmul,tf32=true,dtype=float16", "tf32=true applies only to dtype=float32"),
    ],
)  # fmt: skip
def test_bad_values_are_usage_errors_before_torch_is_imported(spec: str, message: str) -> None:
    result = run_cli(spec, env=clean_env(PYTHONPROFILEIMPORTTIME="1"))
    assert result.rc == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"torchprobe: error: check 'tensor': {message}"), errors
    log = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in log}
    assert "torchprobe" in imported  # the import log works
    assert "torch" not in imported


def test_tolerances_follow_the_unit_roundoff_and_the_inner_dimension() -> None:
    # 2 * (u_dtype + n * 2^-24), and 2 * 2^-11 more for tf32's rounded inputs.
    assert tolerance("float32", 256, False) == 2 * 257 * 2.0**-24
    assert tolerance("float16", 1024, False) == 2 * (2.0**-11 + 1024 * 2.0**-24)
    assert tolerance("bfloat16", 1024, False) == 2 * (2.0**-8 + 1024 * 2.0**-24)
    assert tolerance("float32", 1024, True) == 2 * (2 * 2.0**-11 + 1025 * 2.0**-24)
    assert tolerance("float16", 4096, False) > tolerance("float16", 1024, False)


_FLAGS = ("fp32_precision", "allow_fp16_reduced_precision_reduction",
          "allow_bf16_reduced_precision_reduction")  # fmt: skip


@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("user", ["none", "tf32", "ieee"])
def test_the_matmul_switches_are_set_for_the_product_and_restored(user: str, tf32: bool) -> None:
    # They are process-wide: inside a serving process (the in-process monitor)
    # the server's own setting must come back exactly.
    torch = pytest.importorskip("torch")
    from torchprobe.checks.matmul import _precision

    flags = torch.backends.cuda.matmul
    require(hasattr(flags, "fp32_precision"), "torch >= 2.9 (fp32_precision)")
    saved = {key: getattr(flags, key) for key in _FLAGS}
    try:
        flags.fp32_precision = user
        before = {key: getattr(flags, key) for key in _FLAGS}
        with _precision(torch, tf32):
            during = {key: getattr(flags, key) for key in _FLAGS}
        after = {key: getattr(flags, key) for key in _FLAGS}
    finally:
        for key, value in saved.items():
            setattr(flags, key, value)
    assert during == {"fp32_precision": "tf32" if tf32 else "ieee",
                      "allow_fp16_reduced_precision_reduction": False,
                      "allow_bf16_reduced_precision_reduction": False}  # fmt: skip
    assert after == before
