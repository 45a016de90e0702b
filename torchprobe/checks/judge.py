"""How the checks judge an HTTP answer: its status and the JSON in its body.

A library among the checks, not a check (no ``Check`` here, nothing in the
registry). The ``http`` check (``status=``, ``json=``), the model-server
presets (:mod:`torchprobe.checks.server`: the JSON an endpoint must carry) and
``infer=`` (:mod:`torchprobe.checks.canary`: ``expect=``) judge answers by the
same rules and in the same words, so the rules live once, here. They are not
in :mod:`torchprobe.net`: the network layer gets an answer under a deadline and
says nothing of whether it is good; what a status or a JSON value means, and
the option syntax that says so (``2xx|301``, ``a.b.0=true``), is the checks'.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torchprobe.common.scrub import clip

if TYPE_CHECKING:
    from torchprobe.net.wire import Response

__all__ = [
    "JsonOption", "StatusOption", "json_at", "json_body", "json_equals", "json_mismatch",
    "status_accepted",
]  # fmt: skip

_STATUS = re.compile(r"([1-5])(?:xx|\d\d)", re.I)


class StatusOption:
    """Accepted statuses, ``200|204`` or ``2xx|301``, as a tuple like ``("2xx", "301")``."""

    type_name = "code|Nxx[|...]"

    def __call__(self, value: str) -> tuple[str, ...]:
        accepted = tuple(part.strip().lower() for part in value.split("|"))
        for part in accepted:
            if not _STATUS.fullmatch(part):
                raise ValueError(f"{part!r} is not a status code (100-599) or class (2xx)")
        return accepted


class JsonOption:
    """``PATH=VALUE``: the value at a dotted path of the JSON body (``a.b.0.c``)."""

    type_name = "PATH=VALUE"

    def __call__(self, value: str) -> tuple[tuple[str, ...], str]:
        path, equals, expected = value.partition("=")
        path = path.strip()
        if not equals or not path:
            raise ValueError("expected PATH=VALUE, like json=status=Healthy or json=a.b=true")
        parts = tuple(path.split("."))
        if any(not p for p in parts):
            raise ValueError(f"{path!r} has an empty step (a.b.c)")
        return parts, expected


def status_accepted(status: int, accepted: tuple[str, ...]) -> bool:
    return any(p == str(status) or p == f"{status // 100}xx" for p in accepted)


def json_body(response: Response) -> Any:
    """The body as JSON; ``ValueError`` says, in a few words, why it is not."""
    import json

    if response.truncated:
        raise ValueError(
            f"the body exceeds {len(response.body) // 1024} KiB and cannot be read as JSON"
        )
    try:
        return json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        from torchprobe.net.wire import preview

        raise ValueError(f"the body is not JSON: {preview(response.body, 40)}") from None


def json_at(document: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """(found, value) at a dotted path; a step into a list is an index."""
    value = document
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif (
            isinstance(value, list)
            and step.lstrip("-").isdigit()
            and -len(value) <= int(step) < len(value)
        ):
            value = value[int(step)]
        else:
            return False, None
    return True, value


def json_equals(actual: Any, expected: str) -> bool:
    """Whether a JSON value reads as ``expected``: ``true``, ``null``, ``2`` or text."""
    if isinstance(actual, bool):
        return expected.strip().lower() == str(actual).lower()
    if actual is None:
        return expected.strip() == "null"
    if isinstance(actual, (int, float)):
        try:
            return float(expected) == actual
        except ValueError:
            return False
    if isinstance(actual, str):
        return actual == expected
    import json

    try:
        return bool(json.loads(expected) == actual)
    except ValueError:
        return False


def json_mismatch(document: Any, path: Sequence[str], expected: str) -> str | None:
    """None when the value at ``path`` reads as ``expected``, else what was found."""
    import json

    dotted = ".".join(path)
    found, actual = json_at(document, path)
    if not found:
        return f"the JSON has no {dotted!r} (expected {expected!r})"
    if json_equals(actual, expected):
        return None
    shown = json.dumps(actual, ensure_ascii=True)
    shown = clip(shown, 60)
    return f"JSON {dotted} is {shown} (expected {expected!r})"
