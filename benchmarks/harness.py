"""Running commands side by side, and the result of one target.

A command is timed from just before it is started to just after it has been
reaped, with ``time.perf_counter``; its peak RSS comes from ``os.wait4``, which
returns the rusage of that one child (``subprocess.run`` reaps with ``waitpid``
and drops it, and ``getrusage(RUSAGE_CHILDREN)`` is the maximum over every
child reaped so far, not per run).

Both are taken by a small launcher (``python -I -S``, about 9 MiB), not by this
process: Linux carries the RSS high-water mark of the address space a child
had before ``exec`` into its ``ru_maxrss``, and a child of this process starts
as a copy (or, spawned with vfork, a borrower) of this process's address space,
so every command would have reported at least this process's own peak (25 MiB
and more once matplotlib is loaded) whatever it used itself.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Variables that would make the two sides of a comparison run different code.
# PYTHONDONTWRITEBYTECODE is dropped so the warm-ups write the bytecode caches an
# installed package has: without them every run recompiles torchprobe's sources.
_DROPPED = {
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONDEVMODE",
    "PYTHONTRACEMALLOC",
    "PYTHONWARNINGS",
    "PYTHONVERBOSE",
    "PYTHONMALLOC",
    "PYTHONINSPECT",
}


class SetupError(RuntimeError):
    """The suite cannot run at all here (not a target missed): exit status 2."""


@dataclass(frozen=True)
class Settings:
    """How much to measure: the full run for the figures, ``--quick`` for CI."""

    quick: bool
    reps: int  # alternation rounds for the commands that take about 0.1 s
    warmup: int
    torch_reps: int  # the torch target: each run imports torch (about 3 s)
    torch_warmup: int
    concurrency_reps: int
    cpu_window: float  # seconds of idle server measured for the monitor's CPU
    wrk_seconds: int
    wrk_rounds: int
    docker_reps: int  # rounds of docker exec (about 0.1 s each) in one container

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:  # under a minute in all; its figures are only indicative
            return cls(
                quick=True,
                reps=5,
                warmup=2,
                torch_reps=1,  # three runs that import torch: 10 s
                torch_warmup=0,
                concurrency_reps=2,
                cpu_window=10.0,
                wrk_seconds=4,
                wrk_rounds=1,
                docker_reps=5,
            )
        return cls(
            quick=False,
            reps=15,
            warmup=3,
            torch_reps=5,
            torch_warmup=1,
            concurrency_reps=5,
            cpu_window=30.0,
            wrk_seconds=10,
            wrk_rounds=3,
            docker_reps=40,
        )


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """End a process started with ``start_new_session=True`` and its whole
    group: SIGTERM, then SIGKILL if it is not gone within ``grace`` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without TORCHPROBE_* settings (a stray
    TORCHPROBE_TIMEOUT or _CHECKS would change what runs) and without the
    PYTHON* variables that change how an interpreter starts."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("TORCHPROBE_") and k not in _DROPPED
    }
    env.update(extra)
    return env


