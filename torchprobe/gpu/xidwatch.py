"""The Xid watch: critical GPU events as NVML delivers them, in a thread.

NVML tells a process that holds an event set about each critical Xid
(``nvmlEventTypeXidCriticalError``) and, where the GPU supports them, each
double- and single-bit ECC error, as they happen. Only a long-lived process
can hold one: the in-process monitor does, inside the container and without
privileges (the kernel log, where Xids are also written, needs root).

The watch knows nothing of the monitor: :meth:`XidWatch.run` blocks in the
thread that calls it (the monitor gives it a daemon thread of its own) and
calls ``on_event`` with each :class:`GpuEvent` and ``on_state`` when its state
changes, so any long-running process (a sidecar, in a worker process of its
own) can host it. The wait is ``nvmlEventSetWait_v2`` with a short timeout,
through ctypes, which releases the GIL for the call: a request never waits
for it. NVML (:mod:`torchprobe.gpu.nvml`, and through it ``pynvml``) is
imported in the thread, never at import: importing the monitor, which imports
this module, loads nothing of NVML.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuEvent", "XidWatch", "watch_targets"]

#: How long one wait lasts (ms): how soon stop() is seen.
WAIT_MS = 500


@dataclass(frozen=True)
class GpuEvent:
    """One event: ``kind`` is "xid" (with ``xid``), "double_bit_ecc",
    "single_bit_ecc", or "gpu_lost" (the wait itself said the GPU is gone)."""

    uuid: str
    kind: str
    xid: int | None
    at: float


def watch_targets(device: str, environ: os._Environ[str] | dict[str, str]) -> list[str]:
    """The NVML target (a UUID, else an NVML index) of a torch device name.

    NVML ignores ``CUDA_VISIBLE_DEVICES`` and numbers GPUs in PCI order, so
    ``cuda:N`` is the N-th entry of that variable where it is set: a UUID
    there is exact; an index there is NVML's too when CUDA_DEVICE_ORDER is
    PCI_BUS_ID (CUDA's own default order, fastest first, matches it on a node
    of identical GPUs). Where torch has already initialised CUDA, its own
    UUID of the device is used instead, which is exact.
    """
    _, _, rest = device.partition(":")
    index = int(rest) if rest.isdigit() else 0
    uuid = _torch_uuid(index)
    if uuid:
        return [uuid]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(index)]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    return [entries[index]] if index < len(entries) else []


def _torch_uuid(index: int) -> str | None:
    import sys

    torch = sys.modules.get("torch")  # only a torch the app already loaded
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized():
            return None
        uuid = str(cuda.get_device_properties(index).uuid)
    except Exception:  # noqa: BLE001 - any failure: fall back to the variable
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


class XidWatch:
    """Watch ``targets`` (GPU-/MIG- UUIDs or NVML indexes; None: every GPU); see the module."""

    def __init__(
        self,
        targets: Sequence[str] | None,
        on_event: Callable[[GpuEvent], None],
        on_state: Callable[[str, str | None], None],
        wait_ms: int = WAIT_MS,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        #: None: every GPU this process's NVML shows (a sidecar's view); an
        #: empty list watches none.
        self.targets = None if targets is None else list(targets)
        self.on_event = on_event
        self.on_state = on_state
        self.wait_ms = wait_ms
        #: Called after each wait that timed out: the loop is alive.
        self.on_wait = on_wait
        self._stop = threading.Event()
        #: The UUIDs of the GPUs registered, once the watch is "watching".
        self.watched: list[str] = []

    def stop(self) -> None:
        """Ends the wait loop within one wait (``wait_ms``)."""
        self._stop.set()

    def run(self) -> None:
        """The watch, in the calling thread, until :meth:`stop`."""
        from torchprobe.gpu import nvml as api

        try:
            with api.session(api.binding()) as nvml:
                try:
                    self._watch(nvml)
                except nvml.NVMLError as exc:
                    self.on_state("failed", f"the event set failed: {_name(nvml, exc)}")
        except api.Unavailable as exc:
            if exc.code is None:
                self.on_state("unsupported", "nvidia-ml-py is not installed")
            else:
                self.on_state("unsupported", f"NVML did not start: {exc.name}")

    def _watch(self, nvml: Any) -> None:
        events = nvml.nvmlEventSetCreate()
        try:
            watched, skipped = self._register(nvml, events)
            if not watched:
                self.on_state("unsupported", "; ".join(skipped) or "no GPU to watch")
                return
            self.watched = watched
            self.on_state("watching", "; ".join(skipped) or None)
            self._loop(nvml, events, watched)
        finally:
            try:
                nvml.nvmlEventSetFree(events)
            except nvml.NVMLError:
                pass  # NVML frees it at shutdown anyway

    def _register(self, nvml: Any, events: Any) -> tuple[list[str], list[str]]:
        from torchprobe.gpu import nvml as api

        wanted = api.EVENT_XID | api.EVENT_DOUBLE_BIT_ECC | api.EVENT_SINGLE_BIT_ECC
        errors = {
            api.NOT_SUPPORTED: "event sets not supported (a MIG slice, or this GPU)",
            api.NO_PERMISSION: "no permission for event sets",
        }
        watched: list[str] = []
        skipped: list[str] = []
        targets = self.targets
        if targets is None:
            targets = [str(i) for i in range(int(nvml.nvmlDeviceGetCount()))]
        for target in targets:
            try:
                if target.isdigit():
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(target))
                else:
                    handle = nvml.nvmlDeviceGetHandleByUUID(target)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                supported = int(nvml.nvmlDeviceGetSupportedEventTypes(handle))
                if not supported & api.EVENT_XID:
                    skipped.append(f"{uuid}: no Xid events on this GPU")
                    continue
                nvml.nvmlDeviceRegisterEvents(handle, supported & wanted, events)
            except nvml.NVMLError as exc:
                why = errors.get(exc.value)
                skipped.append(f"{target}: {why or _name(nvml, exc)}")
                continue
            watched.append(uuid)
        return watched, skipped

    def _loop(self, nvml: Any, events: Any, watched: list[str]) -> None:
        from torchprobe.gpu import nvml as api

        kinds = {api.EVENT_XID: "xid", api.EVENT_DOUBLE_BIT_ECC: "double_bit_ecc",
                 api.EVENT_SINGLE_BIT_ECC: "single_bit_ecc"}  # fmt: skip
        while not self._stop.is_set():
            try:
                data = nvml.nvmlEventSetWait_v2(events, self.wait_ms)
            except nvml.NVMLError as exc:
                if exc.value == api.TIMEOUT:
                    if self.on_wait is not None:
                        self.on_wait()
                    continue
                if exc.value == api.GPU_IS_LOST:
                    where = watched[0] if len(watched) == 1 else " or ".join(watched)
                    self.on_event(GpuEvent(where, "gpu_lost", None, time.time()))
                    self.on_state("failed", "the GPU was lost during the wait")
                    return
                raise
            kind = kinds.get(int(data.eventType) & sum(kinds))
            if kind is None:
                continue
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(data.device))
            except nvml.NVMLError:
                uuid = watched[0] if len(watched) == 1 else "a watched GPU"
            xid = int(data.eventData) if kind == "xid" else None
            self.on_event(GpuEvent(uuid, kind, xid, time.time()))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _name(nvml: Any, exc: Any) -> str:
    from torchprobe.gpu.nvml import error_name

    return error_name(nvml, int(exc.value))
