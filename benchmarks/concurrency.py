"""N ``http`` checks in one run, against endpoints that each answer after 300 ms.

torchprobe runs socket checks in threads of its own process, up to 128 at
once, so the run should take about as long as its slowest check, not the
sum: 20 such checks must finish in under twice the time of one.
"""

from __future__ import annotations

from pathlib import Path

from .harness import (
    REPORT,
    Command,
    Settings,
    Target,
    alternate,
    clean_env,
    console_script,
    median,
    ratio_target,
    unexpected,
    walls,
)
from .servers import http_server

COUNTS = (1, 5, 20, 100)
DELAY = 0.3  # seconds each endpoint waits before it answers


def concurrency(s: Settings, plot_path: Path | None, subtitle: str) -> list[Target]:
    tp, env = console_script(), clean_env()
    with http_server(delay=DELAY) as (url, _):
        # A different path for every check: nothing may be shared or cached.
        commands = {
            str(n): Command([tp, *(f"http:url={url}/n{n}/{i}" for i in range(n))], env)
            for n in COUNTS
        }
        runs = alternate(commands, s.concurrency_reps, warmup=1)
    broken = unexpected(runs, commands)
    one = walls(runs["1"])
    targets = [
        ratio_target(
            f"concurrency-{n}",
            f"{n} slow http vs 1",
            2.0 if n == 20 else None,
            walls(runs[str(n)]),
            one,
            broken,
            note=f"one run, {n} endpoints answering after {DELAY:g} s",
        )
        for n in COUNTS[1:]
    ]
    medians = [median(walls(runs[str(n)])) for n in COUNTS]
    slope = _slope(COUNTS, medians)
    by_count = dict(zip(map(str, COUNTS), medians, strict=True))
    targets.append(
        Target(
            "concurrency-slope",
            "slope per extra check",
            REPORT,
            unit="ms",
            torchprobe=slope * 1000,
            status=REPORT,
            note=f"least squares over N={', '.join(map(str, COUNTS))}; one check "
            f"alone: {medians[0] * 1000:.0f} ms",
            extra={"medians_s": by_count},
        )
    )
    if plot_path is not None:
        samples = {n: walls(runs[str(n)]) for n in COUNTS}
        targets[-1].extra["plot"] = plot(plot_path, samples, slope, subtitle)
    return targets


def _slope(xs: tuple[int, ...], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - mx) ** 2 for x in xs)


def plot(path: Path, samples: dict[int, list[float]], slope: float, subtitle: str) -> str:
    """Wall time against N, every run and the medians; returns what was done."""
    try:
        import matplotlib  # a benchmark-only dependency: the suite runs without it
    except ImportError:
        print("benchmarks: matplotlib is not installed, so no plot (pip install matplotlib)")
        return "skipped: matplotlib is not installed"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(samples)
    medians = [median(samples[n]) for n in counts]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n in counts:
        ax.scatter(
            [n] * len(samples[n]),
            samples[n],
            s=14,
            color="tab:blue",
            alpha=0.35,
            label="one run" if n == counts[0] else None,
        )
    ax.plot(counts, medians, marker="o", color="tab:blue", label="median")
    ax.axhline(
        2 * medians[0], linestyle="--", color="tab:red", label="target for N=20: 2x one check"
    )
    ax.axhline(DELAY, linestyle=":", color="gray", label=f"one endpoint's delay ({DELAY:g} s)")
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_ylim(0, max(2 * medians[0], *(max(v) for v in samples.values())) * 1.15)
    ax.set_xlabel(f"http checks in one torchprobe run (each endpoint answers after {DELAY:g} s)")
    ax.set_ylabel("wall time of the run (s)")
    ax.set_title(
        f"torchprobe: N slow checks in one run; slope {slope * 1000:.1f} ms/check\n" + subtitle,
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)
