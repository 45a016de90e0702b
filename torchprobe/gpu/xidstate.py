"""What the monitor keeps of the Xid watch: counts since it started, the
critical events that make the process not live, and the watch's state, as
the ``xid`` field of the status document (docs/monitor-contract.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from torchprobe.gpu.xid import DRAIN, RESET, Policy, Rule, describe, rule
from torchprobe.gpu.xidwatch import GpuEvent

__all__ = ["XidState", "event_label"]

#: The latest events the document lists (the counts have them all).
KEEP = 20


def event_label(event: GpuEvent) -> str:
    """The ``xid`` label of the metric: the number, or the ECC/lost kind."""
    return str(event.xid) if event.kind == "xid" else event.kind


def _judge(policy: Policy, event: GpuEvent) -> tuple[str, Rule, bool]:
    if event.kind == "xid" and event.xid is not None:
        entry, critical = policy.judge(event.xid)
        return describe(event.xid), entry, critical
    if event.kind == "double_bit_ecc":  # the catalog: Xid 48, its kernel-log twin
        return "double-bit ECC error", Rule(48, "Double Bit ECC Error", RESET), True
    if event.kind == "single_bit_ecc":  # corrected by the hardware
        return "single-bit ECC error", rule(92), False
    return "GPU lost (NVML_ERROR_GPU_IS_LOST)", Rule(79, "GPU has fallen off the bus", DRAIN), True


class XidState:
    def __init__(self, ignore: Iterable[int], fatal: Iterable[int]) -> None:
        self.policy = Policy(ignore, fatal)
        self._lock = threading.Lock()
        self.state = "off"
        self.note: str | None = None
        self.gpus: list[str] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.events: list[dict[str, Any]] = []
        #: (uuid, label) -> the not-live reason; in order of first sight.
        self.critical: dict[tuple[str, str], str] = {}

    def on_state(self, state: str, note: str | None) -> None:
        self.state, self.note = state, note

    def on_event(self, event: GpuEvent) -> str | None:
        """Record it; the not-live reason when it makes the process not live."""
        what, entry, critical = _judge(self.policy, event)
        label = event_label(event)
        clock = time.strftime("%H:%M:%S", time.gmtime(event.at))
        with self._lock:
            key = (event.uuid, label)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.events = [*self.events, {"gpu": event.uuid, "kind": event.kind, "xid": event.xid,
                           "name": entry.name, "class": entry.kind, "action": entry.action,
                           "critical": critical, "at": event.at}][-KEEP:]  # fmt: skip
            if critical:
                times = self.counts[key]
                again = f" ({times} times, last)" if times > 1 else ""
                self.critical[key] = (f"{what} on {event.uuid}{again} at {clock} UTC: "
                                      f"{entry.action}")  # fmt: skip
                return self.critical[key]
        return None

    def reasons(self) -> list[str]:
        return list(self.critical.values())

    def document(self) -> dict[str, Any]:
        with self._lock:
            counts = [{"gpu": g, "xid": x, "count": n} for (g, x), n in self.counts.items()]
            return {"state": self.state, "note": self.note, "gpus": list(self.gpus),
                    "counts": counts, "events": list(self.events)}  # fmt: skip
