"""Every Kubernetes manifest in examples/ validated against the Kubernetes API's
own schema, in strict mode: an unknown field, a misspelt one or a value of the
wrong type fails, as kubectl (whose --validate defaults to strict from 1.27 on)
refuses it.

The schema is the one kubernetes-validate bundles (the ``test`` extra pins it;
1.37.0 holds the schemas of Kubernetes 1.25 to 1.37). It is checked against
KUBERNETES, 1.35: with 1.37 the newest release it bundles, 1.35 is the oldest
of the three minor releases the Kubernetes project maintains (its version skew
policy), so a field that only a newer cluster knows fails here rather than on
a cluster people still run.

The torchprobe commands inside the manifests are checked by the CLI's own
parser in tests/examples/test_examples.py (exec probes and the sidecar's
``torchprobe serve --dry-run``). The scrape is configured by prometheus.io
annotations (sidecar.yaml), not by a ServiceMonitor: a custom resource has no
schema in kubernetes-validate, and no example carries one.

Needs kubernetes-validate and PyYAML (skipped without them, a failure under CI=true).
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
#: The Kubernetes version the manifests are validated against (see the module's docstring).
KUBERNETES = "1.35.0"


def needs(module: str, package: str) -> None:
    require(importlib.util.find_spec(module) is not None,
            f"{package} is not installed (pip install '.[test]')")  # fmt: skip


def documents(path: Path) -> list[dict[str, Any]]:
    """Every document of a (possibly multi-document) YAML file; none may be empty."""
    needs("yaml", "pyyaml")
    import yaml

    found = list(yaml.safe_load_all(path.read_text()))
    assert found, f"{path.name}: no document"
    for index, doc in enumerate(found):
        assert isinstance(doc, dict), f"{path.name}: document {index} is {doc!r}, not a resource"
    return found


def validate(resource: dict[str, Any]) -> str:
    """The version validated against; raises kubernetes_validate.ValidationError
    (or SchemaNotFoundError for a kind it has no schema of)."""
    needs("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    return kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_the_examples_have_manifests() -> None:
    names = {path.name for path in MANIFESTS}
    assert {"deployment.yaml", "sidecar.yaml", "sidecar-dra.yaml"} <= names, names


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_manifest_is_valid_against_the_kubernetes_schema_in_strict_mode(path: Path) -> None:
    needs("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    errors = (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)
    for doc in documents(path):
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            validated = validate(doc)
        except errors as exc:
            pytest.fail(f"{where}: {exc}")  # the message names the field
        # the schema of that very version, not an older one it fell back to
        assert validated == KUBERNETES.rsplit(".", 1)[0], where


# -- the validation is strict, and not vacuous ---------------------------------------------


def _sidecar() -> dict[str, Any]:
    (doc,) = documents(ROOT / "examples" / "kubernetes" / "sidecar.yaml")
    return doc


def _server(doc: dict[str, Any]) -> dict[str, Any]:
    server: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    assert server["name"] == "server"
    return server


def test_an_unknown_field_fails_though_the_lax_mode_lets_it_pass() -> None:
    needs("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    doc = copy.deepcopy(_sidecar())
    probe = _server(doc)["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    # Without strict mode a misspelt field is dropped silently, as by a lax client.
    kubernetes_validate.validate(doc, KUBERNETES, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        validate(doc)


def test_a_misspelt_field_of_the_gpu_claim_fails() -> None:
    """The DRA objects are validated too, not passed as unknown kinds."""
    needs("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    template, _ = documents(ROOT / "examples" / "kubernetes" / "sidecar-dra.yaml")
    doc = copy.deepcopy(template)
    request = doc["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    request["deviceClass"] = request.pop("deviceClassName")
    with pytest.raises(kubernetes_validate.ValidationError, match="deviceClass"):
        validate(doc)


def test_a_value_of_the_wrong_type_fails() -> None:
    needs("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    doc = copy.deepcopy(_sidecar())
    _server(doc)["livenessProbe"]["timeoutSeconds"] = "2"  # a string, not an integer
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'integer'"):
        validate(doc)


def test_the_documented_command_line_passes_the_examples_and_fails_a_broken_copy(
    tmp_path: Path,
) -> None:
    """docs/development.md's command: exit 0 on examples/kubernetes/, 1 on a copy
    with a misspelt field in its second document."""
    needs("yaml", "pyyaml")
    needs("kubernetes_validate", "kubernetes-validate")
    import yaml

    cli = Path(sys.executable).parent / "kubernetes-validate"
    found = str(cli) if cli.exists() else shutil.which("kubernetes-validate")
    require(found is not None, "the kubernetes-validate command is not installed")
    assert found is not None
    argv = [found, "--strict", "--quiet", "-k", KUBERNETES]
    done = subprocess.run([*argv, *map(str, MANIFESTS)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    broken = copy.deepcopy(_sidecar())
    _server(broken)["readinessProbe"]["periodSecond"] = 5
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump_all([_sidecar(), broken]))
    assert len(documents(both)) == 2
    done = subprocess.run([*argv, str(both)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "periodSecond" in done.stdout + done.stderr
