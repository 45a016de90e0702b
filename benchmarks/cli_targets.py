"""The command-line targets: start-up, the HTTP path, the torch path, the NVML path.

Each compares the installed ``torchprobe`` with a ``python -c`` one-liner, run
by the same interpreter, that imports what torchprobe cannot do without and
does the same work: the ratio is what torchprobe costs beyond its job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

from .harness import (
    REPO,
    Command,
    Settings,
    Target,
    alternate,
    clean_env,
    console_script,
    ratio_target,
    unexpected,
    walls,
)
from .servers import http_server

PY = sys.executable
_MIB = 1024.0  # ru_maxrss is in KiB on Linux

GET_ONE_LINER = (
    "import click, http.client, sys\n"
    "c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=5)\n"
    "c.request('GET', '/health')\n"
    "r = c.getresponse(); r.read()\n"
    "sys.exit(r.status != 200)\n"
)
TORCH_ONE_LINER = "import torch; x = torch.tensor([1., 2., 3., 4.]); (x * x).sum().item()"
# The readings torchprobe's nvml check takes on each GPU, in a plain loop.
NVML_ONE_LINER = """\
import pynvml as n
n.nvmlInit()
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    for read in (lambda: n.nvmlDeviceGetMemoryInfo(h, version=n.nvmlMemory_v2),
                 lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
                 lambda: n.nvmlDeviceGetTotalEccErrors(
                     h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC),
                 lambda: n.nvmlDeviceGetRemappedRows(h)):
        try:
            read()
        except n.NVMLError:
            pass
