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
import re
import sys
from collections.abc import Mapping
from typing import Any

from .base import UsageError
from .options import duration

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
_FORMATS = ("text", "json", "prometheus")


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
    from .safeio import CONFIG_CAP, read_regular

    try:
        data: dict[str, Any] = tomllib.loads(read_regular(path, CONFIG_CAP).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}): not a TOML file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    return data


def _line_of(path: str, *needles: str) -> str:
    """' (line N)' for the first line holding every needle, where there is one."""
    from .safeio import CONFIG_CAP, read_regular

    try:
        text = read_regular(path, CONFIG_CAP).decode("utf-8", "replace")
    except OSError:
        return ""
    for number, line in enumerate(text.splitlines(), 1):
        if all(n in line for n in needles):
            return f" (line {number})"
    return ""


def load_profile(name: str, path: str | None) -> Profile:
    """Resolve profile ``name`` from the file at ``path`` (None: built-ins only)."""
    tables: dict[str, tuple[dict[str, Any], str]] = {
        k: (v, "built-in") for k, v in BUILTIN_PROFILES.items()
    }
    if path is not None:
        data = _read(path)
        for key in data:
            if key != "profiles":
                raise UsageError(f"{path}: unknown key {key!r}{_line_of(path, key)} "
                                 "(the file holds [profiles.NAME] tables)")  # fmt: skip
        profiles = data.get("profiles", {})
        if not isinstance(profiles, dict):
            raise UsageError(f"{path}: 'profiles' must be a table of tables")
        for key, table in profiles.items():
            if not isinstance(table, dict):
                raise UsageError(f"{path}: profiles.{key} must be a table{_line_of(path, key)}")
            tables[key] = (table, path)
    if name not in tables:
        known = ", ".join(sorted(tables))
        raise UsageError(f"unknown profile {name!r} (profiles: {known})")
    return _resolve(name, tables, [])


def _resolve(name: str, tables: dict[str, tuple[dict[str, Any], str]], stack: list[str]) -> Profile:
    table, source = tables[name]
    if name in stack:
        chain = " -> ".join([*stack, name])
        raise UsageError(f"{source}: profile {name!r} includes itself: {chain}")
    where = f"{source}: profiles.{name}" if source != "built-in" else f"built-in profile {name!r}"

    def fail(key: str, message: str) -> UsageError:
        line = _line_of(source, key) if source != "built-in" else ""
        return UsageError(f"{where}.{key}{line}: {message}")

    for key in table:
        if key not in _PROFILE_KEYS:
            raise fail(key, f"unknown key (keys: {', '.join(sorted(_PROFILE_KEYS))})")
    checks: list[str] = []
    timeout: float | None = None
    fmt: str | None = None
    include = table.get("include", [])
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise fail("include", "must be a list of profile names")
    for included in include:
        if included not in tables:
            raise fail("include", f"unknown profile {included!r}")
        inner = _resolve(included, tables, [*stack, name])
        checks += inner.checks
        timeout = inner.timeout if timeout is None else timeout
        fmt = inner.format if fmt is None else fmt
    entries = table.get("checks", [])
    if not isinstance(entries, list):
        raise fail("checks", "must be a list")
    from .plan import plan

    for index, entry in enumerate(entries):
        token = _token(entry, lambda m, i=index: fail(f"checks[{i}]", m))
        try:
            plan([token], os.environ)  # an unknown check or a bad value names its place
        except UsageError as exc:
            line = _line_of(source, token.split(":", 1)[0]) if source != "built-in" else ""
            raise UsageError(f"{where}.checks[{index}]{line}: {exc}") from None
        checks.append(token)
    if "timeout" in table:
        timeout = _timeout(table["timeout"], lambda m: fail("timeout", m))
    if "format" in table:
        if table["format"] not in _FORMATS:
            raise fail("format", f"{table['format']!r} is not one of {', '.join(_FORMATS)}")
        fmt = table["format"]
    if not checks:
        raise fail("checks", "the profile has no checks")
    return Profile(name, checks, timeout, fmt, source)


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
    from .registry import builtin

    cls = builtin(name)
    repeatable = {o.key for o in cls.options if o.repeatable} if cls is not None else set()
    options = []
    for key, value in entry.items():
        if key == "check":
            continue
        if key in repeatable and isinstance(value, list):
            # header = ["A: 1", "B: 2"] is the option given twice, not a |-list.
            options += [f"{key}={_value(v, key, fail)}" for v in value]
        else:
            options.append(f"{key}={_value(value, key, fail)}")
    return f"{name}:{','.join(options)}" if options else name


def _value(value: Any, key: str, fail: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, str)):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        text = "|".join(str(v) for v in value)
    else:
        raise fail(f"option {key!r}: a string, number, boolean or list of them")
    # A comma inside a value must not start another option.
    return re.sub(r",", r"\\,", text)


def validate_config(path: str) -> None:
    """Resolve every profile of the file, so that any mistake in it surfaces."""
    data = _read(path)
    profiles = data.get("profiles", {})
    for name in profiles if isinstance(profiles, dict) else ():
        load_profile(name, path)
    if not isinstance(profiles, dict) or set(data) - {"profiles"}:
        load_profile(next(iter(BUILTIN_PROFILES)), path)  # raises the file's own error
