"""The one secret scrubber: every secret of the run, hidden wherever output leaves.

What is a secret: each value that came from ``${NAME}``, the password of a
URL's userinfo, ``token=`` and a token file's keys. Each is registered here,
for the whole run, together with the forms it takes on the way out:
URL-encoded (``quote`` and ``quote_plus``, either hex case), JSON-escaped,
Prometheus-label-escaped, Python ``repr``'d, whitespace-collapsed, and base64
(alone, and as the ``user:password`` of HTTP Basic).

Where: :func:`install` wraps ``sys.stdout`` and ``sys.stderr`` in a
:class:`Stream` that scrubs what is written when it is flushed, and the files
torchprobe writes (``--log``, ``--prometheus-textfile``) pass their text
through :func:`clean` just before the write. That is the guarantee; the
renderers only call :func:`clip` where they shorten a text (so a cut never
leaves half a secret behind) and :func:`clean_tree` where a structured format
must stay parsable.

Short values: a secret shorter than :data:`MIN_LENGTH` characters is still
never shown as an option's value (the option shows ``***``), but it is not
searched for in other text: ``${PORT}=8080`` or ``${N}=1`` would otherwise
rewrite every duration, count and port number that happens to contain it,
and break the JSON and Prometheus syntax those numbers are part of. No JSON
literal or Prometheus keyword (``true``, ``false``, ``null``, ``NaN``,
``+Inf``, ``HELP``, ``TYPE``, ``gauge``) is that long either, nor any port
number. A longer secret is masked even where it spells torchprobe's own
words: secrecy first, even over a metric name the mask then breaks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "Stream",
    "clean",
    "clean_tree",
    "clip",
    "forms",
    "install",
    "register",
    "register_basic",
    "registered",
]

MASK = "***"
#: Secrets shorter than this are not searched for by substring (see above).
MIN_LENGTH = 6

_lock = threading.Lock()
_forms: set[str] = set()
_pattern: re.Pattern[str] | None = None
#: Called with the new forms of each registration (a worker sends them home).
_listeners: list[Callable[[list[str]], None]] = []


def _b64(raw: str) -> list[str]:
    import base64

    # A lone surrogate (a plugin's secret from undecodable bytes) encodes as
    # the bytes that carry it rather than raising: registering never fails.
    data = raw.encode("utf-8", "surrogatepass")
    encoded = base64.b64encode(data).decode("ascii")
    return [encoded, encoded.rstrip("="), base64.urlsafe_b64encode(data).decode()]


def forms(value: str) -> set[str]:
    """Every form in which ``value`` may leave the process."""
    # Imported here, not at the top: ``--help`` and a run without secrets
    # never pay for them.
    import json
    from urllib.parse import quote, quote_plus

    out = {value, " ".join(value.split())}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        out.add(encoded)
        out.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded))
    out.add(json.dumps(value)[1:-1])
    out.add(json.dumps(value, ensure_ascii=False)[1:-1])
    out.add(value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
    out.add(repr(value)[1:-1])
    out.update(_b64(value))
    return {f for f in out if len(f) >= MIN_LENGTH}


def register(value: str | None) -> None:
    """Make ``value`` a secret for the rest of the run."""
    if value:
        _add(forms(value))


def register_basic(user: str, password: str) -> None:
    """An HTTP Basic credential: the password and the ``user:password`` base64."""
    if password:
        register(password)
        _add({f for f in _b64(f"{user}:{password}") if len(f) >= MIN_LENGTH})


def registered() -> list[str]:
    """Every form registered so far."""
    with _lock:
        return sorted(_forms)


def _add(new: Iterable[str]) -> None:
    global _pattern
    with _lock:
        fresh = [f for f in new if f not in _forms]
        if not fresh:
            return
        _forms.update(fresh)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_forms, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(f) for f in ordered))
        listeners = list(_listeners)
    for listener in listeners:
        listener(fresh)


def add_forms(new: Iterable[str]) -> None:
    """Forms registered elsewhere (in a worker process), taken as they are."""
    _add(f for f in new if isinstance(f, str) and len(f) >= MIN_LENGTH)


def listen(listener: Callable[[list[str]], None]) -> None:
    _listeners.append(listener)


def clean(text: str) -> str:
    """``text`` with every registered secret masked."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    # Again until nothing matches: a secret that holds the mask's characters
    # could otherwise be spelt anew by a mask and what follows it. Each pass
    # shortens the text (every form is longer than the mask), so this ends.
    while True:
        cleaned = pattern.sub(MASK, text)
        if cleaned == text:
            return text
        text = cleaned


def clip(text: str, limit: int, *, tail: bool = False, squeeze: bool = False) -> str:
    """``text`` cleaned, then cut to ``limit`` characters with "…" (its end with ``tail``);
    ``squeeze`` first joins its whitespace into single spaces."""
    text = clean(text)
    if squeeze:
        text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if tail:
        return text[len(text) - limit :]
    return text[: max(0, limit - 1)] + "…"


def clean_tree(value: Any) -> Any:
    """A JSON-able value with its strings cleaned (keys too) and its other
    scalars left as they are, unless their text holds a secret: then they
    become the string ``***``, so the document still parses."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): clean_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if clean(repr(value)) == repr(value) else MASK
    return clean(str(value))


class Stream:
    """A text stream that scrubs on its way to ``target``.

    Text is held until :meth:`flush`, so a secret written in pieces (``json.dump``
    writes a document chunk by chunk) is whole when it is scrubbed. It has no
    ``buffer``: nothing can write around it through the binary layer.
    """

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._held: list[str] = []
        # Re-entrant: a signal handler that writes a line may run while the
        # interrupted code is inside write() or flush() of the same stream.
        self._lock = threading.RLock()

    @property
    def encoding(self) -> str:
        return str(getattr(self.target, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:
        return getattr(self.target, "errors", None)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            # As a text file does: click tells a binary stream by a write of b"".
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._held.append(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            text, self._held = "".join(self._held), []
        if text:
            # Taken out first: a write that fails (a closed pipe) is not retried
            # at interpreter exit.
            self.target.write(clean(text))
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(getattr(self.target, "closed", False))

    def close(self) -> None:
        self.flush()


def install() -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` through the scrubber (once)."""
    import sys

    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if current is not None and not isinstance(current, Stream):
            setattr(sys, name, Stream(current))
