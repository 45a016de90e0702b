"""Reading examples/grafana/torchprobe.json: its panels, its PromQL, and the
series torchprobe writes, for the structural test (tests/test_grafana_dashboard.py)
and the one that evaluates every query in a real Prometheus
(tests/test_prometheus_scrape.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana" / "torchprobe.json"

#: Grafana's own interval variables, with what a 6 h dashboard at a 1 s
#: scrape interval would make of them (any range of at least 4 scrapes works).
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, a row's nested ones (a collapsed row keeps them) included."""
    for panel in document.get("panels", []):
        yield panel
        yield from panels(panel)


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query: a string, or the object newer Grafana writes."""
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or "")


def expressions(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable; a
    ``label_values(SELECTOR, label)`` variable gives its selector, which is
    what Grafana sends to Prometheus (as a series match)."""
    found = [(f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", str(t["expr"]))
             for p in panels(document) for t in p.get("targets", []) if "expr" in t]  # fmt: skip
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable_query(variable)
        selector = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query, re.S)
        found.append((f"variable {variable['name']}", selector.group(1) if selector else query))
    return found


def variables(document: Mapping[str, Any]) -> list[str]:
    return [str(v["name"]) for v in document.get("templating", {}).get("list", [])]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with each ``$name`` / ``${name}`` / ``[[name]]``: ``.*`` in a
    ``=~`` / ``!~`` matcher (what "All" sends, the variables' allValue), else
    ``values[name]`` (Grafana's interval variables from BUILTINS)."""
    known = {**BUILTINS, **values}
    pattern = (r'(?P<regex>[=!]~\s*)"\$(?:\{(?P<a>\w+)\}|(?P<b>\w+))"'
               r"|\$\{(?P<c>\w+)\}|\$(?P<d>\w+)|\[\[(?P<e>\w+)\]\]")  # fmt: skip

    def one(match: re.Match[str]) -> str:
        if match.group("regex"):
            return f'{match.group("regex")}".*"'
        name = next(g for g in match.group("c", "d", "e") if g)
        if name not in known:
            raise KeyError(f"${name} has no value to substitute in {expr!r}")
        return known[name]

    return re.sub(pattern, one, expr)


def series_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(torchprobe_\w+|node_\w+)", expr))


def written_series() -> set[str]:
    """Every series torchprobe writes: the monitor's /metrics families (a
    counter with its _total), the --format prometheus renderer's, and the
    sidecar's torchprobe_serve_* families, all read from the code."""
    from torchprobe.integrations.metrics import families

    written = {f"{f.name}_total" if f.kind == "counter" else f.name for f in families([], False)}
    renderer = (ROOT / "torchprobe" / "renderers" / "prometheus.py").read_text()
    written |= set(re.findall(r"\b(torchprobe_\w+)", renderer))
    sidecar = (ROOT / "torchprobe" / "serve" / "app.py").read_text()
    written |= set(re.findall(r"\b(torchprobe_serve_\w+)", sidecar))
    return written
