"""Profiles: named sets of checks, built in or from a TOML file.

    [profiles.ready]
    include = ["live"]
    checks = [
        "http:url=http://127.0.0.1:8000/ready,timeout=2",
        { check = "status-file", mode = "ready", max-age = "30s" },
    ]
    timeout = "8s"
    format = "text"

The file is found through ``--config PATH``, else ``$TORCHPROBE_CONFIG``, else
``./torchprobe.toml``, else ``/etc/torchprobe.toml``; it is read only when a
profile is asked for (or for ``--dry-run``), so a stray file never changes a
plain run. A user's profile of a built-in name replaces the built-in one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from torchprobe.base import UsageError
from torchprobe.engine.spec import format_check
from torchprobe.options import duration
from torchprobe.renderers import FORMATS

__all__ = ["BUILTIN_PROFILES", "Profile", "find_config", "load_profile", "validate_config"]

BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # Once, until it first passes, with room for importing torch and creating
    # a context on every GPU: the heavy checks.
    "startup": {"checks": ["cuda", "tensor", "nvml"], "timeout": "60s"},
    # Often and cheap: the driver's view of the GPUs and every serving
    # process's own verdict (sticky CUDA errors, stuck requests, frozen workers).
    "live": {"checks": ["nvml", "status-file:mode=live"]},
    # Can a request be served now: every worker live and its model loaded.
    "ready": {"checks": ["status-file:mode=ready"]},
}

SEARCH = ("torchprobe.toml", "/etc/torchprobe.toml")
_PROFILE_KEYS = {"checks", "include", "timeout", "format"}


class Profile:
    """A resolved profile: its checks as command-line tokens, and its settings."""

    __slots__ = ("name", "checks", "timeout", "format", "source")

    def __init__(self, name: str, checks: list[str], timeout: float | None, fmt: str | None,
                 source: str) -> None:  # fmt: skip
        self.name = name
        self.checks = checks
        self.timeout = timeout
        self.format = fmt
        self.source = source


def find_config(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file to read: a path named explicitly must exist."""
    named = explicit or environ.get("TORCHPROBE_CONFIG") or None
    if named:
        if not os.path.exists(named):
            how = "--config" if explicit else "TORCHPROBE_CONFIG"
            raise UsageError(f"{how}: config file {named} does not exist")
        return named
    for candidate in SEARCH:
        if os.path.isfile(candidate):
            return candidate
    return None


