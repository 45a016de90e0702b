"""The sidecar's Xid watch: NVML's critical GPU events, in a process of its own.

An NVML call can hang (a GPU that fell off the bus, a wedged driver), and a
hang in the sidecar's own process would hold its HTTP thread too: the native
call keeps the GIL. So the watch (:class:`torchprobe.gpu.xidwatch.XidWatch`)
runs in a child, ``python -m torchprobe.serve.xid``, that writes one JSON
line per happening to its stdout:

- ``{"state": "watching", "note": null, "gpus": ["GPU-..."]}`` — and
  ``"unsupported"`` or ``"failed"`` with the reason, after which it ends;
- ``{"event": {"gpu": "GPU-...", "kind": "xid", "xid": 79, "at": 1764650000.0}}``;
- ``{"alive": 1764650000.0}`` every ``--beat`` seconds while its wait loop
  turns, so that a wait stuck in NVML shows as ``stalled`` here.

The parent (:class:`XidHost`, a reader thread in the sidecar) judges each
event with the monitor's policy (:class:`torchprobe.gpu.xidstate.XidState`:
the same table, ``--xid-ignore``/``--xid-fatal``), keeps the counts since the
sidecar started (a child that ends is started again after a pause; the counts
stay), and answers the sidecar's endpoints from them. The child reads its
stdin and ends at its EOF: when the sidecar ends, however it ends, so does it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from torchprobe.gpu.xidstate import XidState
from torchprobe.gpu.xidwatch import GpuEvent

__all__ = ["XidHost", "main"]

#: The longest line the parent reads from the child (a line is about 120 bytes).
MAX_LINE = 64 * 1024
#: The watch's states after which the child ends by design (no restart).
FINAL = ("unsupported",)


class XidHost:
    """The watch process and what it has told: see the module."""

    def __init__(self, targets: Sequence[str], ignore: Sequence[int], fatal: Sequence[int],
                 interval: float, log: Callable[[str], None]) -> None:  # fmt: skip
        self.targets = list(targets)
        self.xid = XidState(ignore, fatal)  # a bad number raises ValueError here
        self.xid.gpus = list(self.targets)
        #: Heartbeat period of the child; "stalled" after 3 beats without a line.
        self.beat = max(0.5, min(5.0, interval))
        #: Pause before a child that ended unexpectedly is started again.
        self.restart_after = max(1.0, min(30.0, 3 * interval))
        self.log = log
        self.heard = time.monotonic()
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xid-host", daemon=True)

    # -- what the endpoints read ----------------------------------------------------
    def reasons(self) -> list[str]:
        """The critical events, each a not-live reason (empty: none)."""
        return self.xid.reasons()

    def state(self) -> str:
        """The watch's state; ``stalled`` when a watching child went quiet."""
        state = self.xid.state
        if state == "watching" and time.monotonic() - self.heard > 3 * self.beat + 1.0:
            return "stalled"
        return state

    def document(self) -> dict[str, Any]:
        doc = self.xid.document()
        doc["state"] = self.state()
        if doc["state"] == "stalled":
            doc["note"] = (f"no word from the NVML wait for {time.monotonic() - self.heard:.0f}s:"
                           " an NVML call hangs (the nvml check says more)")  # fmt: skip
        return doc

    def counts(self) -> list[tuple[str, str, int]]:
        """(gpu, xid label, count) of every event kind seen since the start."""
        counts = self.xid.document()["counts"]
        return [(str(c["gpu"]), str(c["xid"]), int(c["count"])) for c in counts]

    # -- the child ------------------------------------------------------------------
    def start(self) -> None:
        self.xid.on_state("starting", None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "torchprobe.serve.xid", "--beat", f"{self.beat:g}",
                *self.targets]  # fmt: skip
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True)  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.proc = proc = self._spawn()
            except OSError as exc:
                self._set("failed", f"the watch process did not start: {exc}")
                return
            self.starts += 1
            self.heard = time.monotonic()
            assert proc.stdout is not None
            self._read(proc.stdout)
            rc = proc.wait()
            if self._stop.is_set() or self.xid.state in FINAL:
                return
            if self.xid.state != "failed":
                self._set("failed", f"the watch process ended (exit {rc})")
            if self._stop.wait(self.restart_after):
                return
            self.xid.on_state("starting", None)

    def _read(self, out: IO[bytes]) -> None:
        while True:
            line = out.readline(MAX_LINE)
            if not line:
                return
            self.heard = time.monotonic()
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not the child's: it writes whole JSON lines only
            if isinstance(message, dict):
                self._message(message)

    def _message(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if isinstance(event, dict):
            try:
                parsed = GpuEvent(str(event["gpu"]), str(event["kind"]),
                                  None if event.get("xid") is None else int(event["xid"]),
                                  float(event["at"]))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                return
            reason = self.xid.on_event(parsed)
            if reason is not None:
                self.log(f"torchprobe serve: {reason}: /live and /ready fail from now on")
            return
        state = message.get("state")
        if isinstance(state, str):
            gpus = message.get("gpus")
            if isinstance(gpus, list):
                self.xid.gpus = [str(g) for g in gpus]
            note = message.get("note")
            self._set(state, note if isinstance(note, str) else None)

    def _set(self, state: str, note: str | None) -> None:
        if note and state != "watching":
            self.log(f"torchprobe serve: Xid events are not watched: {note}")
        self.xid.on_state(state, note)


# -- the child: python -m torchprobe.serve.xid [--beat S] [GPU...] ---------------------


def main(argv: list[str]) -> int:
    from torchprobe.gpu.xidwatch import XidWatch

    beat = 5.0
    if argv[:1] == ["--beat"]:
        beat, argv = float(argv[1]), argv[2:]
    lock = threading.Lock()

    def say(message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        with lock:
            try:
                os.write(1, data)
            except OSError:
                os._exit(0)  # the sidecar is gone

    last = [time.monotonic()]

    def on_wait() -> None:
        now = time.monotonic()
        if now - last[0] >= beat:
            last[0] = now
            say({"alive": time.time()})

    def on_event(event: GpuEvent) -> None:
        say({"event": {"gpu": event.uuid, "kind": event.kind, "xid": event.xid, "at": event.at}})

    watch: XidWatch

    def on_state(state: str, note: str | None) -> None:
        say({"state": state, "note": note, "gpus": list(watch.watched)})

    def orphaned() -> None:
        # The sidecar holds our stdin: its EOF means the sidecar ended.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=orphaned, name="stdin", daemon=True).start()
    watch = XidWatch(argv or None, on_event, on_state, wait_ms=500, on_wait=on_wait)
    watch.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
