"""How long a signal can reach ``torchprobe`` before its handlers are in place.

``python benchmarks/signal_window.py [RUNS]`` (with the venv's ``torchprobe``
on PATH). Two figures, both from the moment ``Popen`` returns:

- *installed*: when ``/proc/PID/status`` first shows SIGTERM and SIGHUP
  caught (polled every 0.2 ms): the interpreter's start-up, the console-script
  wrapper's imports and ``torchprobe/__init__.py`` + ``torchprobe._entry``;
- *sweep*: SIGTERM sent at growing delays; the first delay from which every
  run exits 0 or 1 (before it: killed by SIGTERM, status 143 in a shell).

Not part of ``python -m benchmarks``: there is no target to meet, only a
window to document (docs/deadlines.md).
"""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import time

WANTED = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))


def installed_after(command: list[str]) -> float | None:
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = None
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fp:
                mask = next(int(line.split()[1], 16) for line in fp if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            break
        if mask & WANTED == WANTED:
            seen = time.monotonic() - started
            break
        time.sleep(0.0002)
    proc.wait()
    return seen


def outcome_at(command: list[str], delay: float) -> int:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    return proc.wait()


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    exe = shutil.which("torchprobe")
    if exe is None:
        print("torchprobe is not on PATH", file=sys.stderr)
        return 2
    command = [exe, "--version"]
    times = [t for t in (installed_after(command) for _ in range(runs)) if t is not None]
    ms = sorted(t * 1000 for t in times)
    print(f"installed after: min {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
          f"max {ms[-1]:.1f} ms ({len(ms)} runs)")  # fmt: skip
    first_safe = None
    for step in range(0, 200):
        delay = step * 0.002
        codes = [outcome_at(command, delay) for _ in range(max(3, runs // 5))]
        unsafe = [c for c in codes if c not in (0, 1)]
        print(f"  SIGTERM at {delay * 1000:5.1f} ms: {sorted(set(codes))}")
        if not unsafe:
            first_safe = first_safe if first_safe is not None else delay
            if delay - first_safe >= 0.010:
                break
        else:
            first_safe = None
    if first_safe is not None:
        print(f"every run 0 or 1 from {first_safe * 1000:.0f} ms after spawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
