"""A serving process for tests: runs the in-process monitor and misbehaves on
request, until it is killed.

    python tests/monitor_worker.py STATUS_DIR [--interval S] [--max-busy S]
        [--not-loaded | --load-failed] [--sticky] [--stuck]
        [--device DEVICE] [--no-xid] [--xid-ignore N,...] [--xid-fatal N,...]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from torchprobe.monitor import Monitor


class AcceleratorError(RuntimeError):
    """Raised the way torch >= 2.8 raises a device-side assert."""

    def __init__(self) -> None:
        super().__init__("CUDA error: device-side assert triggered")
        self.error_code = 710


def numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("status_dir")
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--max-busy", type=float, default=0.5)
    parser.add_argument("--not-loaded", action="store_true")
    parser.add_argument("--load-failed", action="store_true")
    parser.add_argument("--sticky", action="store_true")
    parser.add_argument("--stuck", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-xid", action="store_true")
    parser.add_argument("--xid-ignore", type=numbers, default=())
    parser.add_argument("--xid-fatal", type=numbers, default=())
    args = parser.parse_args()

    monitor = Monitor(["ok"], interval=args.interval, max_busy=args.max_busy,
                      status_dir=args.status_dir, device=args.device, xid=not args.no_xid,
                      xid_ignore=args.xid_ignore, xid_fatal=args.xid_fatal).start()  # fmt: skip
    monitor.loading()
    if args.load_failed:
        monitor.load_failed(OSError("model.pt: invalid load key"))
    elif not args.not_loaded:
        monitor.loaded()
    if args.sticky:
        try:
            with monitor.guard():
                raise AcceleratorError()
        except AcceleratorError:
            pass  # the app logs it and carries on, as apps do
    if args.stuck:
        lock = threading.Lock()
        lock.acquire()

        def handler() -> None:
            with monitor.guard(), lock:
                pass

        threading.Thread(target=handler, daemon=True).start()
    print("serving", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
