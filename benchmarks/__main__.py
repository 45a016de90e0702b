"""``python -m benchmarks``: run every target, print the table, write the JSON.

Exit status: 0 every target met, 1 a target missed (or a group of targets
could not run: its error is in the table), 2 the suite could not start.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import cli_targets, concurrency, docker_round, driver_targets, inprocess, report, sidecar
from .harness import MISSED, REPO, Settings, SetupError, Target

DEFAULT_JSON = REPO / "build" / "benchmarks" / "results.json"  # build/ is git-ignored
DEFAULT_PLOT = REPO / "docs" / "performance-checks.png"
GPU_NOTE = (
    "not measured (no GPU): a CUDA context costs about 620 MiB of GPU memory on an "
    "H100/H200; see docs/performance.md"
)


def gpu_footprint() -> list[Target]:
    why = (
        GPU_NOTE
        if shutil.which("nvidia-smi") is None
        else ("not measured by this suite: scripts/gpu-validate.sh and docs/gpu-validation.md")
    )
    return [Target("gpu-footprint", "GPU memory of cuda/tensor", "report", unit="MiB", note=why)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and shorter windows: under a minute in all",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help="where to write every figure (default: %(default)s; a Markdown "
        "table goes beside it, .md)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help=f"the concurrency plot (default: {DEFAULT_PLOT} for a full run, "
        "beside the JSON with --quick)",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no plot")
    groups_help = "startup,http,nvml,concurrency,torch,inprocess,serve,gpu,driver,docker"
    parser.add_argument(
        "--only",
        default="",
        metavar="GROUPS",
        help=f"run only these groups, comma-separated ({groups_help})",
    )
    args = parser.parse_args(argv)

    settings = Settings.make(args.quick)
    beside_json = args.json.with_name("performance-checks.png")
    plot = None if args.no_plot else args.plot or (beside_json if args.quick else DEFAULT_PLOT)
    meta = report.machine()
    subtitle = (
        f"{meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}"
        f"{', quick run' if args.quick else ''}"
    )
    groups: dict[str, Callable[[], list[Target]]] = {
        "startup": lambda: cli_targets.startup(settings),
        "http": lambda: cli_targets.http_path(settings),
        "nvml": lambda: cli_targets.nvml_path(settings),
        "concurrency": lambda: concurrency.concurrency(settings, plot, subtitle),
        "torch": lambda: cli_targets.torch_path(settings),
        "inprocess": lambda: inprocess.in_process(settings),
        "serve": lambda: sidecar.serve_targets(settings),
        "gpu": gpu_footprint,
        "driver": lambda: driver_targets.driver_path(settings),
        "docker": lambda: docker_round.docker_round(settings),
    }
    chosen = [g.strip() for g in args.only.split(",") if g.strip()] or list(groups)
    unknown = [g for g in chosen if g not in groups]
    if unknown:
        parser.error(f"unknown group {', '.join(unknown)} (groups: {groups_help})")

    print(f"benchmarks: {'quick' if args.quick else 'full'} run, {subtitle}", flush=True)
    targets: list[Target] = []
    timings: dict[str, float] = {}
    for name in chosen:
        started = time.perf_counter()
        try:
            targets += groups[name]()
        except SetupError as exc:
            print(f"benchmarks: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - one failing group must not hide the others
            targets.append(
                Target(
                    f"{name}-error",
                    f"{name}: could not run",
                    "max",
                    status=MISSED,
                    note=f"{type(exc).__name__}: {exc}",
                )
            )
        timings[name] = time.perf_counter() - started
        print(f"benchmarks: {name} done in {timings[name]:.1f} s", flush=True)

    print()
    print(report.table(targets))
    report.write(args.json, report.document(targets, settings, meta, timings), targets)
    code = report.exit_code(targets)
    print(
        f"\nfigures: {args.json}" + (f"; plot: {plot}" if plot and "concurrency" in chosen else "")
    )
    print(
        "all targets met"
        if code == 0
        else "missed: " + ", ".join(t.id for t in targets if t.status == MISSED)
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
