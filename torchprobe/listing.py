"""``torchprobe --list``: every registered check with its options.

Built-in checks are described from their classes here. Plugins are described
by a worker process, because their code is never imported in the torchprobe
process (a plugin that hangs at import must not hang ``--list``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, TextIO

from .base import Check
from .spec import UNIVERSAL

__all__ = ["describe", "entries", "render_list"]

PLUGIN_DESCRIBE_TIMEOUT = 10.0


def _default(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)
    return str(value)


def describe(cls: type[Check], source: str) -> dict[str, Any]:
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


def entries() -> list[dict[str, Any]]:
    from . import registry

    found = [describe(registry.load(ref), "built-in") for ref in registry.BUILTIN.values()]
    plugins = registry.plugins()
    if plugins:
        found += _describe_plugins(plugins)
    return found


def _describe_plugins(plugins: dict[str, str]) -> list[dict[str, Any]]:
    request = json.dumps(plugins)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchprobe.worker", "--describe"],
            input=request, capture_output=True, text=True, timeout=PLUGIN_DESCRIBE_TIMEOUT,
        )  # fmt: skip
        described: list[dict[str, Any]] = json.loads(done.stdout)
        return described
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        reason = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else str(exc)
        return [
            {"name": name, "source": f"plugin {ref}", "error": f"could not describe: {reason}",
             "description": "", "options": [], "timeout": None, "runs_in": "worker process"}
            for name, ref in plugins.items()
        ]  # fmt: skip


def render_list(found: list[dict[str, Any]], fp: TextIO, fmt: str) -> None:
    if fmt == "json":
        universal = [{"key": o.key, "type": o.type_name, "help": o.help} for o in UNIVERSAL]
        json.dump({"universal_options": universal, "checks": found}, fp, indent=2)
        fp.write("\n")
        return
    out = ["Every check also takes: " + ", ".join(f"{o.key}= ({o.help})" for o in UNIVERSAL), ""]
    for entry in found:
        timeout = entry.get("timeout")
        where = f"{entry['source']}; default timeout {timeout:g}s" if timeout else entry["source"]
        out.append(f"{entry['name']}  —  {entry.get('description') or ''}  [{where}]")
        if entry.get("error"):
            out.append(f"    ! {entry['error']}")
        for o in entry.get("options", ()):
            flags = [o["type"]]
            if o.get("required"):
                flags.append("required")
            elif o.get("default") not in (None, "", []):
                flags.append(f"default {o['default']}")
            if o.get("repeatable"):
                flags.append("repeatable")
            if o.get("secret"):
                flags.append("secret")
            help_ = f"  {o['help']}" if o.get("help") else ""
            out.append(f"    {o['key']}=  ({', '.join(flags)}){help_}")
        out.append("")
    fp.write("\n".join(out))
