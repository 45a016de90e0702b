"""The inference switches of the test apps: files a test creates in one directory.

Every app's inference handler calls :func:`hold` (or :func:`hold_async`)
before it computes, and :func:`soft_failed` to decide what to answer. The
directory is ``$CANARY_SWITCHES`` (unset: no switch, the app serves normally):

    wedge       while it exists, inference blocks: the process lives and its
                health endpoints answer, the request never does (what a hung
                kernel or a stuck collective does to a worker)
    slow        while it exists, each inference takes as many seconds as it
                holds ("1.5"): more requests than workers then queue (busy)
    soft-fail   while it exists, inference answers at once with empty results
                (a model that loaded wrong behind a server that says "ready")
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

__all__ = ["hold", "hold_async", "soft_failed"]

POLL = 0.05


def _switch(name: str) -> Path | None:
    folder = os.environ.get("CANARY_SWITCHES")
    return Path(folder) / name if folder else None


def _slow() -> float:
    path = _switch("slow")
    try:
        return float(path.read_text()) if path is not None else 0.0
    except (OSError, ValueError):
        return 0.0


def _wedged() -> bool:
    path = _switch("wedge")
    return path is not None and path.exists()


def hold() -> None:
    """In a worker thread or process: block while wedged, then take ``slow`` seconds."""
    while _wedged():
        time.sleep(POLL)
    time.sleep(_slow())


async def hold_async() -> None:
    """On an event loop: the same, without blocking the loop."""
    while _wedged():
        await asyncio.sleep(POLL)
    await asyncio.sleep(_slow())


def soft_failed() -> bool:
    path = _switch("soft-fail")
    return path is not None and path.exists()
