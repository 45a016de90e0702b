"""One invocation of the command, between parsing and rendering: where the
checks come from, and the rounds that run them (one, or several with --wait).

Where the checks come from is one source, never a merge: the CHECK
arguments, else the profile (``--profile`` / ``$TORCHPROBE_PROFILE``), else
``$TORCHPROBE_CHECKS``, else the default set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, TextIO

from torchprobe import __version__
from torchprobe.base import UsageError
from torchprobe.common.deadline import Deadline
from torchprobe.results import Report

__all__ = ["Source", "choose_checks", "dry_run", "run_rounds"]

#: --wait's interval grows by this factor each round, up to this many times the first.
BACKOFF, BACKOFF_CAP = 1.5, 5.0
#: The least time worth starting a last --wait round with.
LAST_ROUND = 0.25


class Source:
    """The checks of this invocation, where they came from, and a profile's settings."""

    __slots__ = ("tokens", "origin", "timeout", "format", "profile")

    def __init__(self, tokens: list[str], origin: str, timeout: float | None = None,
                 fmt: str | None = None, profile: str | None = None) -> None:  # fmt: skip
        self.tokens = tokens
        self.origin = origin
        self.timeout = timeout
        self.format = fmt
        self.profile = profile  # the profile the checks come from, resolved and validated


def choose_checks(arguments: tuple[str, ...], profile: str | None, profile_from_flag: bool,
                  config: str | None, environ: Mapping[str, str]) -> Source:  # fmt: skip
    if arguments and profile and profile_from_flag:
        raise UsageError("CHECK arguments and --profile are two sources of checks: give one")
    if arguments:
        return Source(list(arguments), "the command line")
    if profile:
        from torchprobe.cli.config import find_config, load_profile

        chosen = load_profile(profile, find_config(config, environ))
        return Source(chosen.checks, f"profile {profile!r} ({chosen.source})", chosen.timeout,
                      chosen.format, profile)  # fmt: skip
    configured = environ.get("TORCHPROBE_CHECKS", "")
    if configured.strip():
        try:
            import shlex  # only here: 0.35 ms of every start-up otherwise

            return Source(shlex.split(configured), "TORCHPROBE_CHECKS")
        except ValueError as exc:
            raise UsageError(f"TORCHPROBE_CHECKS: {exc}") from None
    from torchprobe.engine.registry import DEFAULT_SET

    return Source(list(DEFAULT_SET), "the default set")


def run_rounds(tokens: list[str], timeout: float, started: float, wait: float | None,
               interval: float, liveness_only: bool = False) -> Report:  # fmt: skip
    """Run the checks once, or with ``wait`` until a round passes or the time is
    spent. Each round has its own deadline; the whole wait never overruns.
    ``liveness_only``: a plugin that declares readiness is a usage error."""
    from torchprobe.engine import loop as engine

    # A usage error stops at once, before any round. Each later round gets
    # fresh instances; the first uses these (planning 5000 checks takes 0.3 s).
    planned = engine.plan(tokens, os.environ)
    end = started + wait if wait else None
    rounds = 0
    pause = interval
    while True:
        rounds += 1
        round_start = time.monotonic() if rounds > 1 else started
        # Its own --timeout, or what is left of --wait when that ends first.
        deadline = Deadline.for_round(round_start, timeout, len(planned), end, wait)
        if rounds > 1:
            planned = engine.plan(tokens, os.environ)
        results = engine.run(planned, deadline, liveness_only=liveness_only)
        report = Report(results, time.monotonic() - started, __version__, rounds)
        report.undeclared = [p.occurrence.label for p in planned
                             if p.plugin and p.readiness is None]  # fmt: skip
        if end is None or report.healthy:
            return report
        left = end - time.monotonic()
        if left < LAST_ROUND:  # no time for another round worth running
            return report
        time.sleep(min(pause, left - LAST_ROUND))
        pause = min(pause * BACKOFF, interval * BACKOFF_CAP)


def dry_run(source: Source, timeout: float, fmt: str, config: str | None,
            environ: Mapping[str, str], fp: TextIO) -> None:  # fmt: skip
    """Print the resolved checks and options (secrets redacted); run nothing."""
    from torchprobe.cli.config import find_config, validate_config
    from torchprobe.engine.plan import plan

    path = find_config(config, environ)
    if path is not None and source.profile is None:
        # Checks from elsewhere: the file is shown linted whole. From a profile,
        # choose_checks validated what the run uses and nothing the run ignores.
        validate_config(path)
    planned = plan(source.tokens, environ)
    checks: list[dict[str, Any]] = [
        {"check": p.occurrence.check, "name": p.occurrence.label, "options": p.occurrence.shown,
         "timeout": p.timeout,
         "runs_in": f"worker process ({p.worker})" if p.worker else "torchprobe process",
         "probes": _probes(p.readiness)}
        for p in planned
    ]  # fmt: skip
    if fmt == "json":
        from torchprobe.common.jsonout import dumps

        document = {"source": source.origin, "config": path, "timeout": timeout, "format": fmt,
                    "checks": checks}  # fmt: skip
        fp.write(dumps(document, indent=2) + "\n")
        return
    lines = [f"checks from {source.origin}; run timeout {timeout:g}s; format {fmt}",
             f"config file: {path or 'none found'}"]  # fmt: skip
    for c in checks:
        options = ",".join(f"{k}={v}" for k, v in c["options"].items()) or "(defaults)"
        lines.append(f"  {c['name']}: {c['check']} {options}; timeout {c['timeout']:g}s; "
                     f"runs in the {c['runs_in']}; {c['probes'] or _UNDECLARED}")  # fmt: skip
    fp.write("\n".join(lines) + "\n")


#: A plugin's declaration, which only its worker can ask: a dry run imports no plugin.
_UNDECLARED = "readiness or liveness: declared by the plugin when it loads"


def _probes(readiness: bool | None) -> str | None:
    """What a check judges, for --dry-run: readiness, liveness, or None (a plugin)."""
    return None if readiness is None else "readiness" if readiness else "liveness"