def _read(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from torchprobe.common.safeio import CONFIG_CAP, read_regular

    try:
        data: dict[str, Any] = tomllib.loads(read_regular(path, CONFIG_CAP).decode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file as UTF-8 first
        raise UsageError(f"{path}: invalid TOML: not UTF-8 text (byte {exc.start + 1} is "
                         f"0x{exc.object[exc.start]:02x})") from None  # fmt: skip
    return data


Tables = dict[str, tuple[dict[str, Any], str]]


def _tables(path: str | None) -> Tables:
    """Every profile: the built-in ones, then the file's (which replace them)."""
    tables: Tables = {k: (v, "built-in") for k, v in BUILTIN_PROFILES.items()}
    if path is None:
        return tables
    from torchprobe.cli.tomllines import Lines

    data = _read(path)
    for key in data:
        if key != "profiles":
            raise UsageError(f"{path}: unknown key {key!r}{Lines(path).top(key)} "
                             "(the file holds [profiles.NAME] tables)")  # fmt: skip
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError(f"{path}: 'profiles' must be a table of tables")
    for key, table in profiles.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path}: profiles.{key} must be a table{Lines(path).member(key)}")
        tables[key] = (table, path)
    return tables


def load_profile(name: str, path: str | None) -> Profile:
    """Resolve profile ``name`` from the file at ``path`` (None: built-ins only).

    Only the file's structure and what ``name`` uses (itself and its
    includes) are validated: a broken profile the run does not use is no error.
    """
    tables = _tables(path)
    if name not in tables:
        known = ", ".join(sorted(tables))
        raise UsageError(f"unknown profile {name!r} (profiles: {known})")
    return _Resolver(tables, path).profile(name)


class _Resolved:
    __slots__ = ("own", "order", "timeout", "format")

    def __init__(self, own: list[str], order: list[str], timeout: float | None,
                 fmt: str | None) -> None:  # fmt: skip
        self.own = own  # the profile's own checks, as tokens
        self.order = order  # the profiles whose checks it runs, each once, itself last
        self.timeout = timeout
        self.format = fmt


class _Resolver:
    """Resolves profiles once each: a profile included many times, or through
    many paths, is validated and expanded once (its checks run once)."""

    def __init__(self, tables: Tables, path: str | None) -> None:
        from torchprobe.cli.tomllines import Lines

        self.tables = tables
        self.lines = Lines(path) if path is not None else None
        self.done: dict[str, _Resolved] = {}

    def profile(self, name: str) -> Profile:
        resolved = self._resolve(name, [])
        checks = [token for n in resolved.order for token in self.done[n].own]
        return Profile(name, checks, resolved.timeout, resolved.format, self.tables[name][1])

    def _resolve(self, name: str, stack: list[str]) -> _Resolved:
        table, source = self.tables[name]
        if name in stack:
            chain = " -> ".join([*stack[stack.index(name) :], name])
            raise UsageError(f"{source}: profile {name!r} includes itself: {chain}")
        if name in self.done:
            return self.done[name]
        where = (
            f"{source}: profiles.{name}" if source != "built-in" else f"built-in profile {name!r}"
        )
        lines = self.lines if source != "built-in" else None

        def fail(key: str, message: str, index: int | None = None) -> UsageError:
            line = "" if lines is None else (
                lines.key(name, key) if index is None else lines.entry(name, index))  # fmt: skip
            place = key if index is None else f"{key}[{index}]"
            return UsageError(f"{where}.{place}{line}: {message}")

        for key in table:
            if key not in _PROFILE_KEYS:
                raise fail(key, f"unknown key (keys: {', '.join(sorted(_PROFILE_KEYS))})")
        timeout: float | None = None
        fmt: str | None = None
        order: dict[str, None] = {}
        include = table.get("include", [])
        if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
            raise fail("include", "must be a list of profile names")
        for included in include:
            if included not in self.tables:
                raise fail("include", f"unknown profile {included!r}")
            inner = self._resolve(included, [*stack, name])
            order.update(dict.fromkeys(inner.order))
            timeout = inner.timeout if timeout is None else timeout
            fmt = inner.format if fmt is None else fmt
        entries = table.get("checks", [])
        if not isinstance(entries, list):
            raise fail("checks", "must be a list")
        from torchprobe.engine.plan import plan

        own: list[str] = []
        for index, entry in enumerate(entries):
            token = _token(entry, lambda m, i=index: fail("checks", m, i))
            try:
                plan([token], os.environ)  # an unknown check or a bad value names its place
            except UsageError as exc:
                raise fail("checks", str(exc), index) from None
            own.append(token)
        if "timeout" in table:
            timeout = _timeout(table["timeout"], lambda m: fail("timeout", m))
        if "format" in table:
            if table["format"] not in FORMATS:
                raise fail("format", f"{table['format']!r} is not one of {', '.join(FORMATS)}")
            fmt = table["format"]
        order.pop(name, None)
        order[name] = None
        if not own and not any(self.done[n].own for n in order if n != name):
            raise fail("checks", "the profile has no checks")
        self.done[name] = _Resolved(own, list(order), timeout, fmt)
        return self.done[name]


def _timeout(value: Any, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail("must be a duration: a number of seconds or a string like '2s'")
    try:
        return duration(str(value))
    except ValueError as exc:
        raise fail(str(exc)) from None


def _token(entry: Any, fail: Any) -> str:
    """A check entry as its command-line form."""
    if isinstance(entry, str):
        if not entry.strip():
            raise fail("an empty check")
        return entry
    if not isinstance(entry, dict):
        raise fail('must be a string or an inline table {check = "...", ...}')
    name = entry.get("check")
    if not isinstance(name, str) or not name:
        raise fail('an inline table needs check = "NAME"')
    from torchprobe.engine.registry import builtin

    cls = builtin(name)
    repeatable = {o.key for o in cls.options if o.repeatable} if cls is not None else set()
    options: list[tuple[str, str]] = []
    for key, value in entry.items():
        if key == "check":
            continue
        if key in repeatable and isinstance(value, list):
            # header = ["A: 1", "B: 2"] is the option given twice, not a |-list.
            options += [(key, _value(v, key, fail)) for v in value]
        else:
            options.append((key, _value(value, key, fail)))
    try:
        # Written so that each value reads back as given (${NAME} still expands).
        return format_check(name, options, expand=True)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _value(value: Any, key: str, fail: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        text = "|".join(str(v) for v in value)
    else:
        raise fail(f"option {key!r}: a string, number, boolean or list of them")
    return text


def validate_config(path: str) -> None:
    """Resolve every profile of the file, so that any mistake in it surfaces."""
    tables = _tables(path)
    resolver = _Resolver(tables, path)
    for name, (_, source) in tables.items():
        if source == path:
            resolver.profile(name)
