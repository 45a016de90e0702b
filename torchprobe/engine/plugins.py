"""Third-party checks, registered under the entry-point group ``torchprobe.checks``.

The entry point's name is the check's name. It may point at

- a :class:`~torchprobe.base.Check` subclass (the rich API the built-ins use:
  declared options, default timeout, structured outcomes), or
- a plain function taking the options as keyword arguments, as strings
  (``max-memory`` arrives as ``max_memory``). Returning normally passes (a
  returned string is the message); raising fails with the exception's message.
  A parameter without a default is a required option; ``**kwargs`` accepts
  any key. The engine consumes ``name`` and ``timeout`` itself. The function's
  docstring's first line is its description in ``--list``; a ``timeout``
  attribute on the function (seconds) sets its default timeout. A
  ``readiness`` attribute says whether it checks readiness: ``True``, or a
  function of the same keyword options returning a bool; without one it is a
  liveness check (``--restart-after`` accepts it).

A Check subclass says it by overriding :meth:`~torchprobe.base.Check.checks_readiness`.

Plugin code is imported only in a worker process, never in the torchprobe
process: a plugin that hangs, crashes or fails to import cannot take the probe
down with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from torchprobe.base import Check, Option, Outcome
from torchprobe.engine.registry import load
from torchprobe.options import text

__all__ = ["load_plugin", "function_check"]


def load_plugin(name: str, reference: str) -> type[Check]:
    """Import a plugin and return its check class (a function is wrapped)."""
    target = load(reference)
    if isinstance(target, type) and issubclass(target, Check):
        cls: type[Check] = target
        if not cls.name:
            cls = type(cls.__name__, (cls,), {"name": name})
        return cls
    if callable(target):
        return function_check(name, target)
    raise TypeError(f"{reference} is neither a Check subclass nor a function")


def function_check(name: str, function: Callable[..., Any]) -> type[Check]:
    """Wrap a plain function as a check whose options are its keyword parameters."""
    options: list[Option] = []
    accept_any = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            accept_any = True
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            if parameter.default is inspect.Parameter.empty and parameter.kind is not (
                inspect.Parameter.VAR_POSITIONAL
            ):
                raise TypeError(
                    f"{function.__qualname__}: positional-only parameter "
                    f"{parameter.name!r} cannot be given as KEY=VALUE"
                )
            continue
        if parameter.name in ("name", "timeout"):
            continue
        required = parameter.default is inspect.Parameter.empty
        options.append(
            Option(
                parameter.name.replace("_", "-"),
                text,
                default=None if required else parameter.default,
                required=required,
            )
        )
    doc = (inspect.getdoc(function) or "").strip().splitlines()
    attributes: dict[str, Any] = {
        "name": name,
        "description": doc[0] if doc else "",
        "options": tuple(options),
        "accept_any": accept_any,
        "function": staticmethod(function),
        "__init__": _function_init,
        "run": _function_run,
        "__module__": getattr(function, "__module__", __name__),
    }
    readiness = getattr(function, "readiness", False)
    if readiness is not False:
        attributes["checks_readiness"] = _function_readiness(readiness)
    if isinstance(getattr(function, "timeout", None), (int, float)):
        attributes["timeout"] = float(function.timeout)  # type: ignore[attr-defined]
    return type(f"{function.__name__}_check", (Check,), attributes)


def _function_readiness(declared: Any) -> Callable[[Any], bool]:
    def checks_readiness(self: Any) -> bool:
        if not callable(declared):
            return bool(declared)
        kwargs = {option.attr: getattr(self, option.attr) for option in self.options}
        kwargs.update(self.extra)
        return bool(declared(**kwargs))

    return checks_readiness


def _function_init(self: Any, **values: Any) -> None:
    declared = {option.attr for option in self.options}
    self.extra = {k: values.pop(k) for k in list(values) if k not in declared and k != "timeout"}
    Check.__init__(self, **values)


def _function_run(self: Any) -> str | None | Outcome | Iterable[Outcome]:
    kwargs = {option.attr: getattr(self, option.attr) for option in self.options}
    kwargs.update(self.extra)
    result: str | None | Outcome | Iterable[Outcome] = self.function(**kwargs)
    return result
