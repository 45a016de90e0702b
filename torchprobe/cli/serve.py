"""``torchprobe serve``: parse and validate everything, then run the sidecar.

Every bad input is one usage error before anything starts: no checks, CHECK
arguments, a bad ``--interval`` or ``--listen``, an unknown check, option or
profile, a readiness check in ``--live``, an address that cannot be bound.
A plugin's readiness is known only once its worker loads it: a plugin that
declares readiness in ``--live`` ends the sidecar at its first round (exit 1).

The stop: SIGTERM, SIGINT or SIGHUP set an event; the HTTP server stops,
rounds in flight are abandoned and the process ends with 0 — its workers
end with it (the engine's janitor kills their process groups when this
process ends: torchprobe.engine.workerproc).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

import click

from torchprobe.base import UsageError
from torchprobe.cli.command import Duration

__all__ = ["serve_command"]

DEFAULT_LISTEN = "127.0.0.1:9400"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9400`` for IPv6) -> host and port."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def _split(flag: str, value: str) -> list[str]:
    import shlex

    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if not tokens:
        raise UsageError(f"{flag}: no checks given")
    return tokens


def _tokens(flag: str, checks: str | None, profile: str | None, config: str | None,
            environ: Mapping[str, str]) -> list[str] | None:  # fmt: skip
    if checks is not None and profile is not None:
        raise UsageError(f"{flag} and {flag}-profile are two sources of checks: give one")
    if checks is not None:
        return _split(flag, checks)
    if profile is not None:
        from torchprobe.cli.config import find_config, load_profile

        return load_profile(profile, find_config(config, environ)).checks
    return None


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("arguments", nargs=-1, metavar="")
@click.option(
    "--live",
    metavar="CHECKS",
    help='Liveness checks, split like TORCHPROBE_CHECKS: "nvml vllm:mode=live".',
)
@click.option("--ready", metavar="CHECKS", help="Readiness checks, split the same way.")
@click.option("--live-profile", metavar="NAME", help="The liveness checks of a profile.")
@click.option("--ready-profile", metavar="NAME", help="The readiness checks of a profile.")
@click.option(
    "--interval",
    type=Duration(),
    default="10",
    show_default=True,
    help="Run each set this often; each round's deadline is at most this.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve /live, /ready, /healthz and /metrics.",
)
@click.option("--config", metavar="PATH", help="The TOML file of profiles.")
@click.option(
    "--xid/--no-xid",
    default=True,
    show_default=True,
    help="Watch NVML's critical GPU events (Xid) in a process of its own; a critical "
    "one fails /live and /ready. Where NVML or event sets are missing, says so once.",
)
@click.option(
    "--xid-gpus",
    metavar="LIST",
    help="The GPUs to watch, comma-separated UUIDs (GPU-..., MIG-...) or NVML indexes "
    "(default: every GPU this container's NVML shows).",
)
@click.option("--xid-ignore", metavar="LIST", help="Xid numbers never critical, e.g. 109,119.")
@click.option("--xid-fatal", metavar="LIST", help="Xid numbers critical besides the policy's.")
@click.option("--dry-run", is_flag=True, help="Print the resolved sets; serve nothing.")
def serve_command(arguments: tuple[str, ...], live: str | None, ready: str | None,
                  live_profile: str | None, ready_profile: str | None, interval: float,
                  listen: str, config: str | None, xid: bool, xid_gpus: str | None,
                  xid_ignore: str | None, xid_fatal: str | None,
                  dry_run: bool) -> int:  # fmt: skip
    """Run --live and --ready checks every --interval and answer /live and /ready
    from their last verdicts: a sidecar for Kubernetes probes."""
    if arguments:
        raise UsageError(
            f"serve takes no CHECK arguments ({' '.join(arguments)!r}): "
            "give them with --live or --ready"
        )
    if not interval > 0:
        raise UsageError(f"--interval must be more than 0 (got {interval:g})")
    host, port = parse_listen(listen)
    environ = os.environ
    live_tokens = _tokens("--live", live, live_profile, config, environ)
    ready_tokens = _tokens("--ready", ready, ready_profile, config, environ)
    if live_tokens is None and ready_tokens is None:
        raise UsageError("serve needs --live or --ready (or --live-profile, --ready-profile)")
    from torchprobe.engine.plan import plan, readiness_refused

    planned = {}
    for probe, tokens in (("live", live_tokens), ("ready", ready_tokens)):
        if tokens is not None:
            planned[probe] = plan(tokens, environ)
    for p in planned.get("live", []):
        if p.readiness and p.instance is not None:
            raise readiness_refused(p.occurrence, p.instance, "serve --live")
    watch = _xid_options(xid, xid_gpus, xid_ignore, xid_fatal)
    if dry_run:
        lines = [f"serve on {host}:{port}; every {interval:g}s"]
        if watch is None:
            lines.append("xid: not watched (--no-xid)")
        else:
            gpus, ignore, fatal = watch
            lines.append(f"xid: {', '.join(gpus) or 'every GPU NVML shows'}"
                         + (f"; ignore {','.join(map(str, ignore))}" if ignore else "")
                         + (f"; fatal {','.join(map(str, fatal))}" if fatal else ""))  # fmt: skip
        for probe, items in planned.items():
            lines.append(f"{probe}:")
            for p in items:
                shown = ",".join(f"{k}={v}" for k, v in p.occurrence.shown.items()) or "(defaults)"
                lines.append(f"  {p.occurrence.label}: {p.occurrence.check} {shown}")
        click.echo("\n".join(lines))
        return 0
    from torchprobe.serve.http import bind

    try:
        listener = bind(host, port)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: cannot listen: {exc.strerror or exc}") from None
    return _serve(listener, live_tokens, ready_tokens, interval, watch)


Watch = tuple[list[str], list[int], list[int]]  # --xid-gpus, --xid-ignore, --xid-fatal


def _numbers(flag: str, value: str | None) -> list[int]:
    if value is None:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if not v.isascii() or not v.isdigit()]
    if bad or not items:
        raise UsageError(f"{flag} {value!r}: expected Xid numbers, comma-separated, e.g. 109,119")
    return [int(v) for v in items]


def _xid_options(on: bool, gpus: str | None, ignore: str | None,
                 fatal: str | None) -> Watch | None:  # fmt: skip
    if not on:
        given = [f for f, v in (("--xid-gpus", gpus), ("--xid-ignore", ignore),
                                ("--xid-fatal", fatal)) if v is not None]  # fmt: skip
        if given:
            raise UsageError(f"{given[0]} has no effect with --no-xid")
        return None
    targets = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if gpus is not None and not targets:
        raise UsageError(f"--xid-gpus {gpus!r}: no GPU named")
    for target in targets:
        if not (target.isascii() and target.isdigit()) and not target.startswith(("GPU-", "MIG-")):
            raise UsageError(f"--xid-gpus: {target!r} is neither a GPU-/MIG- UUID "
                             "nor an NVML index")  # fmt: skip
    return targets, _numbers("--xid-ignore", ignore), _numbers("--xid-fatal", fatal)


def _serve(listener: Any, live_tokens: list[str] | None, ready_tokens: list[str] | None,
           interval: float, watch: Watch | None) -> int:  # fmt: skip
    from torchprobe.common.progress_state import MemoryStore, use_store
    from torchprobe.serve.app import Sidecar
    from torchprobe.serve.http import Server
    from torchprobe.serve.rounds import Rounds

    # stall= readings outlive a round: one store for the process (in-process
    # checks only; see docs/serve.md).
    use_store(MemoryStore())
    stop = threading.Event()
    fatal: list[str] = []

    def end(message: str) -> None:
        fatal.append(message)
        stop.set()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    sets = [Rounds("live", live_tokens, interval, stop, end, liveness_only=True)
            if live_tokens is not None else None,
            Rounds("ready", ready_tokens, interval, stop, end)
            if ready_tokens is not None else None]  # fmt: skip
    host = None
    if watch is not None:
        from torchprobe.serve.xid import XidHost

        host = XidHost(*watch, interval=interval, log=lambda line: click.echo(line, err=True))
    sidecar = Sidecar(sets[0], sets[1], interval, host)
    server = Server(listener, sidecar.route)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    for rounds in sets:
        if rounds is not None:
            rounds.start()
    if host is not None:
        host.start()
    click.echo(f"torchprobe: serving on {_shown(listener)} every {interval:g}s", err=True)
    while not stop.wait(0.25):
        if not thread.is_alive():
            fatal.append("the HTTP server stopped")
            break
    server.shutdown()
    if host is not None:
        host.stop()
    sys.stderr.flush()
    if fatal:
        raise UsageError(fatal[0])
    return 0


def _shown(listener: Any) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
