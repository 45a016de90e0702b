"""Renderers: a :class:`~torchprobe.results.Report` in, text out, to a file object.

Pure functions of the report and the output settings; nothing here runs a
check or decides the exit code.
"""

from __future__ import annotations

from typing import TextIO

from torchprobe.results import Report

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "json", "prometheus")


def render(report: Report, fp: TextIO, fmt: str = "text", *, quiet: bool = False,
           verbose: bool = False) -> None:  # fmt: skip
    if fmt == "json":
        from torchprobe.renderers.jsondoc import render_json

        render_json(report, fp, verbose=verbose)
    elif fmt == "prometheus":
        from torchprobe.renderers.prometheus import render_prometheus

        render_prometheus(report, fp)
    else:
        from torchprobe.renderers.text import render_text

        render_text(report, fp, quiet=quiet, verbose=verbose)
