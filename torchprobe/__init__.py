"""torchprobe: a health probe for PyTorch inference services.

The public API for writing checks lives in :mod:`torchprobe.base` and
:mod:`torchprobe.options`; it is re-exported here lazily so that
``import torchprobe`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_PUBLIC = {
    "Check": "torchprobe.base",
    "CheckFailed": "torchprobe.base",
    "CheckSkipped": "torchprobe.base",
    "Option": "torchprobe.base",
    "Outcome": "torchprobe.base",
    "Status": "torchprobe.base",
    "UsageError": "torchprobe.base",
    "failed": "torchprobe.base",
    "passed": "torchprobe.base",
    "skipped": "torchprobe.base",
    "options": "torchprobe.options",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'torchprobe' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module)
    return loaded if name == "options" else getattr(loaded, name)
