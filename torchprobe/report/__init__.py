"""``torchprobe --report``: what someone runs when the probe fails and they want to know why.

It reads everything that decides whether torch can use the GPUs — torchprobe
and Python, the container, the environment, the device nodes, the driver's
libraries, torch's build and CUDA runtime, NVML's view of the driver and of
every GPU, and the processes holding GPU memory — and ends with the problems
it found, each with a hint a user can act on. The readings that can hang run
in killable workers through the engine (:mod:`.gather`); the hints are pure
functions (:mod:`.hints`); rendering is :mod:`.render`.

Importing this package is cheap: the workers import its modules too, and the
CLI imports it only for ``--report``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TextIO

from torchprobe.base import UsageError
from torchprobe.renderers import require_format

__all__ = ["run_report"]

#: Time kept back from the deadline to kill workers and write the report (and
#: for the command's own start-up, which ran before this clock started).
RENDER_MARGIN = 0.3


def run_report(fmt: str, timeout: float, verbose: bool, fp: TextIO) -> int:
    """Gather, render to ``fp`` in ``fmt`` (``text`` or ``json``) within
    ``timeout`` seconds; 0 when the report was produced, whatever it found,
    1 when it could not be."""
    started = time.monotonic()
    require_format(fmt, "--report")
    if timeout <= 0:
        raise UsageError("--timeout must be greater than zero")
    from torchprobe.report.findings import problems
    from torchprobe.report.gather import gather
    from torchprobe.report.render import render_report_json, render_report_text

    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    margin = min(RENDER_MARGIN, timeout / 10)
    sections = gather(timeout, started + timeout - margin, verbose)
    try:
        found = problems(sections)
    except Exception as exc:  # noqa: BLE001 - the readings are worth printing without hints
        from torchprobe.common.errors import describe_exception
        from torchprobe.gpu.hints import Problem

        what = f"the report could not work out its hints ({describe_exception(exc)})"
        found = [Problem(what, "the readings above are complete; please report this as a bug")]
    document = {
        "generated": generated,
        "duration": round(time.monotonic() - started, 3),
        "timeout": timeout,
        "sections": sections,
    }
    try:
        if fmt == "json":
            render_report_json(document, found, fp)
        else:
            render_report_text(document, found, fp)
        fp.flush()
    except BrokenPipeError:
        raise  # the CLI's own handling: the reader went away (`| head`)
    except OSError:
        return 1
    return 0
