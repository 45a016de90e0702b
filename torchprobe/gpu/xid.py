"""The Xid policy: what each critical GPU event means for a serving process.

The NVIDIA driver reports a GPU fault as an Xid number (in the kernel log,
and to an NVML event set as ``nvmlEventTypeXidCriticalError``). Whether the
server should be restarted, the GPU reset or the node drained depends on the
number. Four published lists say, and they disagree; each entry below names
its source:

- NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors): the names, and
  the "resolution bucket" (RESTART_APP, RESET_GPU, ...).
- NVIDIA's k8s-device-plugin (internal/rm/health.go): skips 13, 31, 43, 45,
  68 and 109 as application errors and marks the device unhealthy for any
  other critical Xid.
- GPUd's catalog (components/accelerator/nvidia/xid/xid.go): fatal/reboot,
  fatal or inspect, inspect, and "check the app" warnings; most others
  informational.
- AWS eks-node-monitoring-agent (monitors/nvidia/dcgm/dcgm_policies.go): its
  list of fatal Xids, each with the catalog's resolution bucket.

Where they disagree this module chooses, and says why at the entry. A Xid
that only the device plugin's "any other" rule calls critical is
informational: it is counted and shown, never fatal, since a restart cannot
help what no list names as a fault (``xid_fatal=`` makes any
Xid fatal, ``xid_ignore=`` any Xid harmless).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["APPLICATION", "DRAIN", "INFO", "RESET", "Policy", "Rule", "rule"]

#: The fault is the application's (a bad kernel, an illegal address): restart
#: the process if it cannot recover; the GPU is fine.
APPLICATION = "application error"
#: The GPU needs a reset (or the node a reboot) before it is trusted again.
RESET = "needs GPU reset"
#: The GPU (or its link) is broken: take the node out of service.
DRAIN = "needs node drain"
#: Nothing to do; counted for the record.
INFO = "informational"

_ACTIONS = {
    APPLICATION: "check the application (restart it if it does not recover)",
    RESET: "reset the GPU (nvidia-smi -r) or reboot the node",
    DRAIN: "drain the node",
    INFO: "no action needed",
}


@dataclass(frozen=True)
class Rule:
    xid: int
    name: str
    kind: str

    @property
    def action(self) -> str:
        return _ACTIONS[self.kind]

    @property
    def critical(self) -> bool:
        return self.kind in (RESET, DRAIN)


# Names: NVIDIA's Xid catalog. A number whose name is not given there for
# current GPUs has the empty name, and is shown by number alone.
_NAMES = {
    13: "Graphics Engine Exception", 31: "GPU memory page fault",
    32: "Invalid or corrupted push buffer stream", 38: "Driver firmware error",
    43: "GPU stopped processing", 45: "Preemptive cleanup, due to previous errors",
    48: "Double Bit ECC Error", 61: "Internal micro-controller breakpoint/warning",
    62: "Internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    68: "NVDEC0 Exception", 69: "Graphics Engine class error", 74: "NVLINK Error",
    79: "GPU has fallen off the bus", 92: "High single-bit ECC error rate",
    94: "Contained ECC error", 95: "Uncontained ECC error",
    109: "Context Switch Timeout Error", 119: "GSP RPC Timeout", 120: "GSP Error",
    140: "Unrecovered ECC Error", 143: "GPU Initialization Failure",
    54: "Auxiliary power is not connected to the GPU board", 151: "Key rotation Error",
    155: "NVLINK: SW Defined Error", 156: "Resource Retirement Event", 158: "GPU Fatal Timeout",
}  # fmt: skip
# 136 and 142 have no name here: GPUd's copy of the catalog calls them
# "Reserved" and "Unrecovered ECC Error", AWS's "Link training failed" and
# "NVENC3 error".

_KINDS: dict[int, str] = {}


def _set(kind: str, *xids: int | range) -> None:
    for x in xids:
        for n in [x] if isinstance(x, int) else x:
            _KINDS[n] = kind


# GPUd "fatal, reboot": codes of older GPUs, all faults of the GPU itself.
_set(RESET, 9, 12, 16, 18, 19, range(26, 31), range(33, 37), 42, 46, 47, range(59, 62), 78)
# GPUd "fatal/reboot or inspect"; the catalog's bucket RESET_GPU for 48, 62,
# 63 (a row remap waits for a reset to apply), 95 (uncontained: other
# processes on the GPU may have read the bad data), 121 and 123.
_set(RESET, 32, 38, 44, 48, range(62, 64), 65, 69, 95, 121, 123)
# GPUd "inspect" for 81 and "fatal/reboot or inspect" for the rest; these
# say the GPU or its link is broken, not just wedged: 64 (out of spare rows),
# 74 (NVLink), 79 (off the bus), 110, 119/120 (its GSP firmware stopped
# answering), 140 (unrecovered ECC), 143 (failed to initialise; GPUd
# "inspect", AWS fatal: fatal here).
_set(RESET, 81)
_set(DRAIN, 64, 74, 79, 110, 119, 120, 140, 143)
# AWS's fatal list beyond the above, by the catalog bucket AWS gives each:
# RESET_GPU for 136, 155, 156 and 158; CHECK_MECHANICALS (auxiliary power not
# connected) for 54, CONTACT_SUPPORT for 142 and RESTART_VM for 151: nothing
# on the node fixes those. GPUd disagrees: it lists all seven as warnings,
# suggesting a reboot for 151, 155, 156 and 158; fatal here, as AWS says,
# since each names a fault of the GPU, not of the application.
_set(RESET, 136, 155, 156, 158)
_set(DRAIN, 54, 142, 151)
# The device plugin's application errors (13, 31, 43, 45, 68, 109) and
# GPUd's "check the app" warnings (13, 31, 43, 137, 170); the catalog's
# bucket RESTART_APP for 94 (contained: only the process that touched the
# bad memory is hit). The sources disagree on three:
# - 94 (a contained ECC error): GPUd calls it fatal and suggests a reboot.
#   Application here, as the catalog says: the process that read the bad
#   memory fails on its own, and the others on the GPU are unharmed.
# - 68 (a video decoder exception): the device plugin skips it, GPUd says
#   fatal or inspect. Application here: an inference server that decodes no
#   video never causes it, and one that does sees the failure itself.
# - 109 (context switch timeout): the device plugin skips it, GPUd warns, AWS
#   calls it fatal. Application here: it follows a kernel that does not yield,
#   which the monitor's max_busy already reports as a stuck request.
_set(APPLICATION, 13, 31, 43, 45, 68, 94, 109, 137, 170)
# The catalog: the hardware corrected it; a high rate is worth a look, not a restart.
_set(INFO, 92)
# GPUd suggests a reboot for 144-150 (NVLink), 163, 166, 167, 169, 172 and
# 173 but marks each a warning, not critical, and no other list has them:
# informational here (xid_fatal= makes them fatal).


def rule(xid: int) -> Rule:
    """The policy's entry for ``xid`` (informational when no list calls it a fault)."""
    return Rule(xid, _NAMES.get(xid, ""), _KINDS.get(xid, INFO))


class Policy:
    """The table, with a deployment's own ``ignore`` and ``fatal`` sets
    (``ignore`` wins where a number is in both)."""

    def __init__(self, ignore: Iterable[int] = (), fatal: Iterable[int] = ()) -> None:
        self.ignore = frozenset(_xid(x) for x in ignore)
        self.fatal = frozenset(_xid(x) for x in fatal)

    def judge(self, xid: int) -> tuple[Rule, bool]:
        """The entry and whether it makes the process not live."""
        entry = rule(xid)
        if xid in self.ignore:
            return entry, False
        return entry, entry.critical or xid in self.fatal


def _xid(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"an Xid is a non-negative whole number, not {value!r}")
    return value


def describe(xid: int) -> str:
    """``"Xid 79 (GPU has fallen off the bus)"``."""
    name = rule(xid).name
    return f"Xid {xid} ({name})" if name else f"Xid {xid}"
