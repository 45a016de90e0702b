"""torchprobe: a health probe for PyTorch inference services.

The public API is what ``__all__`` names: for writing checks, the names of
:mod:`torchprobe.base` and the converters of :mod:`torchprobe.options`;
:func:`register_secret` for a secret a check finds at run time;
:func:`format_option` for tools that write CHECK arguments; the in-process
:class:`Monitor`. They are imported lazily so that ``import torchprobe`` stays
cheap for the command line. Everything else — the packages ``cli``,
``engine``, ``checks``, ``net``, ``gpu``, ``common``, ``inprocess``,
``renderers``, ``report`` — is internal (docs/architecture.md); the modules
``torchprobe.base``, ``torchprobe.options``, ``torchprobe.results``,
``torchprobe.monitor``, ``torchprobe.checks.server`` and
``torchprobe.integrations.*`` are public too.

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
    "Monitor": "torchprobe.inprocess.monitor",
    "format_option": "torchprobe.engine.spec",
    "register_secret": "torchprobe.common.scrub",
}
#: Public names whose attribute in their module is spelt otherwise.
_ATTRIBUTE = {"register_secret": "register"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> "Any":
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'torchprobe' has no attribute {name!r}")
    import importlib

    loaded = importlib.import_module(module)
    return loaded if name == "options" else getattr(loaded, _ATTRIBUTE.get(name, name))
