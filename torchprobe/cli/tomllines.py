"""Where a profile's keys and check entries are in its TOML file, for messages.

tomllib gives values, not positions; this reads the text just far enough to
name the line: a top-level key, a ``profiles.NAME`` that is not a table, the
``[profiles.NAME]`` table, a ``KEY =`` inside it, and the N-th entry of its
``checks`` array (strings and inline tables, over lines). A layout it does
not know (a profile written as dotted keys) gives no line rather than a
wrong one.
"""

from __future__ import annotations

import re

__all__ = ["Lines"]

_HEADER = re.compile(r"""^\s*\[\[?\s*[^\[\]=]*\]\]?\s*(?:#.*)?$""")


class Lines:
    """The lines of one TOML file (undecodable bytes replaced; none if unreadable)."""

    def __init__(self, path: str) -> None:
        from torchprobe.common.safeio import CONFIG_CAP, read_regular

        try:
            self.lines = read_regular(path, CONFIG_CAP).decode("utf-8", "replace").splitlines()
        except OSError:
            self.lines = []

    def top(self, key: str) -> str:
        """' (line N)' where top-level ``key`` is set or its table opens, or ''."""
        name = _name(key)
        assigned = re.compile(rf"^\s*{name}\s*[=.]")
        opened = re.compile(rf"^\s*\[\[?\s*{name}\s*[\].]")
        in_table = False
        for number, line in enumerate(self.lines):
            if opened.match(line) or (not in_table and assigned.match(line)):
                return f" (line {number + 1})"
            in_table = in_table or bool(_HEADER.match(line))
        return ""

    def member(self, profile: str) -> str:
        """' (line N)' where ``profiles.PROFILE`` is set to a value, or ''."""
        name = _name(profile)
        dotted = re.compile(rf"^\s*{_name('profiles')}\s*\.\s*{name}\s*=")
        in_profiles = False
        for number, line in enumerate(self.lines):
            if _HEADER.match(line):
                in_profiles = re.match(rf"^\s*\[\s*{_name('profiles')}\s*\]", line) is not None
            elif dotted.match(line) or (in_profiles and re.match(rf"^\s*{name}\s*=", line)):
                return f" (line {number + 1})"
        return ""

    def _table(self, profile: str) -> tuple[int, int] | None:
        start = re.compile(rf"^\s*\[\s*profiles\s*\.\s*{_name(profile)}\s*\]")
        for number, line in enumerate(self.lines):
            if start.match(line):
                end = number + 1
                while end < len(self.lines) and not _HEADER.match(self.lines[end]):
                    end += 1
                return number, end
        return None

    def _key(self, profile: str, key: str) -> int | None:
        found = self._table(profile)
        if found is None:
            return None
        pattern = re.compile(rf"^\s*{_name(key)}\s*=")
        for number in range(found[0] + 1, found[1]):
            if pattern.match(self.lines[number]):
                return number
        return None

    def key(self, profile: str, key: str) -> str:
        """' (line N)' of ``KEY =`` in the profile's table, or ''."""
        number = self._key(profile, key)
        return "" if number is None else f" (line {number + 1})"

    def entry(self, profile: str, index: int) -> str:
        """' (line N)' where entry ``index`` of the profile's ``checks`` starts, or ''."""
        number = self._key(profile, "checks")
        if number is None:
            return ""
        text = "\n".join(self.lines[number:])
        start = text.index("=") + 1
        line = number + 1
        for at, seen in _elements(text, start):
            if seen == index:
                return f" (line {line + text.count(chr(10), 0, at)})"
        return ""


def _name(key: str) -> str:
    """A regex for ``key`` as TOML writes it: bare, "quoted" or 'literal'."""
    name = re.escape(key)
    return f"""(?:{name}|"{name}"|'{name}')"""


def _elements(text: str, start: int) -> list[tuple[int, int]]:
    """(offset, index) of each top-level element of the array after ``start``."""
    found: list[tuple[int, int]] = []
    depth = 0
    expecting = False
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "#":
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        if depth == 1 and expecting and ch not in " \t\r\n,]":
            found.append((i, len(found)))
            expecting = False
        if ch in "\"'":
            i = _skip_string(text, i)
            continue
        if ch in "[{":
            depth += 1
            expecting = depth == 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                break
        elif ch == "," and depth == 1:
            expecting = True
        i += 1
    return found


def _skip_string(text: str, i: int) -> int:
    """The offset just after the TOML string that starts at ``i``."""
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    end_mark = quote * 3 if triple else quote
    j = i + len(end_mark)
    while j < len(text):
        if quote == '"' and text[j] == "\\":
            j += 2
            continue
        if text.startswith(end_mark, j):
            return j + len(end_mark)
        if not triple and text[j] == "\n":
            return j
        j += 1
    return j
