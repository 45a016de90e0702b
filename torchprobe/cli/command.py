"""The ``torchprobe`` command: parse, plan, run, render, reduce to 0 or 1.

Exit status is 0 when no check failed and at least one passed, 1 for
everything else — unhealthy, usage errors, internal errors, interruption.
Never 2: Docker reserves it, and click would use it for usage errors.
"""

from __future__ import annotations

import sys
import time

# The run's clock starts before anything else is imported: at the console
# script's first line where it ran, else here.
_STARTED = getattr(sys.modules.get("torchprobe._entry"), "STARTED", None) or time.monotonic()

import os  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, NoReturn, TypeVar  # noqa: E402

import click  # noqa: E402

from torchprobe import __version__  # noqa: E402
from torchprobe.base import Interrupted, UsageError  # noqa: E402
from torchprobe.options import duration  # noqa: E402
from torchprobe.renderers import FORMATS, require_format  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])
#: --report's own deadline unless --timeout is given.
REPORT_TIMEOUT = 30.0

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
  torchprobe triton:model=resnet50     (model servers: torchserve, triton,
    kserve, vllm, tgi, sglang, ray, bentoml, litserve, ollama; and grpc)
A comma starts an option only outside brackets and quotes and before
a KEY= of the check (a misspelt KEY is an error); \\, is a literal comma:
  torchprobe 'http:url=http://h/x?a=1\\,b=2,contains={"ok":1,"n":2}'
