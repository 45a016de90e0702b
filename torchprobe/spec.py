"""Parsing ``CHECK[:KEY=VALUE[,KEY=VALUE...]]`` into a validated occurrence.

The syntax, fixed because users and HEALTHCHECK lines depend on it:

- only the first colon separates the check's name;
- a comma starts a new option only when it is followed by one of the check's
  declared ``KEY=``, so URLs with commas and colons need no quoting;
  ``\\,`` is a literal comma;
- a repeatable option is repeated (``header=A: 1,header=B: 2``);
- ``${NAME}`` is replaced by the environment variable NAME (``$${`` is a
  literal ``${``), and what it read is a secret: the option shows ``***``,
  and :mod:`torchprobe.scrub` masks the value wherever else it comes back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import Option, UsageError
from .options import duration, text
from .scrub import register

__all__ = ["Occurrence", "parse_occurrence", "split_name", "UNIVERSAL"]

REDACTED = "***"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ANY_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*=")
_ENV = re.compile(r"\$\$\{|\$\{([^}]*)\}")

UNIVERSAL: tuple[Option, ...] = (
    Option("name", text, help="label of this occurrence in every output"),
    Option("timeout", duration, help="this check's own timeout (from when its code starts)"),
)


class Occurrence:
    """One CHECK argument, parsed: which check, its label, its option values."""

    __slots__ = ("check", "label", "values", "timeout", "shown", "secrets", "text")

    def __init__(self, check: str, text_: str) -> None:
        self.check = check
        self.text = text_
        self.label = check
        self.values: dict[str, Any] = {}
        self.timeout: float | None = None
        self.shown: dict[str, Any] = {}
        self.secrets: list[str] = []

    def __repr__(self) -> str:
        return f"Occurrence({self.check!r}, label={self.label!r}, shown={self.shown!r})"


def split_name(token: str) -> tuple[str, str]:
    """``"http:url=..."`` -> ``("http", "url=...")``; validates the name."""
    name, _, rest = token.partition(":")
    if not _NAME.match(name):
        raise UsageError(f"{token!r}: a check is NAME[:KEY=VALUE,...] (see torchprobe --list)")
    return name, rest


def _pieces(rest: str, keys: Mapping[str, Option] | None) -> list[str]:
    """Split on the commas that start a declared ``KEY=``; ``\\,`` is literal."""
    pieces: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and rest.startswith(",", i + 1):
            current.append(",")
            i += 2
            continue
        if ch == ",":
            following = rest[i + 1 :]
            key = following.split("=", 1)[0] if "=" in following else None
            starts_key = (
                key is not None and key in keys
                if keys is not None
                else _ANY_KEY.match(following) is not None
            )
            if starts_key:
                pieces.append("".join(current))
                current = []
                i += 1
                continue
        current.append(ch)
        i += 1
    pieces.append("".join(current))
    return pieces


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
        pieces = _pieces(rest, None if accept_any else declared)
    collected: dict[str, list[tuple[str, list[str]]]] = {}
    flexible: set[str] = set()
    for piece in pieces:
        key, eq, raw = piece.partition("=")
        if not eq or not key:
            raise UsageError(f"check {check!r}: expected KEY=VALUE, got {piece!r}")
        if key not in declared:
            if not accept_any or not _ANY_KEY.match(key + "="):
                known = ", ".join(sorted(declared))
                raise UsageError(f"check {check!r}: unknown option {key!r} (options: {known})")
            # Undeclared (a **kwargs plugin, or a plugin seen before its code
            # is loaded): a repeated key collects a list, a single one stays text.
            declared[key] = Option(key, text, repeatable=True)
            flexible.add(key)
        option = declared[key]
        if key in collected and not option.repeatable:
            raise UsageError(f"check {check!r}: option {key!r} given more than once")
        value, from_env = _expand(raw, f"check {check!r}: option {key!r}", environ)
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
    if occurrence.label and not _NAME.match(occurrence.label):
        raise UsageError(
            f"check {check!r}: option 'name': {occurrence.label!r} may hold only "
            "letters, digits, '_', '.' and '-'"
        )
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
