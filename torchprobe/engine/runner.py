"""Running one check's code and turning whatever happens into outcomes.

Shared by the worker processes and the in-process threads, so that a check
behaves the same wherever it runs: failures are values, never escapes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable
from typing import Any

from torchprobe.base import Check, CheckFailed, CheckSkipped, Outcome, Status
from torchprobe.common.scrub import clip

__all__ = ["capture", "describe_exception", "error_details", "execute", "normalize"]


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


def normalize(returned: Any) -> list[Outcome]:
    """What ``run`` returned -> outcomes. None or a string passes."""
    if returned is None:
        return [Outcome(Status.PASS, "ok")]
    if isinstance(returned, str):
        return [Outcome(Status.PASS, returned or "ok")]
    if isinstance(returned, Outcome):
        return [returned]
    if isinstance(returned, Iterable):
        outcomes = list(returned)
        bad = [o for o in outcomes if not isinstance(o, Outcome)]
        if bad:
            raise TypeError(f"run() returned a list holding {type(bad[0]).__name__}, not Outcome")
        if not outcomes:
            return [Outcome(Status.SKIP, "nothing to check")]
        return outcomes
    raise TypeError(f"run() returned {type(returned).__name__}; expected None, str or Outcome")


def capture(work: Any) -> tuple[list[Outcome] | None, str | None]:
    """Call ``work()``; turn what it raises into outcomes. ``(None, None)`` when it
    returned normally; the traceback comes with any exception but a check's own
    :class:`CheckFailed` / :class:`CheckSkipped`."""
    try:
        work()
    except CheckSkipped as exc:
        return [Outcome(Status.SKIP, exc.message, exc.details)], None
    except CheckFailed as exc:
        return [Outcome(Status.FAIL, exc.message, exc.details)], None
    except Exception as exc:  # noqa: BLE001 - any failure of a check is its result
        failure = Outcome(Status.FAIL, describe_exception(exc), error_details(exc))
        return [failure], traceback.format_exc()
    return None, None


def execute(check: Check, timeout: float) -> tuple[list[Outcome], str | None, float]:
    """Run ``check`` now; return its outcomes, a traceback on failure, and its duration."""
    started = time.monotonic()
    check.timeout = timeout
    check.deadline = started + timeout
    returned: list[list[Outcome]] = []
    failure, error = capture(lambda: returned.append(normalize(check.run())))
    outcomes = failure if failure is not None else returned[0]
    return outcomes, error, time.monotonic() - started
