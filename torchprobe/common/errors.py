"""How an exception reads in a check's result: one line, and its details.

Used where a check's code runs (the engine's runner, the in-process monitor)
and by checks that turn a caught exception into an outcome themselves.
"""

from __future__ import annotations

from typing import Any

from torchprobe.base import CheckFailed, CheckSkipped
from torchprobe.common.scrub import clip

__all__ = ["describe_exception", "error_details"]


def describe_exception(exc: BaseException) -> str:
    """One line: the message, prefixed with the exception type when that helps."""
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    if not message:
        return name
    if isinstance(exc, (CheckFailed, CheckSkipped)):
        return message
    return f"{name}: {message}"


def error_details(exc: BaseException) -> dict[str, Any]:
    """The raw error, for a failing outcome's details: its type, the CUDA error
    code where torch gives one, and its message. The in-process monitor tells
    a sticky CUDA error by them."""
    code = getattr(exc, "error_code", None)
    return {
        "error_type": type(exc).__name__,
        "error_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        "error": clip(str(exc), 500, squeeze=True),
    }
