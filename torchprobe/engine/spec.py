"""Parsing ``CHECK[:KEY=VALUE[,KEY=VALUE...]]`` into a validated occurrence.

The syntax (revised in 0.2.0, so that a misspelt key can never pass silently):

- only the first colon separates the check's name;
- a comma starts a new option only at nesting depth 0 (outside ``{}``, ``[]``,
  ``()`` and double quotes) and only before ``WORD=`` (a letter, then letters,
  digits, ``-`` or ``_``); there WORD must be one of the check's declared keys,
  any other WORD is a usage error ("did you mean ...?"). Any other comma is
  part of the value: JSON bodies, ``[1,2]`` lists, label matchers, URLs with
  commas need no escaping; ``\\,`` is a literal comma everywhere;
- inside double quotes ``\\"`` and ``\\\\`` are kept as written (JSON's
  escapes) and ``\\"`` does not close them; an unclosed bracket or
  quote is part of the value, unless a ``,WORD=`` follows it (that would hide
  an option: a usage error);
- a check whose code takes any keyword (``**kwargs``), or a plugin planned
  before its code is loaded, starts an option at any depth-0 ``,WORD=``;
- a repeatable option is repeated (``header=A: 1,header=B: 2``);
- ``${NAME}`` is replaced by the environment variable NAME (``$${`` is a
  literal ``${``), and what it read is a secret: the option shows ``***``,
  and :mod:`torchprobe.common.scrub` masks the value wherever else it comes back.

:func:`format_option` writes a value so that it parses back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from torchprobe.base import Option, UsageError
from torchprobe.common.scrub import register
from torchprobe.options import duration, text

__all__ = [
    "Occurrence", "format_check", "format_option", "parse_occurrence", "split_name", "UNIVERSAL",
]  # fmt: skip

REDACTED = "***"
#: The longest reason a usage error quotes from an option's parser: one line to read.
_LONGEST_REASON = 300
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ANY_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*=")
_OPENERS = {"{": "}", "[": "]", "(": ")"}
#: What a backslash makes literal outside double quotes (a comma: everywhere).
_LITERAL = frozenset('{}[]()",')
_ENV = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE = re.compile(r"(\$\{[^{}\\]*\})")

UNIVERSAL: tuple[Option, ...] = (
    Option("name", text, help="label of this occurrence in every output"),
    Option("timeout", duration, help="this check's own timeout (from when its code starts)"),
)


class Occurrence:
    """One CHECK argument, parsed: which check, its label, its option values."""

    __slots__ = ("check", "label", "values", "timeout", "shown", "secrets", "text", "name_key")

    def __init__(self, check: str, text_: str) -> None:
        self.check = check
        self.text = text_
        self.label = check
        self.values: dict[str, Any] = {}
        self.timeout: float | None = None
        self.shown: dict[str, Any] = {}
        self.secrets: list[str] = []
        #: What tells this occurrence's name= from another's (the label itself,
        #: unless that is masked): never shown.
        self.name_key = check

    def __repr__(self) -> str:
        return f"Occurrence({self.check!r}, label={self.label!r}, shown={self.shown!r})"


def split_name(token: str) -> tuple[str, str]:
    """``"http:url=..."`` -> ``("http", "url=...")``; validates the name."""
    name, _, rest = token.partition(":")
    if not _NAME.match(name):
        raise UsageError(f"{token!r}: a check is NAME[:KEY=VALUE,...] (see torchprobe --list)")
    return name, rest


def _pieces(check: str, rest: str, keys: Mapping[str, Option] | None) -> list[str]:
    r"""Split ``rest`` into ``KEY=VALUE`` pieces, escapes resolved.

    A comma splits only at nesting depth 0 (outside ``{}``, ``[]``, ``()`` and
    double quotes) and only before ``WORD=``; ``keys`` None accepts any WORD
    there, else an undeclared one is a usage error. ``\,`` is a literal comma
    everywhere; outside double quotes ``\`` before a bracket or ``"`` makes it
    a literal that nests nothing; inside them ``\"`` and ``\\`` are kept as
    written (JSON's escaped quote and backslash) and ``\"`` does not close them.
    """
    pieces: list[str] = []
    current: list[str] = []
    stack: list[tuple[str, int]] = []  # the closer awaited, and where it opened
    hidden: list[tuple[int, str]] = []  # each ",WORD=" read inside brackets or quotes
    i = 0
    while i < len(rest):
        ch = rest[i]
        quoted = bool(stack) and stack[-1][0] == '"'
        if ch == "\\" and i + 1 < len(rest):
            following = rest[i + 1]
            if following == "," or (not quoted and following in _LITERAL):
                current.append(following)
                i += 2
                continue
            if quoted and following in '"\\':
                # JSON's escapes, kept as written: \" does not close the
                # quotes, and \\ is one backslash (so "a\\" does close them,
                # and "C:\\,x" keeps its comma and both backslashes).
                current.append("\\" + following)
                i += 2
                continue
        if ch == '"' and quoted:
            stack.pop()
        elif ch == '"' or (not quoted and ch in _OPENERS):
            stack.append((_OPENERS.get(ch, '"'), i))
        elif not quoted and stack and ch == stack[-1][0]:
            stack.pop()  # a closer that matches nothing open is plain text
        elif ch == ",":
            word = _ANY_KEY.match(rest, i + 1)
            if word is not None and stack:
                hidden.append((i, word.group()[:-1]))
            elif word is not None:
                key = word.group()[:-1]
                if keys is not None and key not in keys:
                    raise UsageError(
                        f"check {check!r}: unknown option {key!r}{_suggest(key, keys)}; "
                        "write \\, for a literal comma"
                    )
                pieces.append("".join(current))
                current = []
                i += 1
                continue
        current.append(ch)
        i += 1
    if stack:
        # Splits happen only at depth 0, so the unclosed one is in the last piece.
        closer, opened = stack[0]
        after = [key for at, key in hidden if at > opened]
        if after:
            opener = rest[opened]
            key = "".join(current).partition("=")[0]
            raise UsageError(
                f"check {check!r}: {opener!r} in option {key!r} is never closed, which would "
                f"make ',{after[0]}=' part of its value; close it, or write \\{opener} for a "
                f"literal {opener!r}"
            )
    pieces.append("".join(current))
    return pieces


def _suggest(key: str, keys: Iterable[str]) -> str:
    import difflib  # only on the way to a usage error: a run's start-up never pays for it

    close = difflib.get_close_matches(key, list(keys), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_option(key: str, value: str, *, expand: bool = False) -> str:
    """``KEY=VALUE`` written so that the parser reads back exactly ``value``.

    Every comma, bracket and double quote is written with a ``\\`` before it
    (so nothing in it nests or splits); ``${`` is written ``$${`` unless ``expand``
    (then a ``${NAME}`` in ``value`` still reads the environment). A value that
    ends in ``\\`` must be the last option: see :func:`format_check`.
    """
    if not _ANY_KEY.fullmatch(key + "="):
        raise ValueError(f"{key!r} is not an option name (a letter, then letters, digits, - or _)")
    written: list[str] = []
    # A whole ${NAME} keeps its braces (balanced, they hide nothing); any other
    # special character gets its backslash.
    for index, part in enumerate(_VARIABLE.split(value)):
        if index % 2:
            written.append(("${" if expand else "$${") + _escape(part[2:-1]) + "}")
        else:
            written.append(_escape(part if expand else part.replace("${", "$${")))
    return f"{key}={''.join(written)}"


def _escape(text_: str) -> str:
    return "".join("\\" + c if c in _LITERAL else c for c in text_)


def format_check(check: str, options: Iterable[tuple[str, str]], *, expand: bool = False) -> str:
    """``CHECK:KEY=VALUE,...`` that parses back to these options, in this order.

    A value ending in ``\\`` cannot come before another option (``\\,`` would
    read as a literal comma): that is a ValueError.
    """
    written = [format_option(k, v, expand=expand) for k, v in options]
    for piece in written[:-1]:
        if piece.endswith("\\"):
            key = piece.partition("=")[0]
            raise ValueError(f"option {key!r}: a value ending in '\\' must be the last option")
    return f"{check}:{','.join(written)}" if written else check


def _require_utf8(value: str, where: str) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (argv and the
    environment are decoded with surrogateescape); no check can send, print
    or store them, so they are refused here, by position."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise UsageError(f"{where}: not UTF-8 text ({what} at character {exc.start + 1})") from None


def _expand(value: str, where: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """The value with ``${NAME}`` replaced, and the values that replaced them."""
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        variable = match.group(1)
        if not variable or variable not in environ:
            raise UsageError(f"{where}: environment variable {variable!r} is not set")
        used.append(environ[variable])
        return environ[variable]

    return _ENV.sub(replace, value), used


def parse_occurrence(
    token: str,
    options: Mapping[str, Option] | None,
    environ: Mapping[str, str],
    *,
    accept_any: bool = False,
) -> Occurrence:
    """Parse one CHECK argument against a check's declared options.

    ``options`` maps each declared key to its :class:`Option` (the universal
    ``name`` and ``timeout`` are added here). With ``accept_any`` (a plugin
    function taking ``**kwargs``) an undeclared key is accepted as text.
    """
    check, rest = split_name(token)
    occurrence = Occurrence(check, token)
    declared: dict[str, Option] = {o.key: o for o in UNIVERSAL}
    declared.update(options or {})
    if not rest:
        pieces: list[str] = []
    else:
        pieces = _pieces(check, rest, None if accept_any else declared)
    collected: dict[str, list[tuple[str, list[str]]]] = {}
    flexible: set[str] = set()
    for piece in pieces:
        key, eq, raw = piece.partition("=")
        if not eq or not key:
            raise UsageError(f"check {check!r}: expected KEY=VALUE, got {piece!r}")
        if key not in declared:
            if not accept_any or not _ANY_KEY.match(key + "="):
                known = ", ".join(sorted(declared))
                raise UsageError(f"check {check!r}: unknown option {key!r}"
                                 f"{_suggest(key, declared)} (options: {known})")  # fmt: skip
            # Undeclared (a **kwargs plugin, or a plugin seen before its code
            # is loaded): a repeated key collects a list, a single one stays text.
            declared[key] = Option(key, text, repeatable=True)
            flexible.add(key)
        option = declared[key]
        if key in collected and not option.repeatable:
            raise UsageError(f"check {check!r}: option {key!r} given more than once")
        value, from_env = _expand(raw, f"check {check!r}: option {key!r}", environ)
        _require_utf8(value, f"check {check!r}: option {key!r}")
        collected.setdefault(key, []).append((value, from_env))

    for key, option in declared.items():
        if option.required and key not in collected:
            raise UsageError(f"check {check!r}: option {key!r} is required")

    for key, given in collected.items():
        option = declared[key]
        parsed: list[Any] = []
        shown: list[str] = []
        for value, from_env in given:
            try:
                parsed.append(option.parse(value))
            except ValueError as exc:
                reason = str(exc)
                if len(reason) > _LONGEST_REASON:  # a hostile value can be 128 KiB long
                    reason = f"{reason[:_LONGEST_REASON]}... ({len(reason)} characters)"
                if from_env or option.secret:
                    reason = "invalid value (hidden: it is a secret)"
                raise UsageError(f"check {check!r}: option {key!r}: {reason}") from None
            shown_value, secrets = _redact(option, value, from_env)
            shown.append(shown_value)
            occurrence.secrets.extend(secrets)
            for secret in secrets:
                register(secret)
        if key == "name":
            occurrence.label = parsed[0]
        elif key == "timeout":
            occurrence.timeout = parsed[0]
        else:
            many = option.repeatable and not (key in flexible and len(parsed) == 1)
            occurrence.values[option.attr] = parsed if many else parsed[0]
            occurrence.shown[key] = shown if many else shown[0]
            continue
        occurrence.shown[key] = shown[0]
    masked = occurrence.shown.get("name") == REDACTED
    if not _NAME.match(occurrence.label):  # an empty name= too
        what = "its value (hidden: it is a secret)" if masked else repr(occurrence.label)
        raise UsageError(
            f"check {check!r}: option 'name': {what} may hold only "
            "letters, digits, '_', '.' and '-'"
        )
    occurrence.name_key = occurrence.label
    if masked:
        # A name from ${NAME} is a secret like any other value: every output
        # shows the mask, even where the scrubber would not look (a value
        # shorter than its MIN_LENGTH).
        occurrence.label = REDACTED
    return occurrence


def _redact(option: Option, value: str, from_env: list[str]) -> tuple[str, list[str]]:
    """What the output may show of a value, and the secrets to scrub everywhere:
    each value that came from ``${NAME}`` (not only the whole option: a URL's
    query may come back in a redirect), and what the option's own redactor
    names (a URL's password)."""
    secrets = list(from_env)
    shown = value
    redactor = getattr(option.parse, "redact", None)
    if redactor is not None:
        shown, more = redactor(value)
        secrets += more
    if from_env or option.secret is True:
        return REDACTED, [*secrets, value]
    return shown, secrets
