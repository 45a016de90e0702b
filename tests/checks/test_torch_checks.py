"""cuda and tensor on the real CPU build of torch: the honest "no CUDA" case."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli

from torchprobe.base import CheckFailed, Status
from torchprobe.checks._torch import describe_cuda_error, describe_oom, nvml_memory
from torchprobe.checks.cuda import CudaCheck
from torchprobe.checks.tensor import TensorCheck
from torchprobe.common.deadline import Deadline
from torchprobe.engine.runner import execute

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")


@cpu_only
def test_cuda_fails_on_a_cpu_build_and_says_so() -> None:
    result = run_cli("--format", "json", "cuda", timeout=120)
    assert result.rc == 1
    check = json.loads(result.stdout)["checks"][0]
    assert check["status"] == "fail"
    assert check["message"].startswith(f"torch {torch.__version__} is a CPU-only build")
    assert check["details"]["cuda"] is None and check["details"]["build"] == "CPU-only"


@cpu_only
def test_cuda_min_devices_zero_still_fails_a_cpu_build() -> None:
    check = CudaCheck(min_devices=0)
    check.setup()
    with pytest.raises(CheckFailed, match="CPU-only build"):
        check.run()


def test_tensor_on_cpu_computes_and_verifies() -> None:
    result = run_cli("--format", "json", "tensor:device=cpu", timeout=120)
    assert result.rc == 0, result.stdout + result.stderr
    check = json.loads(result.stdout)["checks"][0]
    assert check["name"] == "tensor[cpu]"
    assert check["message"].startswith("cpu: computed and verified in")
    assert check["details"]["value"] == 30.0


@cpu_only
@pytest.mark.parametrize("device", [None, "cuda:0", "cuda"])
def test_tensor_on_cuda_without_a_gpu_fails_with_the_reason(device: str | None) -> None:
    arg = "tensor" if device is None else f"tensor:device={device}"
    result = run_cli(arg, timeout=120)
    assert result.rc == 1
    assert "no CUDA device visible" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_tensor_one_bad_device_is_one_failing_line() -> None:
    # xla is a device type torch parses; this torch has no XLA support.
    result = run_cli("--format", "json", "tensor:device=cpu|xla", timeout=120)
    checks = json.loads(result.stdout)["checks"]
    assert [(c["name"], c["status"]) for c in checks] == [
        ("tensor[cpu]", "pass"),
        ("tensor[xla]", "fail"),
    ]
    assert "xla: RuntimeError" in checks[1]["message"]


def test_tensor_fails_when_the_device_computes_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    check = TensorCheck(device=["cpu"])
    check.setup()
    monkeypatch.setattr(torch.Tensor, "item", lambda self: 29.0)
    outcomes, _, _ = execute(check, Deadline.after(5.0))
    assert outcomes[0].status is Status.FAIL
    assert "wrong result 29.0 (expected 30.0)" in outcomes[0].message


def test_out_of_memory_is_named_as_such_whichever_way_it_is_raised() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
    message = describe_cuda_error(oom, "cuda:0")
    assert message.startswith("cuda:0: out of memory allocating the probe's tiny tensor")
    context_oom = RuntimeError("CUDA error: out of memory")
    message = describe_cuda_error(context_oom, "cuda:0")
    assert message.startswith("cuda:0: out of memory creating the CUDA context")
    assert "the GPU is full" in message


def test_out_of_memory_at_context_creation_shows_nvmls_free_figure() -> None:
    class AcceleratorError(RuntimeError):
        error_code = 2

    message = describe_oom(AcceleratorError("CUDA error: out of memory"), "cuda:0",
                           (126 * 1024 * 1024, 81559 * 1024 * 1024))  # fmt: skip
    assert message.startswith(
        "cuda:0: out of memory creating the CUDA context (it needs several hundred MiB); "
        "NVML: 126 MiB free of 81559 MiB — the GPU is full (AcceleratorError:"
    )


def test_nvml_memory_is_none_where_there_is_no_gpu() -> None:
    assert nvml_memory(torch, "cuda:0") is None


def test_cuda_error_codes_are_reported() -> None:
    class AcceleratorError(RuntimeError):
        error_code = 710

    message = describe_cuda_error(AcceleratorError("CUDA error: device-side assert triggered"),
                                  "cuda:1")  # fmt: skip
    assert message == ("cuda:1: AcceleratorError (CUDA error 710): "
                       "CUDA error: device-side assert triggered")  # fmt: skip


def test_a_cuda_failure_carries_the_reports_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    from conftest import FAKES

    from torchprobe.checks.cuda import _hints

    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("TORCHPROBE_FAKE_NVML", '{"cuda_driver": 12020}')
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    importlib.import_module("pynvml")
    try:
        text = _hints({"cuda": "12.8"})
    finally:
        sys.modules.pop("pynvml", None)
    assert "12.2" in text and "12.8" in text, text
    if not os.path.exists("/dev/nvidiactl"):
        assert "no /dev/nvidia* device nodes" in text
