"""Renderers: a :class:`~torchprobe.results.Report` in, text out, to a file object.

Pure functions of the report and the output settings; nothing here runs a
check or decides the exit code.

:data:`FORMATS` is the one list of output formats: ``--format`` offers it,
a profile's ``format`` is checked against it. A run's report is written in
any of them; the other outputs (``--list``, ``--dry-run``, ``--report``) are
no run's figures, so they have no Prometheus form and refuse it with one
usage error (:func:`require_format`) rather than print text instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from torchprobe.base import UsageError

if TYPE_CHECKING:
    from torchprobe.results import Report

__all__ = ["DOCUMENT_FORMATS", "FORMATS", "render", "require_format"]

FORMATS = ("text", "json", "prometheus")
#: The formats of the outputs that are not a run's report.
DOCUMENT_FORMATS = ("text", "json")


def require_format(fmt: str, flag: str, supported: tuple[str, ...] = DOCUMENT_FORMATS) -> None:
    """A usage error when ``flag``'s output has no ``fmt`` form."""
    if fmt not in supported:
        raise UsageError(f"{flag} supports --format {' or '.join(supported)}")


def render(report: Report, fp: TextIO, fmt: str = "text", *, quiet: bool = False,
           verbose: bool = False) -> None:  # fmt: skip
    if fmt == "json":
        from torchprobe.renderers.jsondoc import render_json

        render_json(report, fp, verbose=verbose)
    elif fmt == "prometheus":
        from torchprobe.renderers.prometheus import render_prometheus

        render_prometheus(report, fp)
    else:
        from torchprobe.renderers.text import render_run_text

        render_run_text(report, fp, quiet=quiet, verbose=verbose)
