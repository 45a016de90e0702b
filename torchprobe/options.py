"""Value types for check options and flags.

Each is a callable that turns the text after ``KEY=`` into a value, raising
``ValueError`` with a short reason when it cannot. ``type_name`` is what
``--list`` shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["boolean", "choice", "duration", "integer", "listof", "number", "text"]

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}
#: The longest duration: no deadline, wait or age a probe keeps is longer than a day.
MAX_DURATION = 86400.0


def _typed(name: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    def mark(fn: Callable[[str], T]) -> Callable[[str], T]:
        fn.type_name = name  # type: ignore[attr-defined]
        return fn

    return mark


@_typed("text")
def text(value: str) -> str:
    return value


@_typed("duration")
def duration(value: str) -> float:
    """``2``, ``2.5``, ``500ms``, ``2s``, ``1m``: seconds, greater than zero."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{_short(value)} is not a duration (e.g. 2, 2.5, 500ms, 2s, 1m)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{_short(value)}: a duration must be greater than zero")
    if not seconds <= MAX_DURATION:  # 400 digits read as inf
        raise ValueError(f"{_short(value)}: a duration is at most {MAX_DURATION:g}s (a day)")
    return seconds


def _short(value: str) -> str:
    """A value for a message: a hostile one can be thousands of characters long."""
    return repr(value) if len(value) <= 40 else f"{value[:20]!r}...({len(value)} characters)"


@_typed("true|false")
def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"{value!r} is not a boolean (true or false)")


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    @_typed("integer")
    def parse(value: str) -> int:
        try:
            number_ = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        _bounds(value, number_, minimum, maximum)
        return number_

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    @_typed("number")
    def parse(value: str) -> float:
        try:
            number_ = float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if number_ != number_ or number_ in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a finite number")
        _bounds(value, number_, minimum, maximum)
        return number_

    return parse


def choice(*values: str) -> Callable[[str], str]:
    @_typed("|".join(values))
    def parse(value: str) -> str:
        if value not in values:
            raise ValueError(f"{value!r} is not one of {', '.join(values)}")
        return value

    return parse


def listof(item: Callable[[str], T], *, unique: bool = False) -> Callable[[str], list[T]]:
    """A ``|``-separated list: ``status=200|204``. With ``unique`` an item may
    not be given twice (a device probed twice would be two identical lines)."""

    @_typed(f"{getattr(item, 'type_name', 'text')}[|...]")
    def parse(value: str) -> list[T]:
        parts = value.split("|")
        if any(not p.strip() for p in parts):
            raise ValueError(f"{value!r} has an empty item")
        items = [item(p.strip()) for p in parts]
        if unique:
            for index, one in enumerate(items):
                if one in items[:index]:
                    raise ValueError(f"{value!r} names {parts[index].strip()!r} twice")
        return items

    return parse


def _bounds(text_: str, value: Any, minimum: Any, maximum: Any) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"{text_!r} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{text_!r} is above the maximum {maximum}")
