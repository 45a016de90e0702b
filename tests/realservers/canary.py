"""The canary's four states on a real server, driven through the installed command.

Each app's inference obeys the files of apps/switches.py in a folder the test
owns (``$CANARY_SWITCHES`` of the server). :func:`walk` takes a server through:

- idle: the healthy model's own answer to the sample is the reference;
  ``infer=`` with ``expect=`` that answer passes; on a server whose metrics
  have no gauge of pending work (``refuses_stall``), ``stall=`` is a one-line
  usage error that points to ``infer=``;
- busy: ``slow`` makes each inference take 1 s and more clients than the
  model has workers keep requests queued; every probe run passes (the canary
  and ``mode=live``) and every client request completes;
- wedged: ``wedge`` blocks inference; the health check alone still passes (the
  fake-dead), the canary fails on time naming what the health endpoint answered;
- soft-failed: ``soft-fail`` answers at once with empty results: ``expect=`` fails.

What each state took is returned (and printed, ``pytest -s``) for the
fake-dead matrix of docs/model-servers.md.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import Run, run_cli
from standins import load

from torchprobe.checks.judge import json_at

CLIENTS = 3  # concurrent requests: more than the one worker every app has
SLOW = 1.0  # seconds each inference takes while busy: longer than a probe interval of 1 s
# (the run's own deadline, --timeout, bounds a check's timeout=: both are given)


@dataclass
class Target:
    """One server's inference endpoint and the probe specs that reach it."""

    name: str
    #: The health-only readiness spec: ``torchserve:url=...,model=tiny``.
    ready: str
    #: The liveness spec.
    live: str
    #: Where the clients send the sample, and with which headers.
    infer_url: str
    sample: Any
    #: The dotted path of a value in the answer that a soft-failed model lacks.
    path: str
    switches: Path
    headers: dict[str, str] = field(default_factory=dict)
    #: The preset refuses ``stall=`` (its server's metrics show no pending work).
    refuses_stall: bool = False


def post(url: str, body: Any, headers: dict[str, str], timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _expected(value: Any) -> str:
    # expect= compares text with a JSON string as it is, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def _check(run: Run, rc: int, what: str) -> None:
    assert run.rc == rc, f"{what}: rc {run.rc}\n{run.stdout}{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr


def walk(target: Target, timeout: float = 3.0) -> dict[str, float]:
    """The four states, each asserted; returns the seconds each probe run took."""
    switches = target.switches
    for name in ("wedge", "slow", "soft-fail"):
        (switches / name).unlink(missing_ok=True)
    status, answer = post(target.infer_url, target.sample, target.headers)
    assert status == 200, (status, answer)
    found, value = json_at(answer, target.path.split("."))
    assert found, (target.path, answer)
    sample = json.dumps(target.sample, separators=(",", ":"))
    canary = f"{target.ready},infer={sample},expect={target.path}={_expected(value)}"
    seen: dict[str, float] = {}

    idle = run_cli(canary)
    _check(idle, 0, "idle canary")
    seen["idle canary"] = idle.elapsed
    if target.refuses_stall:
        refused = run_cli(f"{target.live},stall=30s")
        _check(refused, 1, "stall= on a server without a pending-work gauge")
        line = refused.stderr.strip()
        assert refused.stdout == "" and "\n" not in line, refused.stdout + refused.stderr
        assert line.startswith("torchprobe: error: "), line
        assert "stall= needs a metric of pending work" in line and "infer=" in line, line
        print(f"{target.name} stall=: {line}")

    (switches / "slow").write_text(str(SLOW))
    with load(target.infer_url, target.sample, CLIENTS, target.headers) as statuses:
        time.sleep(SLOW * 1.5)  # every client has sent; requests queue behind the worker
        for _ in range(2):
            busy = run_cli("--timeout", "40", f"{canary},timeout=30")
            _check(busy, 0, "busy canary")
            seen["busy canary"] = max(seen.get("busy canary", 0.0), busy.elapsed)
        live = run_cli(f"{target.live},timeout=5")
        _check(live, 0, "busy live")
        seen["busy live"] = live.elapsed
    (switches / "slow").unlink()
    completed = list(statuses)
    assert len(completed) >= CLIENTS and set(completed) == {200}, completed

    (switches / "wedge").touch()
    try:
        health = run_cli(f"{target.ready},timeout={timeout:g}")
        _check(health, 0, "wedged, health only (the fake-dead)")
        wedged = run_cli(f"{canary},timeout={timeout:g}")
        _check(wedged, 1, "wedged canary")
        assert f"inference did not answer in {timeout:g}s (" in wedged.stdout, wedged.stdout
        assert " answered HTTP 200 " in wedged.stdout, wedged.stdout
        assert wedged.elapsed < timeout + 5, wedged.elapsed
        live = run_cli(f"{target.live},timeout=5")
        _check(live, 0, "wedged live")
        seen["wedged ready"] = health.elapsed
        seen["wedged canary"] = wedged.elapsed
        print(f"{target.name} wedged: {wedged.stdout.splitlines()[0]}")
    finally:
        (switches / "wedge").unlink()
    recovered = run_cli("--timeout", "40", f"{canary},timeout=30")  # held requests drain first
    _check(recovered, 0, "canary after the wedge")

    (switches / "soft-fail").touch()
    try:
        health = run_cli(target.ready)
        _check(health, 0, "soft-failed, health only")
        soft = run_cli(canary)
        _check(soft, 1, "soft-failed canary")
        assert "wrong answer: POST " in soft.stdout, soft.stdout
        assert f"{target.path}" in soft.stdout, soft.stdout
        seen["soft-failed canary"] = soft.elapsed
        print(f"{target.name} soft-failed: {soft.stdout.splitlines()[0]}")
    finally:
        (switches / "soft-fail").unlink()
    print(f"{target.name} canary states: " + ", ".join(f"{k} {v:.2f}s" for k, v in seen.items()))
    return seen
