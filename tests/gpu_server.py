"""A serving process on a real GPU, for the gpu-marked tests: the in-process
monitor beside a real device-side assert or a real out-of-memory error.

    python tests/gpu_server.py STATUS_DIR assert|oom

Prints one line per step, then serves (sleeps) until it is killed.
"""

from __future__ import annotations

import sys
import time

import torch

from torchprobe.monitor import Monitor


def main() -> None:
    status_dir, fault = sys.argv[1], sys.argv[2]
    monitor = Monitor(device="cuda:0", interval=0.5, status_dir=status_dir).start()
    monitor.loading()
    model = torch.nn.Linear(4, 2).to("cuda:0")
    monitor.loaded()
    print("loaded", flush=True)
    try:
        with monitor.guard():
            if fault == "assert":
                # Indexing out of bounds on the device: a device-side assert
                # (error 710) that poisons this process's context for good.
                table = torch.zeros(4, device="cuda:0")
                index = torch.tensor([10], device="cuda:0")
                table[index].sum().item()
            else:
                free, _ = torch.cuda.mem_get_info(0)
                torch.empty(int(free * 2), dtype=torch.uint8, device="cuda:0")
    except Exception as exc:  # noqa: BLE001 - the app logs it and carries on
        print(f"error {type(exc).__name__} {getattr(exc, 'error_code', None)}", flush=True)
    with monitor.guard():
        try:
            model(torch.ones(1, 4, device="cuda:0")).sum().item()
            print("after: cuda works", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"after: {type(exc).__name__}", flush=True)
    print(f"live {bool(monitor.live())}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
