"""examples/prometheus/torchprobe-rules.yml: valid for promtool, its unit tests
(torchprobe-rules.test.yml) green, every alert labelled and annotated, and
every series it names one that torchprobe writes.

promtool is Debian's prometheus package (.ci/run installs it): skipped
without it, a failure under CI=true.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "examples" / "prometheus"
RULES = RULES_DIR / "torchprobe-rules.yml"
RULE_TESTS = RULES_DIR / "torchprobe-rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    require(found is not None, "promtool is not installed (Debian package prometheus)")
    assert found is not None
    # The test file names its rule file relative to itself.
    return subprocess.run([found, *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def rules() -> list[dict[str, Any]]:
    require(importlib.util.find_spec("yaml") is not None, "pyyaml is not installed")
    import yaml

    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout, done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    found = rules()
    assert len(found) >= 8, found
    for rule in found:
        assert "alert" in rule, f"a recording rule in an alerting file: {rule}"
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]


def test_every_alert_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules()}


def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(torchprobe_\w+|node_\w+)", expr))


def test_every_series_the_rules_name_is_one_torchprobe_writes() -> None:
    """No guessed metric name: each torchprobe_* series of an expression is a
    family of the monitor's /metrics (a counter with its _total) or of the
    --format prometheus renderer. The sidecar's torchprobe_serve_* families
    are checked too once torchprobe's code writes any of them."""
    from torchprobe.integrations.metrics import families

    written = {f"{f.name}_total" if f.kind == "counter" else f.name for f in families([], False)}
    renderer = (ROOT / "torchprobe" / "renderers" / "prometheus.py").read_text()
    written |= set(re.findall(r"\b(torchprobe_\w+)", renderer))
    code = "\n".join(p.read_text() for p in (ROOT / "torchprobe").rglob("*.py"))
    sidecar = "torchprobe_serve_" in code
    if sidecar:
        written |= set(re.findall(r"\b(torchprobe_serve_\w+)", code))
    for rule in rules():
        for name in _names_in(rule["expr"]):
            if name.startswith("node_") or (name.startswith("torchprobe_serve_") and not sidecar):
                continue
            assert name in written, f"{rule['alert']}: {name} is not a series torchprobe writes"


def test_the_critical_xid_list_is_torchprobes_policy() -> None:
    """The alert's xid=~ list is exactly what torchprobe/gpu/xid.py calls
    critical, plus the two NVML events it judges critical (double-bit ECC,
    GPU lost); an application Xid or a single-bit ECC event is not in it."""
    from torchprobe.gpu.xid import rule

    (alert,) = [r for r in rules() if r["alert"] == "TorchprobeCriticalXid"]
    (pattern,) = re.findall(r'xid=~"([^"]+)"', alert["expr"])
    # Prometheus anchors a label regex at both ends: fullmatch.
    listed = {str(x) for x in range(1000) if re.fullmatch(pattern, str(x))}
    assert listed == {str(x) for x in range(1000) if rule(x).critical}
    for kind, critical in (("double_bit_ecc", True), ("gpu_lost", True), ("single_bit_ecc", False)):
        assert bool(re.fullmatch(pattern, kind)) is critical, kind
