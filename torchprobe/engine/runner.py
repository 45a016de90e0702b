"""Running one check's code and turning whatever happens into outcomes.

Shared by the worker processes and the in-process threads, so that a check
behaves the same wherever it runs: failures are values, never escapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from torchprobe.base import Check, CheckFailed, CheckSkipped, Outcome, Status
from torchprobe.common.deadline import Deadline
from torchprobe.common.errors import describe_exception, error_details

__all__ = ["capture", "execute", "normalize"]


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
        import traceback  # only for a check that raised: 1.6 ms of every start-up otherwise

        return [failure], traceback.format_exc()
    return None, None


def execute(check: Check, clock: Deadline) -> tuple[list[Outcome], str | None, float]:
    """Run ``check`` now under ``clock`` (granted from the round's deadline just
    before); return its outcomes, a traceback on failure, and its duration."""
    started = time.monotonic()
    check.clock = clock  # and its deadline and timeout
    returned: list[list[Outcome]] = []
    failure, error = capture(lambda: returned.append(normalize(check.run())))
    outcomes = failure if failure is not None else returned[0]
    return outcomes, error, time.monotonic() - started