--list shows every check and its options.
With no CHECK: --profile, else $TORCHPROBE_CHECKS, else "cuda tensor nvml".
Durations: 2, 2.5, 500ms, 2s, 1m. ${NAME} in a value reads the environment.
torchprobe serve --help: the sidecar that answers /live and /ready.
\b
Exit status: 0 healthy (nothing failed, something passed); 1 anything else.
"""


def _option(*declarations: str, env: str, **settings: Any) -> Callable[[F], F]:
    """An option that can also come from ``TORCHPROBE_<env>``, shown in --help."""
    return click.option(*declarations, envvar=f"TORCHPROBE_{env}", show_envvar=True, **settings)


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap: all a fixed help table needs."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


class _Command(click.Command):
    """click's help formatter wraps every line with textwrap, which costs more
    than the rest of ``--help`` (a probe's start-up is paid millions of times);
    the options are a fixed table, so a plain word wrap lays it out."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = max(40, min(ctx.terminal_width or 80, ctx.max_content_width or 100) - 2)
        out = [f"Usage: {ctx.command_path} {' '.join(self.collect_usage_pieces(ctx))}", ""]
        out += ["  " + line for line in _wrap(self.help or "", width - 2)] + ["", "Options:"]
        options = [p for p in self.get_params(ctx) if isinstance(p, click.Option)]
        records = [r for r in (p.get_help_record(ctx) for p in options) if r]
        first = min(30, max(len(name) for name, _ in records) + 2)
        for name, text in records:
            body = _wrap(text, width - first - 2) or [""]
            if len(name) + 2 > first:
                out += [f"  {name}"] + [" " * (first + 2) + line for line in body]
            else:
                out.append(f"  {name:<{first}}{body[0]}")
                out += [" " * (first + 2) + line for line in body[1:]]
        # click's "\b" marks a block it must not rewrap; here it only separates them.
        epilog = (self.epilog or "").strip().splitlines()
        out += [""] + ["  " + line if line != "\b" else "" for line in epilog[1:]]
        formatter.write("\n".join(out).rstrip() + "\n")


@click.command(
    cls=_Command,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.argument("checks", nargs=-1, metavar="[CHECK[:KEY=VALUE,...]]...")
@_option(
    "--timeout",
    type=Duration(),
    default="10",
    show_default=True,
    help="Deadline of the whole run, imports included.",
    env="TIMEOUT",
)
@_option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format.",
    env="FORMAT",
)
@_option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only failures and the summary.",
    env="QUIET",
)
@_option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Print details, and a failing check's traceback.",
    env="VERBOSE",
)
@click.option(
    "--list", "list_", is_flag=True, help="List every registered check with its options, and exit."
)
@_option(
    "--profile",
    help="Run a named profile: built-in live, ready, startup, or one from the config file.",
    env="PROFILE",
)
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="The TOML file of profiles (else $TORCHPROBE_CONFIG, ./torchprobe.toml, "
    "/etc/torchprobe.toml); read only for --profile and --dry-run.",
)
@click.option("--dry-run", is_flag=True, help="Print the resolved checks and options; run nothing.")
@_option(
    "--wait",
    type=Duration(),
    help="Re-run the checks until they all pass or this much time is spent.",
    env="WAIT",
)
@_option(
    "--wait-interval",
    type=Duration(),
    default="1",
    show_default=True,
    help="Pause between --wait rounds (growing a little each round).",
    env="WAIT_INTERVAL",
)
@click.option(
    "--report",
    is_flag=True,
    help="Print a diagnostics report of this machine's GPUs, driver and torch, and exit 0.",
)
@_option(
    "--restart-after",
    type=click.IntRange(min=1),
    metavar="N",
    help="After N failed runs in a row, signal the container's main process (plain Docker); "
    "liveness checks only: one that checks readiness is refused.",
    env="RESTART_AFTER",
)
@_option(
    "--restart-signal",
    metavar="NAME",
    help="The signal --restart-after sends (default TERM).",
    env="RESTART_SIGNAL",
)
@_option(
    "--restart-pid",
    type=click.IntRange(min=1),
    metavar="PID",
    help="The process --restart-after signals (default: the container's PID 1).",
    env="RESTART_PID",
)
@_option(
    "--restart-force",
    is_flag=True,
    help="Allow --restart-after under Kubernetes, which restarts on its own liveness probe.",
    env="RESTART_FORCE",
)
@_option(
    "--log",
    "log_file",
    metavar="FILE",
    help="Append one JSON line per run to FILE (rotated at 1 MiB, 3 files kept).",
    env="LOG",
)
@_option(
    "--prometheus-textfile",
    metavar="FILE",
    help="Also write the Prometheus exposition to FILE, atomically.",
    env="PROMETHEUS_TEXTFILE",
)
@click.version_option(
    __version__, "--version", prog_name="torchprobe", message="%(prog)s %(version)s"
)
def command(
    checks: tuple[str, ...],
    timeout: float,
    fmt: str,
    quiet: bool,
    verbose: bool,
    list_: bool,
    profile: str | None,
    config: str | None,
    dry_run: bool,
    wait: float | None,
    wait_interval: float,
    report: bool,
    restart_after: int | None,
    restart_signal: str | None,
    restart_pid: int | None,
    restart_force: bool,
    log_file: str | None,
    prometheus_textfile: str | None,
) -> int:
    """Health probe for PyTorch inference services: runs each CHECK under its own
    timeout, prints a short report, and exits 0 (healthy) or 1 (unhealthy)."""
    global _verbose
    _verbose = verbose
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    if list_:
        require_format(fmt, "--list")
        from torchprobe.cli.listing import entries, render_list

        render_list(entries(), sys.stdout, fmt)
        return 0
    if report:
        from torchprobe.report import run_report

        code: int = run_report(
            fmt, timeout if given("timeout") else REPORT_TIMEOUT, verbose, sys.stdout
        )
        return code
    from torchprobe.cli.session import choose_checks, run_rounds
    from torchprobe.cli.session import dry_run as show_plan

    from_flag = ctx.get_parameter_source("profile") is click.core.ParameterSource.COMMANDLINE
    source = choose_checks(checks, profile, from_flag, config, os.environ)
    # One value each: flag > environment > profile > default.
    if source.timeout is not None and not given("timeout"):
        timeout = source.timeout
    if source.format is not None and not given("fmt"):
        fmt = source.format
    if dry_run:
        if given("fmt"):
            # Asked of the dry run itself. A profile's format is the run's, which
            # the dry run names in its first line whatever form that line takes.
            require_format(fmt, "--dry-run")
        show_plan(source, timeout, fmt, config, os.environ, sys.stdout)
        return 0
    policy = None
    if restart_after is not None:
        from torchprobe.cli.restart import RestartPolicy

        policy = RestartPolicy.from_options(restart_after, restart_signal, restart_pid,
                                            restart_force, os.environ)  # fmt: skip
        if policy is not None:
            from torchprobe.engine.plan import plan

            policy.refuse_readiness(plan(source.tokens, os.environ))

    from torchprobe.renderers import render

    result = run_rounds(source.tokens, timeout, _STARTED, wait, wait_interval,
                        liveness_only=policy is not None)  # fmt: skip
    lost = _write_report(lambda: render(result, sys.stdout, fmt, quiet=quiet, verbose=verbose))
    from torchprobe import _entry

    # The verdict is out: from here a signal ends the process with it.
    _entry.decide(1 if lost else result.exit_code)
    # The run's deadline bounds the files too: a lock another process holds
    # costs this run its line, never its deadline.
    until = _STARTED + (wait or timeout)
    if log_file:
        from torchprobe.cli.history import append_log

        append_log(log_file, result, _note, until)
    if prometheus_textfile:
        from torchprobe.cli.history import write_textfile

        write_textfile(prometheus_textfile, result, _note)
    if policy is not None and wait is None:
        policy.after_run(result.healthy, _make_note(log_file, until), result.undeclared, until)
    if lost:
        raise StdoutLost(f"cannot write the report to stdout: {lost}")
    return result.exit_code


