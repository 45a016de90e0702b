"""The driver-API compute probe: ``torchprobe cuda:backend=driver`` beside
``torchprobe nvml`` (wall time) and beside ``torchprobe tensor:device=cuda:0``
(GPU memory). Measured only where a GPU is present: without one there is no
driver to time and no memory to read, so both rows say why they are empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

from .harness import (
    Command,
    Settings,
    Target,
    alternate,
    clean_env,
    console_script,
    not_measured,
    ratio_target,
    unexpected,
    walls,
)

WALL_LIMIT = 3.0  # cuda:backend=driver at most 3x the wall time of nvml
MEMORY_LIMIT = 0.5  # and at most half the GPU memory of tensor:device=cuda:0
_MIB = float(1 << 20)


def driver_path(s: Settings) -> list[Target]:
    why = _no_gpu()
    if why:
        return [
            not_measured("driver-wall", "cuda:backend=driver vs nvml", why, limit=WALL_LIMIT),
            not_measured(
                "driver-memory", "GPU memory: driver vs tensor", why, limit=MEMORY_LIMIT, unit="MiB"
            ),  # fmt: skip
        ]
    tp = console_script()
    # PCI order: CUDA's device 0 is then NVML's index 0, whose memory is read.
    env = clean_env(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES="0")
    commands = {
        "driver": Command([tp, "cuda:backend=driver"], env),
        "nvml": Command([tp, "nvml"], env),
    }
    runs = alternate(commands, s.reps, s.warmup)
    wall = ratio_target(
        "driver-wall", "cuda:backend=driver vs nvml", WALL_LIMIT, walls(runs["driver"]),
        walls(runs["nvml"]), unexpected(runs, commands),
        note="baseline: torchprobe nvml, same GPU, alternated",
    )  # fmt: skip
    tensor = [tp, "--timeout", "60", "--format", "json", "tensor:device=cuda:0"]
    driver = [tp, "--format", "json", "cuda:backend=driver"]
    driver_mib = [_footprint(driver, env) for _ in range(s.torch_reps)]
    tensor_mib = [_footprint(tensor, env) for _ in range(s.torch_reps)]
    memory = ratio_target(
        "driver-memory", "GPU memory: driver vs tensor", MEMORY_LIMIT, driver_mib, tensor_mib,
        note="what GPU 0's free memory drops by while each runs: NVML's free figure before "
        "it minus the check's own in-context free figure, or the rise of NVML's used "
        "figure (sampled every 2 ms), whichever is larger",
        unit="MiB",
    )  # fmt: skip
    return [wall, memory]


def _no_gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "not measured (no GPU: no nvidia-smi on PATH); targets in docs/performance.md"
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - any NVML failure: nothing to measure on
        return f"not measured (NVML does not start: {exc})"
    return "" if count else "not measured (NVML sees no GPU)"


def _footprint(argv: list[str], env: dict[str, str]) -> float:
    """MiB GPU 0 gives the command while it runs.

    Two readings, the larger kept: in some sandboxed runtimes NVML's used
    figure stays at 0 while a process holds a context (seen on an H200, see
    docs/gpu-validation.md), so the check's own free-memory figure, read
    inside its context, is compared with NVML's free figure from before."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        before = pynvml.nvmlDeviceGetMemoryInfo(handle)
        peak = [int(before.used)]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            done_run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        finally:
            done.set()
            sampler.join()
        if done_run.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} exited {done_run.returncode}")
        details = json.loads(done_run.stdout)["checks"][0]["details"]
        # The driver check's figures are under "device"; tensor's "device" is its name.
        nested = details.get("device")
        inside = (nested if isinstance(nested, dict) else details).get("memory_free")
        own = int(before.free) - int(inside) if isinstance(inside, int) else 0
        return max(own, peak[0] - int(before.used)) / _MIB
    finally:
        pynvml.nvmlShutdown()
