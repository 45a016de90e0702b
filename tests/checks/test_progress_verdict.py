"""Properties of the stall verdict over any sequence of readings (hypothesis).

The cases through the installed command (test_progress.py) show each state
once; these show the rules hold for every sequence of readings, times and
counter values: a run is never judged stalled unless work was pending at
every reading across the whole duration with no done counter moving.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from conftest import IN_CI

# require() at module level: skipped where hypothesis is missing, failed under CI=true.
if importlib.util.find_spec("hypothesis") is None:
    if IN_CI:
        pytest.fail("CI=true but hypothesis is not installed", pytrace=False)
    pytest.skip("hypothesis is not installed", allow_module_level=True)

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from torchprobe.checks.progress import Reading, judge  # noqa: E402

#: One run: seconds since the previous run, pending count, each counter's step.
runs = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=120.0),
        st.integers(min_value=0, max_value=5),
        st.lists(st.integers(min_value=-2, max_value=3), min_size=2, max_size=2),
    ),
    min_size=1,
    max_size=12,
)


def replay(sequence: list[tuple[float, int, list[int]]], stall: float) -> list[dict[str, Any]]:
    """Judge each run against the record of the one before, as the store does."""
    record: dict[str, Any] | None = None
    at, counters = 1000.0, [10, 10]
    seen = []
    for gap, pending, steps in sequence:
        at += gap
        counters = [max(0, c + s) for c, s in zip(counters, steps, strict=True)]
        now = Reading([("running", float(pending))], {"a": counters[0], "b": counters[1]})
        verdict = judge(record, now, at, stall, "token generated")
        seen.append({"at": at, "pending": pending, "counters": list(counters),
                     "state": verdict.state})  # fmt: skip
        record = verdict.record
    return seen


@given(runs, st.floats(min_value=0.5, max_value=60.0))
def test_stalled_exactly_when_pending_with_frozen_counters_for_the_duration(
    sequence: list[tuple[float, int, list[int]]], stall: float
) -> None:
    seen = replay(sequence, stall)
    assert seen[0]["state"] == "first"
    for i, run in enumerate(seen):
        if run["state"] not in ("pending", "stalled"):
            continue
        # The earliest reading of this stretch: work pending at every reading,
        # the counters as they are now, no first reading (a restart) inside.
        j = i
        while (j > 0 and seen[j]["state"] != "first" and seen[j - 1]["pending"] > 0
               and seen[j - 1]["counters"] == run["counters"]):  # fmt: skip
            j -= 1
        lasted = run["at"] - seen[j]["at"]
        assert (run["state"] == "stalled") == (lasted >= stall), (seen, j, i)


@given(runs, st.floats(min_value=0.5, max_value=60.0))
def test_idle_progressing_and_restarted_runs_always_pass(
    sequence: list[tuple[float, int, list[int]]], stall: float
) -> None:
    seen = replay(sequence, stall)
    for before, run in zip(seen, seen[1:], strict=False):
        went_down = any(n < b for n, b in zip(run["counters"], before["counters"], strict=True))
        moved = any(n > b for n, b in zip(run["counters"], before["counters"], strict=True))
        if went_down:
            assert run["state"] == "first"
        elif run["pending"] == 0:
            assert run["state"] == "idle"
        elif moved:
            assert run["state"] == "progressing"
        else:
            assert run["state"] in ("pending", "stalled")


@pytest.mark.parametrize("gap", [0.0, 0.4, 0.99])
def test_pending_shorter_than_the_duration_passes(gap: float) -> None:
    seen = replay([(0, 3, [0, 0]), (gap, 3, [0, 0])], stall=1.0)
    assert [s["state"] for s in seen] == ["first", "pending"]


def test_pending_for_the_duration_with_frozen_counters_stalls() -> None:
    seen = replay([(0, 3, [0, 0]), (0.5, 3, [0, 0]), (0.5, 3, [0, 0])], stall=1.0)
    assert [s["state"] for s in seen] == ["first", "pending", "stalled"]


def test_idle_in_between_restarts_the_window() -> None:
    seen = replay([(0, 3, [0, 0]), (0.6, 0, [0, 0]), (0.6, 3, [0, 0]), (0.6, 3, [0, 0])], 1.0)
    assert [s["state"] for s in seen] == ["first", "idle", "pending", "pending"]
