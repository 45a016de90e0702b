"""Where checks come from: the built-ins, and plugins under the entry-point
group ``torchprobe.checks``.

The registry is plain data: a name maps to a ``module:attribute`` reference.
Built-in modules are imported only for the checks a run names (they import
nothing heavy at module level). Plugin discovery reads the installed
distributions' metadata, which costs tens of milliseconds, so it happens only
when a name is not a built-in or when ``--list`` asks for everything; a
plugin's own code is imported only inside a worker process.
"""

from __future__ import annotations

import importlib
from typing import Any

from torchprobe.base import Check, UsageError

__all__ = [
    "BUILTIN",
    "DEFAULT_SET",
    "GROUP",
    "RESERVED",
    "builtin",
    "describe",
    "load",
    "plugins",
    "reserved_error",
    "reset",
]

GROUP = "torchprobe.checks"

BUILTIN: dict[str, str] = {
    "cuda": "torchprobe.checks.cuda:CudaCheck",
    "tensor": "torchprobe.checks.tensor:TensorCheck",
    "nvml": "torchprobe.checks.nvml:NvmlCheck",
    "http": "torchprobe.checks.http:HttpCheck",
    "tcp": "torchprobe.checks.tcp:TcpCheck",
    "status-file": "torchprobe.checks.status_file:StatusFileCheck",
    "progress": "torchprobe.checks.progress:ProgressCheck",
    # Model-server presets (torchprobe.checks.presets) and gRPC health.
    "torchserve": "torchprobe.checks.presets:TorchServe",
    "triton": "torchprobe.checks.presets:Triton",
    "kserve": "torchprobe.checks.presets:KServe",
    "vllm": "torchprobe.checks.presets:VLLM",
    "tgi": "torchprobe.checks.presets:TGI",
    "sglang": "torchprobe.checks.presets:SGLang",
    "ray": "torchprobe.checks.presets:RayServe",
    "bentoml": "torchprobe.checks.presets:BentoML",
    "litserve": "torchprobe.checks.presets:LitServe",
    "ollama": "torchprobe.checks.presets:Ollama",
    "grpc": "torchprobe.checks.grpc_health:GrpcHealthCheck",
}

DEFAULT_SET: tuple[str, ...] = ("cuda", "tensor", "nvml")

#: Words of the command line that no check or plugin may be named: ``torchprobe
#: serve`` is the sidecar, so a check named so could never be run alone.
RESERVED = frozenset({"serve"})

_plugins: dict[str, str] | None = None


def load(reference: str) -> Any:
    """Import ``module:attribute`` and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else ():
        target = getattr(target, part)
    return target


def builtin(name: str) -> type[Check] | None:
    reference = BUILTIN.get(name)
    return load(reference) if reference else None


def plugins() -> dict[str, str]:
    """Entry points of the group ``torchprobe.checks``: name -> ``module:attr``.

    A plugin cannot shadow a built-in: the built-in wins.
    """
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        found: dict[str, str] = {}
        for entry_point in entry_points(group=GROUP):
            if entry_point.name not in BUILTIN and entry_point.name not in RESERVED:
                found.setdefault(entry_point.name, entry_point.value)
        _plugins = found
    return _plugins


def reserved_error(name: str) -> UsageError:
    """The usage error of a check named by a reserved word, saying which plugin
    claims it when one does."""
    from importlib.metadata import entry_points

    claimed = [ep.value for ep in entry_points(group=GROUP) if ep.name == name]
    why = (f"; the installed plugin {claimed[0]} registers it under the entry-point group "
           f"{GROUP}: rename that entry point" if claimed else "")  # fmt: skip
    return UsageError(
        f"{name!r} is reserved (torchprobe {name} is a command of its own): "
        f"no check or plugin may be named so{why}"
    )


def reset(found: dict[str, str] | None = None) -> None:
    """Forget (or replace) discovered plugins; for tests."""
    global _plugins
    _plugins = found


def _default(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)
    return str(value)


def describe(cls: type[Check], source: str) -> dict[str, Any]:
    """A check class's declaration as ``--list`` shows it (JSON-able)."""
    return {
        "name": cls.name,
        "description": cls.description,
        "source": source,
        "timeout": cls.timeout,
        "runs_in": "worker process"
        if cls.worker is not None or source != "built-in"
        else "torchprobe process",
        "options": [
            {
                "key": o.key,
                "type": o.type_name,
                "default": _default(o.default),
                "required": o.required,
                "repeatable": o.repeatable,
                "secret": o.secret,
                "help": o.help,
            }
            for o in cls.options
        ],
    }
