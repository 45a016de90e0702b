"""``stall=`` on a real server: idle, busy and wedged, driven through the installed command.

The probe runs once a second (:data:`INTERVAL`, as a liveness probe's
``periodSeconds`` would) with its own ``$TORCHPROBE_STATE_DIR``, so each
reading is judged against the previous run's, and :func:`walk` takes the
server through:

- idle: nothing pending; every run passes for longer than DURATION;
- busy: ``slow`` makes each inference take :data:`SLOW` seconds, longer than
  the probe's interval, while more clients than the model has workers keep
  requests queued (all of them completing); every run passes for longer than
  DURATION;
- wedged: ``wedge`` blocks inference while the clients' requests are pending;
  every run before DURATION has passed since the wedge passes, and a run fails
  "stalled: ..." naming the pending count, the seconds without progress and
  DURATION, within DURATION plus ``lag`` (what the server's metrics lag
  behind its work) plus a few intervals; once it is released, a run passes
  again within ``lag`` plus a few intervals.

The times seen are returned (and printed, ``pytest -s``) for the fake-dead
matrix of docs/model-servers.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import Run, clean_env, run_cli
from standins import load

from .canary import CLIENTS, post

INTERVAL = 1.0  # seconds between probe runs
SLOW = 2.0  # seconds each inference takes while busy: twice the interval
SLACK = 10.0  # on top of DURATION, lag and two intervals: a loaded 2-core machine


@dataclass
class StallTarget:
    """One server's ``stall=`` spec and the inference endpoint its clients load."""

    name: str
    #: ``bentoml:url=...,mode=live,stall=3s``.
    spec: str
    stall: float
    infer_url: str
    sample: Any
    switches: Path
    state: Path
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server's metrics may lag behind its work (an export interval).
    lag: float = 0.0
    #: Statuses besides 200 a wedged request may end with (the server's own timeout).
    gave_up: frozenset[int] = frozenset()


def _check(run: Run, rc: int, what: str) -> None:
    assert run.rc == rc, f"{what}: rc {run.rc} after {run.elapsed:.1f} s\n{run.stdout}{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr


def _first_line(run: Run) -> str:
    return (run.stdout.splitlines() or [""])[0]


def walk(target: StallTarget) -> dict[str, float]:
    """Idle, busy and wedged, each asserted; returns the times seen."""
    env = clean_env(TORCHPROBE_STATE_DIR=str(target.state))

    def probe() -> Run:
        return run_cli(target.spec, env=env)

    def runs_for(seconds: float, what: str) -> list[Run]:
        """Probe runs, INTERVAL apart, for ``seconds``: each must pass."""
        runs: list[Run] = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            run = probe()
            _check(run, 0, f"{what}, run {len(runs) + 1}")
            runs.append(run)
            time.sleep(INTERVAL)
        return runs

    for name in ("wedge", "slow", "soft-fail"):
        (target.switches / name).unlink(missing_ok=True)
    assert post(target.infer_url, target.sample, target.headers)[0] == 200
    seen: dict[str, float] = {}
    span = target.stall + target.lag + 2 * INTERVAL  # longer than a stall could take to show

    idle = runs_for(span, "idle")
    assert "first reading" in idle[0].stdout, idle[0].stdout
    assert "idle: nothing pending" in idle[-1].stdout, idle[-1].stdout
    seen["idle runs"] = len(idle)
    seen["idle run"] = max(r.elapsed for r in idle)

    (target.switches / "slow").write_text(str(SLOW))
    with load(target.infer_url, target.sample, CLIENTS, target.headers) as statuses:
        time.sleep(SLOW * 1.5)  # every client has sent; requests queue behind the worker
        busy = runs_for(span, "busy")
        assert any("progressing: " in r.stdout for r in busy), [_first_line(r) for r in busy]
        seen["busy runs"] = len(busy)
        seen["busy run"] = max(r.elapsed for r in busy)

        wedged_at = time.monotonic()
        (target.switches / "wedge").touch()
        try:
            passed = 0
            while True:
                run = probe()
                after = time.monotonic() - wedged_at
                if run.rc != 0 or after > span + SLACK:
                    break
                _check(run, 0, f"wedged, {after:.1f} s")
                passed += 1
                time.sleep(INTERVAL)
        finally:
            (target.switches / "wedge").unlink()
        (target.switches / "slow").unlink()
    _check(run, 1, f"wedged, {after:.1f} s after the wedge")
    line = _first_line(run)
    said = re.search(rf"stalled: (\d+) [^,]+, .*no .+ for (\d+)s \(stall={target.stall:g}s\)", line)
    assert said is not None, run.stdout
    assert int(said[1]) > 0 and int(said[2]) >= target.stall, line
    # Not before DURATION: the failing run ended at least DURATION after the wedge.
    assert after >= target.stall, f"failed {after:.1f} s after the wedge: {line}"
    seen["wedged passing runs"] = passed
    seen["wedged fails after"] = after
    print(f"{target.name} stall= wedged: {line} ({after:.1f} s after the wedge)")

    completed = list(statuses)
    assert len(completed) >= CLIENTS and 200 in completed, completed
    assert set(completed) <= {200, *target.gave_up}, completed
    # The held requests drain at once; metrics that lag show it within ``lag``.
    released = time.monotonic()
    while (recovered := probe()).rc != 0 and time.monotonic() - released < target.lag + SLACK:
        time.sleep(INTERVAL)
    _check(recovered, 0, "after the wedge")
    seen["passes again after"] = time.monotonic() - released
    print(f"{target.name} stall= states: " + ", ".join(f"{k} {v:.2f}" for k, v in seen.items()))
    return seen