class StdoutLost(Exception):
    """The report could not be written: its reader went away (``| head -c0``)."""


def _write_report(write: Callable[[], None]) -> str | None:
    """Write and flush the report; what went wrong with stdout, or None. The
    run goes on without it: --log and the textfile still get their lines."""
    try:
        write()
        sys.stdout.flush()
    except OSError as exc:
        # Whatever is still buffered goes nowhere, rather than failing again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return exc.strerror or str(exc)
    return None


def _note(message: str) -> None:
    click.echo(message, err=True)


def _make_note(log_file: str | None, until: float) -> Any:
    """Notes of --restart-after go to stderr and, as a line of their own, to --log."""
    if not log_file:
        return _note

    def note(message: str) -> None:
        from torchprobe.cli.history import append_event

        _note(message)
        append_event(log_file, "restart", message, lambda _: None, until)

    return note


def _interrupt(name: str) -> None:
    """SIGTERM, SIGINT and SIGHUP end the run: the engine kills its workers on
    the way out, and main() reports it in one line with exit status 1."""
    raise Interrupted(name)


def _terminal_width() -> int:
    """The width for --help. Click would ask shutil, whose import (it pulls in
    zlib, bz2 and lzma) costs more than the rest of --help."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 80


def _fail(message: str) -> int:
    from torchprobe import _entry

    _entry.decide(1)
    _entry.say(f"torchprobe: {message}")
    return 1


def main(argv: list[str] | None = None) -> NoReturn:
    from torchprobe import _entry
    from torchprobe.common.scrub import install

    _entry.install()
    install()  # every byte on stdout and stderr from here on passes the scrubber
    told = False
    try:
        code = _run(argv)
    except click.exceptions.Exit as exc:
        code = 0 if exc.exit_code == 0 else 1
    except SystemExit as exc:
        # click's own answer to EPIPE on stdout (--help, --version): it wraps
        # stdout so that nothing more is written, and exits 1.
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # _Pacify... from 8.2
            code = _fail("error: cannot write to stdout: Broken pipe")
        else:
            code = 0 if exc.code in (0, None) else 1
    except click.ClickException as exc:
        code = _fail(f"error: {' '.join(exc.format_message().split())}")
    except (click.exceptions.Abort, EOFError):
        code = _fail("aborted")
    except UsageError as exc:
        code = _fail(f"error: {exc}")
    except Interrupted as exc:
        told = True
        code = _fail(f"interrupted by {exc}: checks stopped, workers ended")
    except StdoutLost as exc:
        code = _fail(f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback without -v
        if _entry.received() is not None:
            # The signal's Interrupted came back wrapped: Python 3.10 and 3.11
            # turn an exception raised in __set_name__ (a class made while an
            # import runs) into RuntimeError. It is still the interruption.
            told = True
            code = _fail(f"interrupted by {_entry.received()}: checks stopped")
        else:
            code = _internal(exc)
    # stdout passes the scrubber, which holds text until it is flushed: what
    # --help, --version or --list wrote meets a reader gone only here.
    lost = _write_report(lambda: None)
    if lost and not _entry.said():
        code = _fail(f"error: cannot write to stdout: {lost}")
    if 1 in _entry.closed_streams and not _entry.said():
        code = _fail("error: stdout is closed: the report had nowhere to go")
    name = _entry.received()
    if name is not None and not told:
        # The signal's exception was swallowed on its way (an import or a
        # check caught it): the run still ends as interrupted, in one line.
        code = 1 if _entry.said() else _fail(f"interrupted by {name}: checks stopped")
    _entry.finish(code if code in (0, 1) else 1)
    raise AssertionError("unreachable")  # finish() never returns


def _internal(exc: Exception) -> int:
    if _verbose:
        import traceback

        traceback.print_exc()
    from torchprobe.common.errors import describe_exception

    return _fail(f"internal error: {describe_exception(exc)}")


def _run(argv: list[str] | None) -> int:
    from torchprobe import _entry

    # A signal raises Interrupted only within this call, which main() catches.
    _entry.running(_interrupt, Interrupted)
    args = list(sys.argv[1:] if argv is None else argv)
    target: click.Command = command
    prog = "torchprobe"
    if args[:1] == ["serve"]:  # the sidecar (torchprobe.cli.serve); "serve" is no check's name
        from torchprobe.cli.serve import serve_command

        target, args, prog = serve_command, args[1:], "torchprobe serve"
    try:
        code = target.main(
            args=args,
            prog_name=prog,
            standalone_mode=False,
            terminal_width=_terminal_width(),
        )
    finally:
        _entry.ending()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
