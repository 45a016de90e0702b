"""Which errors poison a process for good — with and without torch's error code."""

from __future__ import annotations

import pytest

from torchprobe.inprocess.sticky import STICKY_CODES, classify, classify_text


class AcceleratorError(RuntimeError):
    """Shaped like torch.AcceleratorError (torch >= 2.8): a RuntimeError with error_code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.error_code = code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (700, "CUDA error: an illegal memory access was encountered"),
        (710, "CUDA error: device-side assert triggered"),
        (719, "CUDA error: unspecified launch failure"),
        (214, "CUDA error: uncorrectable ECC error encountered"),
    ],
)
def test_sticky_errors_with_a_code(code: int, message: str) -> None:
    found = classify(AcceleratorError(message, code))
    assert found is not None and found.code == code and found.type == "AcceleratorError"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
         "asynchronously reported", 700),
        ("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA", 710),
        ("CUDA error: unspecified launch failure", 719),
        ("CUDA error: misaligned address", 716),
    ],
)  # fmt: skip
def test_sticky_errors_without_a_code_are_told_by_the_message(message: str, code: int) -> None:
    found = classify(RuntimeError(message))
    assert found is not None and found.code == code and found.type == "RuntimeError"


@pytest.mark.parametrize(
    "exc",
    [
        AcceleratorError("CUDA error: out of memory", 2),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("Expected all tensors to be on the same device"),
        ValueError("CUDA error: device-side assert triggered"),  # not how torch raises it
        AcceleratorError("CUDA error: invalid argument", 1),
        RuntimeError("some text mentioning an illegal memory access"),
    ],
)
def test_not_sticky(exc: BaseException) -> None:
    assert classify(exc) is None


def test_out_of_memory_error_is_never_sticky_even_with_a_sticky_looking_message() -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    assert (
        classify(OutOfMemoryError("CUDA error: an illegal memory access was encountered")) is None
    )


@pytest.mark.torch
def test_the_real_torch_out_of_memory_error_is_not_sticky() -> None:
    torch = pytest.importorskip("torch")
    assert classify(torch.OutOfMemoryError("CUDA out of memory.")) is None


def test_a_sticky_error_wrapped_by_the_app_is_still_found() -> None:
    try:
        try:
            raise AcceleratorError("CUDA error: device-side assert triggered", 710)
        except RuntimeError as inner:
            raise ValueError("prediction failed") from inner
    except ValueError as outer:
        found = classify(outer)
    assert found is not None and found.code == 710


def test_the_code_decides_over_the_message() -> None:
    assert classify_text(2, "CUDA error: an illegal memory access was encountered") is None
    assert classify_text(700, "whatever") == 700
    assert set(STICKY_CODES) >= {700, 710, 719, 214}
