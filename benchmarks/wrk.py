"""wrk at a fixed rate (benchmarks/fixed_rate.lua), several URLs loaded at once.

Every URL gets a wrk of its own, all started together, so each request meets
the same neighbours on a shared machine and the figures of one run compare
the URLs, not two moments of the machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .harness import clean_env

LUA = Path(__file__).with_name("fixed_rate.lua")


def run(
    wrk: str, urls: dict[str, str], seconds: int, connections: int, delay_ms: int
) -> dict[str, dict[str, float]]:
    """The figures of fixed_rate.lua's TPB line per key of ``urls``: requests,
    duration_us, p50_us, p90_us, p99_us, max_us and the error counts."""
    env = clean_env(TPB_WRK_DELAY_MS=str(delay_ms))
    procs = {
        key: subprocess.Popen(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, url in urls.items()
    }
    figures = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=seconds + 30)
        line = next((x for x in out.splitlines() if x.startswith("TPB ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no figures for {key} (exit {proc.returncode}): "
                               f"{err[-500:]}")  # fmt: skip
        figures[key] = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return figures
