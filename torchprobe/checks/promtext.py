"""Reading a few series out of a Prometheus ``/metrics`` answer, within bounds.

A metric selector names a sample and, optionally, label matchers as PromQL
writes them: ``nv_inference_pending_request_count{model="m",version="1"}``,
with ``=``, ``!=``, ``=~`` and ``!~`` (a regex matches the whole value).
A counter matches with or without its ``_total`` suffix: Triton (prometheus-
cpp) and TGI (metrics-exporter-prometheus) write ``nv_inference_count``,
prometheus_client writes ``vllm:generation_tokens_total``, and
prometheus_client's own parser reads a ``# TYPE x counter`` sample ``x``
back as ``x_total``.

The body comes through the http check's client (one deadline, a size cap).
Before prometheus_client's text parser sees it, every line that cannot
belong to a selected metric is dropped, so a huge or hostile body costs a
scan of its lines, never a parse of all of it; a value that is not a finite
number is left out.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torchprobe.base import CheckFailed, UsageError

__all__ = ["METRICS_LIMIT", "Selector", "need_parser", "parse_selector", "read_series"]

#: At most this much of a metrics answer is read: room for a server with
#: thousands of models. Scanning 8 MiB of lines of other metrics took 0.43 s
#: (Python 3.11, one core of a shared 2-core machine).
METRICS_LIMIT = 8 * 1024 * 1024

#: At most this many lines of the selected metrics are parsed: prometheus_client
#: 0.26 parsed 127,000 such lines in 4.6 s on that machine, so 10,000 cost about
#: 0.4 s; Triton with 1,000 models writes 4,000 of them.
SERIES_LIMIT = 10_000
#: A longer line is no sample of a real server (their longest: label values of
#: a few hundred bytes) and is dropped unread.
LINE_LIMIT = 16 * 1024

_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
_SELECTOR = re.compile(rf"\s*({_NAME})\s*(?:\{{(.*)\}})?\s*", re.S)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op in ("=", "!="):
            return (actual == self.value) == (self.op == "=")
        found = re.fullmatch(self.value, actual) is not None
        return found == (self.op == "=~")


@dataclass(frozen=True)
class Selector:
    """One metric name and the label matchers a sample must satisfy."""

    name: str
    matchers: tuple[Matcher, ...] = ()
    text: str = ""

    @property
    def names(self) -> frozenset[str]:
        """The sample names that are this metric (with and without ``_total``)."""
        base = self.name[:-6] if self.name.endswith("_total") else self.name
        return frozenset({self.name, base, base + "_total"})

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return name in self.names and all(m.matches(labels) for m in self.matchers)

    def where(self, **labels: str) -> Selector:
        """This selector with ``label="value"`` matchers added."""
        added = tuple(Matcher(k, "=", v) for k, v in labels.items())
        inner = ",".join(f'{m.label}{m.op}"{m.value}"' for m in (*self.matchers, *added))
        return Selector(self.name, (*self.matchers, *added), f"{self.name}{{{inner}}}")

    def __str__(self) -> str:
        return self.text or self.name


def parse_selector(value: str) -> Selector:
    """``NAME`` or ``NAME{label="v",...}``; ValueError says what is wrong."""
    match = _SELECTOR.fullmatch(value)
    if match is None:
        raise ValueError(f'{value!r} is not a metric like name or name{{label="value"}}')
    name, inner = match.group(1), match.group(2)
    matchers: list[Matcher] = []
    rest = (inner or "").strip()
    while rest:
        found = _MATCHER.match(rest)
        if found is None:
            raise ValueError(f'{value!r}: bad label matcher at {rest[:30]!r} (label="value")')
        label, op, quoted = found.groups()
        text = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], quoted)
        if op in ("=~", "!~"):
            try:
                re.compile(text)
            except re.error as exc:
                raise ValueError(f"{value!r}: bad regex {text!r}: {exc}") from None
        matchers.append(Matcher(label, op, text))
        rest = rest[found.end() :]
        if rest.startswith(","):
            rest = rest[1:].lstrip()
            if not rest:
                raise ValueError(f"{value!r}: a comma with no matcher after it")
        elif rest:
            raise ValueError(f"{value!r}: expected ',' between label matchers")
    return Selector(name, tuple(matchers), value.strip())


class _SelectorList:
    """Option converter: ``METRIC[|METRIC...]``."""

    type_name = "metric[|...]"

    def __call__(self, value: str) -> tuple[Selector, ...]:
        parts = _split_bars(value)
        if any(not p.strip() for p in parts):
            raise ValueError(f"{value!r} has an empty metric")
        return tuple(parse_selector(p) for p in parts)


def _split_bars(value: str) -> list[str]:
    """Split on ``|`` outside quotes and braces (a regex matcher may hold one)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch in "{}":
            depth += 1 if ch == "{" else -1
        elif ch == "|" and not quoted and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


selectors = _SelectorList()


def need_parser(what: str) -> None:
    """A usage error when prometheus_client is missing (found without importing it)."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise UsageError(f"{what} needs prometheus-client: pip install 'torchprobe[metrics]'")


def read_series(
    body: bytes, wanted: Sequence[Selector]
) -> dict[Selector, list[tuple[Labels, float]]]:
    """Each selector's samples in ``body``: (labels, value), finite values only.

    Raises CheckFailed when what belongs to the selected metrics does not parse.
    """
    from prometheus_client.parser import text_string_to_metric_families

    names = frozenset().union(*(s.names for s in wanted)) if wanted else frozenset()
    lines = []
    for line in _relevant(body, names):
        lines.append(line)
        if len(lines) > SERIES_LIMIT:
            raise CheckFailed(f"more than {SERIES_LIMIT} lines of the selected metrics")
    kept = "\n".join(lines) + "\n"
    found: dict[Selector, list[tuple[Labels, float]]] = {s: [] for s in wanted}
    seen: set[tuple[str, Labels]] = set()
    try:
        for family in text_string_to_metric_families(kept):
            for sample in family.samples:
                if not isinstance(sample.value, (int, float)) or not math.isfinite(sample.value):
                    continue
                labels = tuple(sorted(sample.labels.items()))
                if (sample.name, labels) in seen:  # a duplicate series counts once
                    continue
                seen.add((sample.name, labels))
                for selector in wanted:
                    if selector.matches(sample.name, sample.labels):
                        found[selector].append((labels, float(sample.value)))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        why = f"the metrics are not in the Prometheus text format: {exc}"
        raise CheckFailed(why[:200]) from None
    return found


def _relevant(body: bytes, names: frozenset[str]) -> Iterable[str]:
    """The lines of the selected metrics, and their ``# TYPE`` lines."""
    text = body.decode("utf-8", "replace")
    for line in text.splitlines():
        if len(line) > LINE_LIMIT:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE" and parts[2] in names:
                yield line
            continue
        end = 0
        while end < len(line) and line[end] not in "{ \t":
            end += 1
        if line[:end] in names:
            yield line