n.nvmlShutdown()
"""


def startup(s: Settings) -> list[Target]:
    tp, env = console_script(), clean_env()
    commands = {
        "version": Command([tp, "--version"], env),
        "help": Command([tp, "--help"], env),
        "click": Command([PY, "-c", "import click"], env),
    }
    runs = alternate(commands, s.reps, s.warmup)
    broken = unexpected(runs, commands)
    base = walls(runs["click"])
    targets = [
        ratio_target(
            "startup-version",
            "startup --version",
            1.2,
            walls(runs["version"]),
            base,
            broken,
            note="baseline: python -c 'import click'",
        ),
        ratio_target(
            "startup-help",
            "startup --help",
            1.2,
            walls(runs["help"]),
            base,
            broken,
            note="baseline: python -c 'import click'",
        ),
    ]
    targets[0].extra["import_profile"] = import_profile([tp, "--version"], env)
    return targets


def http_path(s: Settings) -> list[Target]:
    tp, env = console_script(), clean_env()
    with http_server() as (url, port):
        commands = {
            "torchprobe": Command([tp, f"http:url={url}/health"], env),
            "one-liner": Command([PY, "-c", GET_ONE_LINER.format(port=port)], env),
        }
        runs = alternate(commands, s.reps, s.warmup)
        profile = import_profile([tp, f"http:url={url}/health"], env)
    broken = unexpected(runs, commands)
    wall = ratio_target(
        "http-wall",
        "http GET",
        1.3,
        walls(runs["torchprobe"]),
        walls(runs["one-liner"]),
        broken,
        note="baseline: python -c 'import click, http.client; GET'",
    )
    wall.extra["import_profile"] = profile
    rss = [r.maxrss_kib / _MIB for r in runs["torchprobe"]]
    rss_base = [r.maxrss_kib / _MIB for r in runs["one-liner"]]
    memory = Target(
        "http-rss",
        "http peak RSS",
        "max",
        unit="MiB",
        limit=30.0,
        torchprobe=max(rss),
        baseline=max(rss_base),
        samples={"torchprobe": rss, "baseline": rss_base},
        note="the largest ru_maxrss of the runs (os.wait4); baseline: the one-liner's",
    )
    heavy = sorted({m for m in profile["modules"] if m.split(".")[0] in ("torch", "pynvml")})
    imports = Target(
        "http-imports",
        "http imports torch/pynvml",
        "max",
        unit="modules",
        limit=0,
        torchprobe=float(len(heavy)),
        extra={"imported": heavy},
        note=f"python -X importtime of the same run: {', '.join(heavy) or 'neither'}",
    )
    return [wall, memory.judge(broken), imports.judge()]


def torch_path(s: Settings) -> list[Target]:
    tp, env = console_script(), clean_env()
    commands = {
        # cuda fails (exit 1) on a CPU build of torch: timed all the same.
        "torchprobe": Command([tp, "cuda", "tensor:device=cpu"], env, expect=(0, 1)),
        "one-liner": Command([PY, "-c", TORCH_ONE_LINER], env, timeout=120.0),
        # The same, skipping the interpreter's shutdown with torch loaded (about
        # a second here): torchprobe kills its worker once it has the result,
        # so it never pays that, and the plain one-liner flatters torchprobe.
        "one-liner-exit": Command(
            [PY, "-c", f"{TORCH_ONE_LINER}; import os; os._exit(0)"], env, timeout=120.0
        ),
    }
    runs = alternate(commands, s.torch_reps, s.torch_warmup)
    broken = unexpected(runs, commands)
    return [
        ratio_target(
            "torch-wall",
            "torch cuda tensor:device=cpu",
            1.15,
            walls(runs["torchprobe"]),
            walls(runs["one-liner"]),
            broken,
            note="baseline: python -c 'import torch; tiny op'",
        ),
        ratio_target(
            "torch-wall-no-teardown",
            "torch vs one-liner + os._exit",
            None,
            walls(runs["torchprobe"]),
            walls(runs["one-liner-exit"]),
            broken,
            note="no target: the same one-liner ending in os._exit(0), no interpreter shutdown",
        ),
    ]


def nvml_path(s: Settings) -> list[Target]:
    tp = console_script()
    real = shutil.which("nvidia-smi") is not None
    if real:
        env, where = clean_env(), "the real NVML"
    else:
        # Both sides import tests/fakes/pynvml.py: it wraps the real nvidia-ml-py
        # (so the import costs what the real one does) and answers for an H100.
        env = clean_env(PYTHONPATH=str(REPO / "tests" / "fakes"), TORCHPROBE_FAKE_NVML="{}")
        where = "the fake NVML (tests/fakes/pynvml.py, TORCHPROBE_FAKE_NVML='{}'): no GPU here"
    commands = {
        "torchprobe": Command([tp, "nvml"], env),
        "click": Command([PY, "-c", "import click"], env),
        "pynvml": Command([PY, "-c", NVML_ONE_LINER], env),
    }
    if real:
        smi = ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv"]
        commands["nvidia-smi"] = Command(smi, env)
    runs = alternate(commands, s.reps, s.warmup)
    broken = unexpected(runs, commands)
    # torchprobe runs NVML in a worker, a second interpreter: the baseline is
    # the two interpreters it cannot do without, one importing click, one pynvml.
    click, nvml = walls(runs["click"]), walls(runs["pynvml"])
    # Sorted pairs: the median of their sums is the sum of the two medians.
    base = [c + n for c, n in zip(sorted(click), sorted(nvml), strict=True)]
    target = ratio_target(
        "nvml-wall",
        "nvml",
        1.3,
        walls(runs["torchprobe"]),
        base,
        broken,
        note=f"baseline: python -c 'import click' + a pynvml one-liner; {where}",
    )
    target.samples.update(click=click, pynvml=nvml)
    targets = [target]
    if real:
        targets.append(
            ratio_target(
                "nvml-floor",
                "nvml vs nvidia-smi (floor)",
                None,
                walls(runs["torchprobe"]),
                walls(runs["nvidia-smi"]),
                broken,
                note="no target: nvidia-smi is C, the floor",
            )
        )
    else:
        targets.append(
            Target(
                "nvml-floor",
                "nvml vs nvidia-smi (floor)",
                "report",
                note="not measured (no nvidia-smi on PATH)",
            )
        )
    return targets


def import_profile(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``python -X importtime`` of one run: every module it imported, and the
    slowest top-level imports (what start-up work to look at first)."""
    proc = subprocess.run(
        [PY, "-X", "importtime", *argv],
        env=env,
        cwd=REPO,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return parse_importtime(proc.stderr)


def parse_importtime(stderr: str) -> dict[str, Any]:
    """The figures of ``-X importtime``'s lines in ``stderr``."""
    modules: list[str] = []
    top: list[tuple[int, str]] = []
    own: list[tuple[int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        modules.append(name.strip())
        own.append((int(self_us), name.strip()))
        if depth == 0:
            top.append((int(cumulative), name.strip()))
    top.sort(reverse=True)
    own.sort(reverse=True)
    return {
        "modules": modules,
        "total_ms": round(sum(us for us, _ in top) / 1000, 1),
        "slowest_top_level_ms": [[name, round(us / 1000, 1)] for us, name in top[:8]],
        "slowest_self_ms": [[name, round(us / 1000, 1)] for us, name in own[:12]],
    }
