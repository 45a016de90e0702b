"""The ``torchprobe`` console script: signals are handled from the first line
of torchprobe's own code, and the process ends with 0 or 1, nothing else.

This module imports only ``os``, ``signal``, ``sys`` and ``time`` (the
interpreter has loaded ``os`` and ``sys`` before any script runs, and
``torchprobe/__init__.py`` imports nothing), and installs its handlers for
SIGINT, SIGTERM and SIGHUP as it is imported, before anything else of
torchprobe loads. A signal then ends the run by phase:

- **starting** (imports, before the command's own code runs): nothing to
  clean up yet, so one line on stderr and ``os._exit(1)`` at once — never a
  ``KeyboardInterrupt`` traceback, never an import that swallows the signal.
- **running**: the first signal raises ``Interrupted`` (the engine kills its
  workers on the way out, the command says so in one line and exits 1); it is
  also recorded, so a run whose code swallowed the exception still exits 1.
  A second signal exits 1 at once (the janitor ends what is left).
- **ending** (the command's code has returned or raised, the exit status is
  not decided yet): one line unless one was written, and ``os._exit(1)``.
- **decided** (the report is written, or the error line is; the process is
  ending): one line unless one was written, and ``os._exit(1)`` at once,
  whatever the verdict was: a run interrupted while it ends has not ended
  as it would have (its ``--log`` line, its textfile may be missing).

The end of a run is ``os._exit`` too, after flushing stdout and stderr: the
interpreter's own shutdown (atexit, threads of abandoned checks, garbage
collection) runs Python code where a signal could land and change the status.

What this cannot cover: the interpreter's start-up and the console-script
wrapper that imports this module (docs/deadlines.md gives the
window measured).
"""

import os
import signal
import sys
import time

TYPE_CHECKING = False  # typing's own constant would cost an import of typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: When torchprobe's code began: the run's --timeout counts from here.
STARTED = time.monotonic()
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_phase = "starting"
_code = 1
_received: str | None = None
_said = False
_raise: "Callable[[str], None] | None" = None
_exception: type = Exception
_rearmed = False
_installed = False
#: True when this module's main() runs the process (the console script, ``-m``).
_owner = False
#: Descriptors 0-2 found closed at start-up and filled with /dev/null.
closed_streams: set[int] = set()


def say(line: str) -> None:
    """One line on stderr, written with a single os.write (safe in a handler:
    a buffered stream may be in the middle of a write when the signal lands)."""
    global _said
    _said = True
    # The one scrubber sees these lines too. Until a secret is registered
    # (torchprobe.common.scrub loaded, or half-loaded when the signal lands, has no
    # pattern yet) there is nothing to mask.
    scrub = sys.modules.get("torchprobe.common.scrub")
    if scrub is not None and getattr(scrub, "_pattern", None) is not None:
        try:
            line = scrub.clean(line)
        except Exception:  # noqa: BLE001 - a line must still go out, masked or not
            line = "torchprobe: error: a line that could not be checked for secrets was dropped"
    try:
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _handler(signum: int, frame: object) -> None:
    global _received
    # SIGALRM only ever comes from _again(): the signal it repeats is _received.
    name = (_received or "SIGTERM") if signum == signal.SIGALRM else signal.Signals(signum).name
    if _phase == "decided":
        if not _said:
            say(f"torchprobe: error: interrupted by {name} after the verdict; exit status 1")
        os._exit(1)
    if _phase == "running" and _raise is not None and (_received is None or _rearmed):
        _received = name if _received is None else _received
        _rearm(False)
        _raise(_received)
    if not _said:
        first = _received or name
        detail = f"{first}, then {name}" if first != name else name
        doing = "starting" if _phase == "starting" else "ending the checks"
        say(f"torchprobe: error: interrupted by {detail} while {doing}; exit status 1")
    os._exit(1)


def _fill_closed_streams() -> None:
    """A stream closed by the caller (``>&-``) is /dev/null here, so that no
    file torchprobe opens takes its number and gets the report; the command
    then says the report had nowhere to go."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, mode)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        closed_streams.add(fd)
        if fd:
            stream = open(fd, "w", encoding="utf-8", errors="replace", closefd=False,  # noqa: SIM115
                          buffering=1 if fd == 2 else -1)  # fmt: skip
            setattr(sys, "stdout" if fd == 1 else "stderr", stream)


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP (idempotent). Outside the main thread
    (torchprobe's main called from another program's thread) the signals are
    that program's."""
    global _installed
    if _installed:
        return
    _fill_closed_streams()
    try:
        for signum in SIGNALS:
            signal.signal(signum, _handler)
    except ValueError:
        return
    _installed = True


def running(raise_interrupt: "Callable[[str], None]", exception: type) -> None:
    """From here a first signal calls ``raise_interrupt(name)``, which raises
    ``exception``."""
    global _phase, _raise, _exception
    _raise = raise_interrupt
    _exception = exception
    _phase = "running"
    original = sys.unraisablehook

    def unraisable(report: "Any") -> None:
        # The handler's exception landed where no exception can leave (a
        # weakref callback, __del__): silently, instead of a printed
        # "Exception ignored", it is raised again a moment later, outside it.
        if isinstance(report.exc_value, _exception) and _phase in ("running", "ending"):
            _again()
            return
        original(report)

    sys.unraisablehook = unraisable


def _again() -> None:
    """Deliver the received signal's exception again in 1 ms. Not at once:
    signal.raise_signal runs the handler before it returns, which would be
    inside the unraisable hook again."""
    _rearm(True)
    signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001)


def ending() -> None:
    """The command's code has returned or raised: from here (unless the
    status is decided already) a signal exits 1 at once, as in start-up."""
    global _phase
    if _phase == "running":
        _phase = "ending"


def _rearm(value: bool) -> None:
    global _rearmed
    _rearmed = value


def owns_process() -> bool:
    """Whether the process is torchprobe's own (the console script, ``-m``)."""
    return _owner


def said() -> bool:
    """Whether a line has been written through say()."""
    return _said


def received() -> str | None:
    """The signal that arrived while running, if one did."""
    return _received


def decide(code: int) -> int:
    """Fix the exit status: 0 only when no signal arrived before now."""
    global _phase, _code
    _code = 1 if _received is not None or code != 0 else 0
    _phase = "decided"
    return _code


def finish(code: int) -> None:
    """End the process with ``code`` (0 or 1): flushed, then ``os._exit`` when
    this module owns the process; ``sys.exit`` for a program that called
    torchprobe's main itself and may catch SystemExit."""
    code = decide(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    if _owner:
        os._exit(code)
    sys.exit(code)


def main() -> None:
    """The console script's ``torchprobe`` (and ``python -m torchprobe``)."""
    global _owner
    _owner = True
    from torchprobe.cli.command import main as command_main

    command_main()


install()