def console_script() -> str:
    """The installed ``torchprobe`` of this interpreter: beside it (a virtual
    environment), else in its scripts directory (``/usr/local/bin`` for a
    system Python). The baselines run ``sys.executable``, so both sides use the
    same Python and the same site-packages."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "torchprobe").exists():
            return str(folder / "torchprobe")
    raise SetupError(
        f"no torchprobe console script for {sys.executable}; "
        "install torchprobe into this environment (pip install -e .)"
    )


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: Mapping[str, str]
    expect: tuple[int, ...] = (0,)  # exit statuses that mean "it did what we time"
    timeout: float = 60.0


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    maxrss_kib: int  # ru_maxrss: KiB on Linux
    code: int


# The launcher: spawns argv[1:], reaps it with wait4, prints wall, ru_maxrss, status.
_LAUNCHER = """\
import os, sys, time
null = os.open(os.devnull, os.O_RDWR)
actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
           (os.POSIX_SPAWN_DUP2, null, 2)]
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_once(command: Command) -> Sample:
    # -I: the command's PYTHONPATH (the fake NVML) is not the launcher's business.
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, *command.argv],
        env=dict(command.env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=command.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command it started
        proc.communicate()
        return Sample(command.timeout, 0, -signal.SIGKILL)
    try:
        wall, maxrss, code = out.split()
        return Sample(float(wall), int(maxrss), int(code))
    except ValueError:
        raise RuntimeError(
            f"the launcher failed (exit {proc.returncode}) running {command.argv[0]}"
        ) from None


def alternate(commands: Mapping[str, Command], reps: int, warmup: int) -> dict[str, list[Sample]]:
    """Run each command ``reps`` times, interleaved, after ``warmup`` rounds.

    Round i starts at command ``i mod n`` (A B, B A, A B ... for two), so a
    drift of the machine's load, or whatever one command leaves warm for the
    next, falls on every command alike.
    """
    names = list(commands)
    for _ in range(warmup):
        for name in names:
            run_once(commands[name])
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for i in range(reps):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(run_once(commands[name]))
    return samples


def walls(samples: Iterable[Sample]) -> list[float]:
    return [s.wall for s in samples]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def unexpected(samples: Mapping[str, list[Sample]], commands: Mapping[str, Command]) -> str:
    """A note naming any run that exited with a status its command should not
    give: its time is then not the time of the work being compared."""
    notes = []
    for name, runs in samples.items():
        bad = [s.code for s in runs if s.code not in commands[name].expect]
        if bad:
            notes.append(f"{name} exited {sorted(set(bad))} in {len(bad)}/{len(runs)} runs")
    return "; ".join(notes)


# -- results ----------------------------------------------------------------------------
OK, MISSED, REPORT, NOT_MEASURED = "ok", "missed", "report", "not measured"


@dataclass
class Target:
    """One line of the table.

    ``kind``: "ratio" (met when ratio <= limit), "max" (met when the torchprobe
    figure <= limit) or "report" (a figure with no target).
    """

    id: str
    title: str
    kind: str
    unit: str = "s"
    torchprobe: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    limit: float | None = None
    status: str = NOT_MEASURED
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def judge(self, broken: str = "") -> Target:
        """Set ``status`` from the figures; ``broken`` (a command misbehaved)
        makes a target missed whatever its figures say."""
        # A "max" target is judged on its own figure: a ratio beside it would mislead.
        if self.kind != "max" and self.torchprobe is not None and self.baseline:
            self.ratio = self.torchprobe / self.baseline
        if broken:
            self.note = "; ".join(filter(None, [self.note, broken]))
        if self.kind == REPORT or self.torchprobe is None:
            self.status = REPORT if self.torchprobe is not None else NOT_MEASURED
        elif broken:
            self.status = MISSED
        else:
            figure = self.ratio if self.kind == "ratio" else self.torchprobe
            assert self.limit is not None and figure is not None
            self.status = OK if figure <= self.limit else MISSED
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio_target(
    id: str,
    title: str,
    limit: float | None,
    tp: list[float],
    base: list[float],
    broken: str = "",
    note: str = "",
    unit: str = "s",
) -> Target:
    """A target from two lists of figures (their medians, and their ratio);
    with no ``limit`` it is reported, not judged."""
    target = Target(
        id,
        title,
        "ratio" if limit is not None else REPORT,
        unit=unit,
        limit=limit,
        note=note,
        torchprobe=median(tp),
        baseline=median(base),
        samples={"torchprobe": _rounded(tp), "baseline": _rounded(base)},
    )
    return target.judge(broken)


def not_measured(
    id: str, title: str, why: str, kind: str = "ratio", limit: float | None = None, unit: str = "s"
) -> Target:
    return Target(id, title, kind, unit=unit, limit=limit, note=why)


def _rounded(values: Iterable[float]) -> list[float]:
    return [round(v, 6) for v in values]
