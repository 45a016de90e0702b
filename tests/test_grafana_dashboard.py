"""examples/grafana/torchprobe.json as Grafana imports it: valid JSON, the
schema and the ${DS_PROMETHEUS} input, every panel with a datasource and a
query, unique panel ids, and only series torchprobe writes. No Prometheus
needed: tests/test_prometheus_scrape.py evaluates every query in a real one."""

from __future__ import annotations

import re

from dashboard import expressions, load, panels, series_names, substitute, variables, written_series

DS = "${DS_PROMETHEUS}"


def test_the_dashboard_is_importable_grafana_json() -> None:
    document = load()
    assert document["schemaVersion"] >= 36
    assert [i["name"] for i in document["__inputs"]] == ["DS_PROMETHEUS"]
    assert document["__inputs"][0]["pluginId"] == "prometheus"
    (source,) = [v for v in document["templating"]["list"] if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("DS_PROMETHEUS", "prometheus")
    assert {"job", "instance", "pod"} <= set(variables(document))


def test_every_panel_has_a_datasource_and_a_query_and_its_own_id() -> None:
    document = load()
    found = list(panels(document))
    ids = [p["id"] for p in found]
    assert len(ids) == len(set(ids)), ids
    shown = [p for p in found if p["type"] != "row"]
    assert len(shown) >= 10, [p["title"] for p in shown]
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": DS}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": DS}, variable["name"]


def test_every_query_names_only_series_torchprobe_writes_and_known_variables() -> None:
    document = load()
    written = written_series()
    declared = set(variables(document))
    shown: set[str] = set()
    for where, expr in expressions(document):
        names = series_names(expr)
        assert names, f"{where}: names no torchprobe series: {expr}"
        assert names <= written, f"{where}: {names - written} is not a series torchprobe writes"
        shown |= names
        used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval"}
        assert used <= declared, f"{where}: {used - declared} is not a template variable"
        # every variable has a substitution: none left for Prometheus to reject
        assert "$" not in substitute(expr, {name: "x" for name in declared}), where
    # what the dashboard is for: verdicts, failing checks, durations, memory, sticky, Xid
    for name in ("torchprobe_up", "torchprobe_live", "torchprobe_ready", "torchprobe_check_up",
                 "torchprobe_run_duration_seconds", "torchprobe_serve_round_duration_seconds",
                 "torchprobe_gpu_memory_used_bytes", "torchprobe_gpu_memory_total_bytes",
                 "torchprobe_sticky_error", "torchprobe_gpu_xid_events_total"):  # fmt: skip
        assert name in shown, name


def test_substitution_puts_all_in_a_regex_matcher_and_the_value_elsewhere() -> None:
    expr = 'x{job=~"$job",instance="${instance}"} / y[$__rate_interval]'
    assert substitute(expr, {"job": "a", "instance": "b"}) == 'x{job=~".*",instance="b"} / y[1m]'
