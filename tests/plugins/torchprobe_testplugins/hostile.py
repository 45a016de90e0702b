"""Plugins whose results are hostile to strict output: non-finite numbers,
repeated targets, and a secret found only at run time."""

from __future__ import annotations

import math

from torchprobe.base import Check, Option, Outcome, passed
from torchprobe.options import boolean


class NonFinite(Check):
    description = "passes with NaN and infinite details; twin=true: two lines with one target"
    options = (Option("twin", boolean, default=False, help="return two outcomes, one target"),)
    timeout = 3.0

    twin: bool

    def run(self) -> list[Outcome]:
        details = {"ratio": math.nan, "limit": math.inf, "floor": [-math.inf, 1.5]}
        lines = [passed("readings taken", target="gpu", **details)]
        if self.twin:
            lines.append(passed("readings taken again", target="gpu", **details))
        return lines


def readsecret(path: str) -> None:
    """Reads a token from path (in its worker process), registers it as a
    secret, then says it in its failure, as careless code does."""
    from torchprobe.common.scrub import register

    with open(path, encoding="utf-8") as fp:
        token = fp.read().strip()
    register(token)
    raise RuntimeError(f"the server refused token {token}")
