"""The in-process monitor in a served app: what its endpoints and its periodic
checks cost the server.

The app (benchmarks/served_app.py: Flask under gunicorn's gthread worker)
runs the monitor with ``checks=["tensor:device=cpu"]`` at the default 10 s
interval. wrk, a real load generator in C (a Python client on the same two
cores would measure itself), requests ``/ping``, ``/health`` and ``/ready``
at the same time, each at a fixed rate (benchmarks/fixed_rate.lua); their p99
latencies are compared, round by round. The monitor's CPU is the worker's CPU
time over an idle window, less that of the same app without torchprobe, served
beside it; each worker
reports its own (``time.process_time()``: every thread, to the nanosecond,
where /proc's clock ticks of 10 ms would round a 10 s window to 0.1 %).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import wrk
from .harness import REPO, Settings, Target, clean_env, not_measured, ratio_target, stop_group

WRK_CONNECTIONS = 2  # per endpoint, three endpoints at once
WRK_DELAY_MS = 20  # per connection: about 100 requests/s per endpoint, 300 in all
ENDPOINTS = ("/ping", "/health", "/ready")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def failure(self, what: str) -> RuntimeError:
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace")[-2000:]
        return RuntimeError(f"{what}; the server's log ends:\n{tail}")


@contextmanager
def served(monitor: bool, workdir: str) -> Iterator[Served]:
    """gunicorn in its own session, on a socket bound here (port 0, handed over
    as ``fd://N``: no race for a free port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    name = "monitor" if monitor else "control"
    env = clean_env(
        TPB_MONITOR="1" if monitor else "0", TPB_STATUS_DIR=os.path.join(workdir, "status")
    )
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "4",
        "-w",
        "1",
        "-b",
        f"fd://{sock.fileno()}",
        "--chdir",
        str(REPO),
        "--log-level",
        "warning",
        "--worker-tmp-dir",
        workdir,
        "benchmarks.served_app:app",
    ]
    with open(os.path.join(workdir, f"{name}.log"), "w+b") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            pass_fds=[sock.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            yield Served(sock.getsockname()[1], proc, log)
        finally:
            stop_group(proc)
            sock.close()


def wait_until(server: Served, first_round: bool, timeout: float = 90.0) -> int:
    """Wait until the worker answers (and, with ``first_round``, the monitor
    has finished its first round, which imports torch); return its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise server.failure(f"gunicorn exited with status {server.proc.returncode}")
        try:
            status, body = server.get("/health" if first_round else "/pid")
            if status == 200 and (not first_round or json.loads(body).get("last_round")):
                return int(server.get("/pid")[1])
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise server.failure(f"not ready after {timeout:g} s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process, its exited threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def in_process(s: Settings) -> list[Target]:
    titles = {"health": "p99 /health vs /ping", "ready": "p99 /ready vs /ping"}
    missing = [m for m in ("flask", "gunicorn") if importlib.util.find_spec(m) is None]
    if missing:
        why = f"not measured: {' and '.join(missing)} not installed (pip install '.[test]')"
        return [not_measured(f"inproc-{k}-p99", t, why, unit="ms") for k, t in titles.items()] + [
            not_measured("monitor-cpu", "monitor CPU (idle, 10 s)", why, "max", 1.0, "%")
        ]
    with tempfile.TemporaryDirectory(prefix="tpbench-") as workdir:
        with served(True, workdir) as mon, served(False, workdir) as ctl:
            mon_pid, ctl_pid = wait_until(mon, first_round=True), wait_until(ctl, False)
            cpu = monitor_cpu(mon, ctl, (mon_pid, ctl_pid), s.cpu_window)
            wrk = shutil.which("wrk")
            if wrk is None:
                print(
                    "benchmarks: wrk is not installed (apt-get install wrk): the endpoints' "
                    "latency is not measured"
                )
                why = "not measured: wrk is not installed (apt-get install wrk)"
                return [
                    not_measured(f"inproc-{k}-p99", t, why, unit="ms") for k, t in titles.items()
                ] + [cpu]
            p99, p50, rates, errors = latency(wrk, mon, s)
    rate = (
        f"3 wrk at once, -t1 -c{WRK_CONNECTIONS}, {WRK_DELAY_MS} ms between a connection's "
        f"requests; {rates}"
    )
    broken = f"{errors} non-2xx responses or socket errors" if errors else ""
    targets = [
        ratio_target(f"inproc-{k}-p99", t, 1.2, p99[f"/{k}"], p99["/ping"], broken, rate, "ms")
        for k, t in titles.items()
    ]
    for target in targets:
        target.extra["p50_ms"] = p50
    return targets + [cpu]


def monitor_cpu(mon: Served, ctl: Served, pids: tuple[int, int], window: float) -> Target:
    """The worker's CPU seconds per second over an idle window, with the monitor
    less without: what the periodic checks and the status file cost."""

    def read() -> tuple[float, float, float, float]:
        return (float(mon.get("/cpu")[1]), float(ctl.get("/cpu")[1]),
                cpu_seconds(pids[0]), cpu_seconds(pids[1]))  # fmt: skip

    before = read()
    time.sleep(window)
    after = read()
    mon_s, ctl_s, mon_ticks, ctl_ticks = (a - b for a, b in zip(after, before, strict=True))
    return Target(
        "monitor-cpu",
        "monitor CPU (idle, 10 s)",
        "max",
        unit="%",
        limit=1.0,
        torchprobe=100 * (mon_s - ctl_s) / window,
        baseline=100 * ctl_s / window,
        note=f"worker CPU time (time.process_time) over {window:g} s idle: {mon_s * 1000:.1f} ms "
        f"with the monitor, {ctl_s * 1000:.1f} ms without (the baseline column); "
        f"/proc/<pid>/stat: {mon_ticks:.2f} s and {ctl_ticks:.2f} s",
        extra={
            "window_s": window,
            "cpu_s_monitor": mon_s,
            "cpu_s_control": ctl_s,
            "proc_stat_s_monitor": mon_ticks,
            "proc_stat_s_control": ctl_ticks,
        },
    ).judge()


def latency(
    wrk: str, server: Served, s: Settings
) -> tuple[dict[str, list[float]], dict[str, list[float]], str, int]:
    """p99 and p50 (ms) of each endpoint in each of ``wrk_rounds`` rounds; the
    request rates reached, and how many errors wrk counted.

    The three endpoints are loaded at the same time, one wrk each: every
    request, whatever its path, meets the same neighbours on this shared
    machine and the same contention for the worker's GIL, so the ratios
    compare the endpoints and not two moments of the machine.
    """
    run_wrks(wrk, server, 1)  # warm-up: Flask's first requests, the connections
    p99: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    p50: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    rates, errors = [], 0
    for _ in range(s.wrk_rounds):
        for path, figures in run_wrks(wrk, server, s.wrk_seconds).items():
            p99[path].append(figures["p99_us"] / 1000)
            p50[path].append(figures["p50_us"] / 1000)
            rates.append(figures["requests"] / (figures["duration_us"] / 1e6))
            errors += sum(
                int(v) for name, v in figures.items() if name.endswith(("errors", "timeouts"))
            )
    return p99, p50, f"{min(rates):.0f}-{max(rates):.0f} requests/s per endpoint", errors


def run_wrks(wrk_path: str, server: Served, seconds: int) -> dict[str, dict[str, float]]:
    urls = {path: server.url + path for path in ENDPOINTS}
    return wrk.run(wrk_path, urls, seconds, WRK_CONNECTIONS, WRK_DELAY_MS)
