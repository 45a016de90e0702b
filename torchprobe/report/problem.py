"""What the hints produce, and the words they share."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["HOST_LOGS", "NOT_SUPPORTED", "Problem"]

#: A reading the GPU or driver does not have: shown as such, never a failure.
NOT_SUPPORTED = "not supported"
#: Where the host keeps a GPU's story: hints send users there.
HOST_LOGS = "`nvidia-smi` and `dmesg | grep -i xid` on the host"


class Problem(NamedTuple):
    """One failure the report found: what is wrong, and what to do about it."""

    what: str
    hint: str
