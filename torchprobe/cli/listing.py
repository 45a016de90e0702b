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

from torchprobe.engine.registry import describe
from torchprobe.engine.spec import UNIVERSAL

__all__ = ["describe", "entries", "render_list"]

#: How long one plugin may take to import for --list.
PLUGIN_DESCRIBE_TIMEOUT = 5.0


def _number(value: float) -> str:
    """A number as a user writes it: ``98``, not ``98.0``; ``0.01`` as given."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _shown(default: Any, type_name: str) -> str:
    """A default as it would be written on the command line: ``true``/``false``
    (the values the boolean converter reads), ``98`` and ``0.01``, and a
    duration with its unit, ``2s`` (the duration converter returns seconds)."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (int, float)):
        number = _number(float(default)) if isinstance(default, float) else str(default)
        return f"{number}s" if type_name == "duration" else number
    return str(default)


def entries() -> list[dict[str, Any]]:
    from torchprobe.engine import registry

    found = [describe(registry.load(ref), "built-in") for ref in registry.BUILTIN.values()]
    plugins = registry.plugins()
    if plugins:
        found += _describe_plugins(plugins)
    return found


def _describe_plugins(plugins: dict[str, str]) -> list[dict[str, Any]]:
    """Describe plugins in worker processes, one line each as it is ready; a
    plugin whose import hangs or crashes is listed as broken, and the ones
    after it are described by a fresh worker."""
    import selectors

    described: dict[str, dict[str, Any]] = {}
    todo = dict(plugins)
    while todo:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torchprobe.engine.worker", "--describe"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(todo))
        proc.stdin.close()
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while todo:
                if not selector.select(timeout=PLUGIN_DESCRIBE_TIMEOUT):
                    problem = f"timed out after {PLUGIN_DESCRIBE_TIMEOUT:g}s while loading"
                    break
                line = proc.stdout.readline()
                if not line:
                    problem = "its process ended while loading it"
                    break
                entry = json.loads(line)
                described[entry["name"]] = entry
                todo.pop(entry["name"], None)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if todo:
            name, reference = next(iter(todo.items()))
            described[name] = {
                "name": name, "source": f"plugin {reference}", "description": "",
                "options": [], "timeout": None, "runs_in": "worker process",
                "error": f"plugin failed to load: {problem}",
            }  # fmt: skip
            todo.pop(name)
    return [described[name] for name in plugins]


def render_list(found: list[dict[str, Any]], fp: TextIO, fmt: str) -> None:
    if fmt == "json":
        universal = [{"key": o.key, "type": o.type_name, "help": o.help} for o in UNIVERSAL]
        from torchprobe.common.jsonout import dumps

        fp.write(dumps({"universal_options": universal, "checks": found}, indent=2))
        fp.write("\n")
        return
    out = [
        "A CHECK is NAME[:KEY=VALUE[,KEY=VALUE...]]. A comma starts an option only outside "
        "brackets and double quotes and before KEY=, which must be one of the KEYs below; "
        "\\, is a literal comma.",
        "Every check also takes: " + ", ".join(f"{o.key}= ({o.help})" for o in UNIVERSAL),
        "",
    ]
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
                flags.append(f"default {_shown(o['default'], o['type'])}")
            if o.get("repeatable"):
                flags.append("repeatable")
            if o.get("secret"):
                flags.append("secret")
            help_ = f"  {o['help']}" if o.get("help") else ""
            out.append(f"    {o['key']}=  ({', '.join(flags)}){help_}")
        out.append("")
    fp.write("\n".join(out))
