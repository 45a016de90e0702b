"""The ``torchprobe`` command: parse, plan, run, render, reduce to 0 or 1.

Exit status is 0 when no check failed and at least one passed, 1 for
everything else — unhealthy, usage errors, internal errors, interruption.
Never 2: Docker reserves it, and click would use it for usage errors.
"""

from __future__ import annotations

import time

_STARTED = time.monotonic()

import os  # noqa: E402 - the run's clock starts before anything else is imported
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import click  # noqa: E402

from . import __version__  # noqa: E402
from .base import Interrupted, UsageError  # noqa: E402
from .options import duration  # noqa: E402

FORMATS = ("text", "json", "prometheus")
#: Time kept back from the run's deadline to kill workers and print the report.
DEADLINE_MARGIN = 0.05

_verbose = False


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


EPILOG = """\b
CHECK is NAME[:KEY=VALUE[,KEY=VALUE...]], e.g.
  torchprobe nvml:max-memory=95 tensor:device=cuda:0
  torchprobe http:url=http://127.0.0.1:8080/ping,timeout=2
With no CHECK: $TORCHPROBE_CHECKS, else the default set "cuda tensor nvml".
Durations: 2, 2.5, 500ms, 2s, 1m. ${NAME} in a value reads the environment.
\b
Exit status: 0 healthy (nothing failed, something passed); 1 anything else.
"""


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.argument("checks", nargs=-1, metavar="[CHECK[:KEY=VALUE,...]]...")
@click.option(
    "--timeout",
    type=Duration(),
    default="10",
    show_default=True,
    envvar="TORCHPROBE_TIMEOUT",
    show_envvar=True,
    help="Deadline of the whole run, imports included.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    envvar="TORCHPROBE_FORMAT",
    show_envvar=True,
    help="Output format.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    envvar="TORCHPROBE_QUIET",
    show_envvar=True,
    help="Print only failures and the summary.",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar="TORCHPROBE_VERBOSE",
    show_envvar=True,
    help="Print details, and a failing check's traceback.",
)
@click.option(
    "--list", "list_", is_flag=True, help="List every registered check with its options, and exit."
)
@click.version_option(
    __version__, "--version", prog_name="torchprobe", message="%(prog)s %(version)s"
)
def command(checks: tuple[str, ...], timeout: float, fmt: str, quiet: bool, verbose: bool,
            list_: bool) -> int:  # fmt: skip
    """Health probe for PyTorch inference services: runs each CHECK under its own
    timeout, prints a short report, and exits 0 (healthy) or 1 (unhealthy)."""
    global _verbose
    _verbose = verbose
    if list_:
        from .listing import entries, render_list

        render_list(entries(), sys.stdout, fmt)
        return 0
    if timeout <= 0:
        raise UsageError("--timeout must be greater than zero")

    from . import engine
    from .renderers import render
    from .results import Report

    planned = engine.plan(_tokens(checks), os.environ)
    deadline = _STARTED + timeout - DEADLINE_MARGIN
    results = engine.run(planned, deadline, timeout)
    report = Report(results, time.monotonic() - _STARTED, __version__)
    render(report, sys.stdout, fmt, quiet=quiet, verbose=verbose)
    sys.stdout.flush()
    return report.exit_code


def _tokens(checks: tuple[str, ...]) -> list[str]:
    if checks:
        return list(checks)
    from .registry import DEFAULT_SET

    configured = os.environ.get("TORCHPROBE_CHECKS", "")
    if configured.strip():
        import shlex

        try:
            return shlex.split(configured)
        except ValueError as exc:
            raise UsageError(f"TORCHPROBE_CHECKS: {exc}") from None
    return list(DEFAULT_SET)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM and SIGINT end the run: the engine kills its workers on the way
    out, and main() reports it in one line with exit status 1."""
    raise Interrupted(signal.Signals(signum).name)


def _fail(message: str) -> NoReturn:
    click.echo(f"torchprobe: {message}", err=True)
    sys.exit(1)


def main(argv: list[str] | None = None) -> NoReturn:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        code = command.main(args=argv, prog_name="torchprobe", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = 0 if exc.exit_code == 0 else 1
    except click.ClickException as exc:
        _fail(f"error: {' '.join(exc.format_message().split())}")
    except (click.exceptions.Abort, EOFError):
        _fail("aborted")
    except UsageError as exc:
        _fail(f"error: {exc}")
    except Interrupted as exc:
        _fail(f"interrupted by {exc}: checks stopped, workers ended")
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing more can be said.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback without -v
        if _verbose:
            import traceback

            traceback.print_exc()
        from .runner import describe_exception

        _fail(f"internal error: {describe_exception(exc)}")
    sys.exit(code if isinstance(code, int) and code in (0, 1) else 1)


if __name__ == "__main__":
    main()
