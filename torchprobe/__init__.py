"""torchprobe: a health probe for PyTorch inference services.

The public API for writing checks lives in :mod:`torchprobe.base` and
:mod:`torchprobe.options`; it is re-exported here lazily so that
``import torchprobe`` stays cheap for the command line.

This module imports nothing at all: the console script's entry point
(:mod:`torchprobe._entry`) is imported through it and installs its signal
handlers as its first act, so nothing may run before that.
"""

TYPE_CHECKING = False  # typing's own constant would cost an import of typing
if TYPE_CHECKING:
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


def __getattr__(name: str) -> "Any":
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'torchprobe' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module)
    return loaded if name == "options" else getattr(loaded, name)
