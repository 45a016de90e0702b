"""The one way torchprobe writes JSON: strict, and scrubbed of secrets.

Strict: a non-finite float (NaN, ±Infinity — a plugin's NaN, a status file's
``1e999``) is written as ``null``, because Python's ``json`` would write the
bare words ``NaN`` and ``Infinity``, which are not JSON: JavaScript's
``JSON.parse`` and Go's ``encoding/json`` reject the whole document. Any other
value JSON has no type for is written as its ``str()``. The result always
parses with ``json.loads(text, parse_constant=<raise>)``.

Scrubbed: strings (keys too) pass through :func:`torchprobe.common.scrub.clean_tree`
before encoding, so a secret inside a value never has to be masked in the
encoded text, where masking could break the syntax.
"""

from __future__ import annotations

import json
import math
from typing import Any

from torchprobe.common.scrub import clean_tree

__all__ = ["dumps", "finite"]


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, as plain JSON types."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [finite(v) for v in value]
    return str(value)


def dumps(value: Any, *, indent: int | None = None,
          separators: tuple[str, str] | None = None) -> str:  # fmt: skip
    return json.dumps(clean_tree(finite(value)), indent=indent, separators=separators,
                      allow_nan=False)  # fmt: skip
