"""examples/compose.yaml brought up by a real docker compose — Debian's
docker-compose 1.29.2 on the engine of .ci/docker-setup.sh — to show that its
client starts only once the model server is healthy by its HEALTHCHECK, which
runs torchprobe.

The engine here has no bridge network (dockerd --bridge=none) and no registry,
so the test runs a copy of the example changed only where it must be (see
``adapted``): the suite's image instead of a build, DEVICE=cpu and no GPU
reservation, no published port, and the model server in a network namespace
of its own (network_mode: none) which the client joins (network_mode:
service:model) and reaches at 127.0.0.1 instead of the service's name. The
healthcheck, its timings, init and depends_on are the example's own.

Needs the docker-compose command and a Docker engine (skipped without them, a
failure under CI=true).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from .compose import inspect, instant
from .conftest import ROOT, docker

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "compose.yaml"


def test_the_example_as_written_is_a_valid_compose_file(compose: str) -> None:
    """The unchanged example, GPU reservation and build included, as compose reads it."""
    done = subprocess.run([compose, "-f", str(EXAMPLE), "config", "-q"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr


def adapted(image: str) -> dict[str, Any]:
    """examples/compose.yaml with only what this engine needs changed; every
    change asserts the part of the example it replaces, so a change to the
    example shows here."""
    example = yaml.safe_load(EXAMPLE.read_text())
    services = copy.deepcopy(example["services"])
    assert set(services) == {"model", "client"}, set(services)
    model, client = services["model"], services["client"]
    assert model.pop("build")["dockerfile"] == "Dockerfile.example"
    assert model.pop("deploy")["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert model.pop("ports") == ["8000:8000"]
    assert model["environment"]["DEVICE"] == "cuda"
    model["environment"]["DEVICE"] = "cpu"
    model["image"] = client["image"] = image
    model["network_mode"] = "none"
    client["network_mode"] = "service:model"
    (script,) = [part for part in client["command"] if "http://model:8000/" in part]
    client["command"] = [
        part.replace("http://model:8000/", "http://127.0.0.1:8000/") for part in client["command"]
    ]
    assert "http://127.0.0.1:8000/predict" in client["command"][-1], script
    # What the test is about stays as written.
    assert model["init"] is True
    assert model["healthcheck"]["test"][1] == "torchprobe"
    assert client["depends_on"] == {"model": {"condition": "service_healthy"}}
    return {"services": services}


def test_client_starts_only_once_torchprobe_says_the_model_server_is_healthy(
    image: str, project: Any
) -> None:
    p = project(adapted(image))
    done = p.up()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model, client = p.container("model"), p.container("client")
    assert model and client, done.stdout[-3000:]
    # The client's request was served: the first centre is class 0.
    logs = docker("logs", client).stdout
    assert json.loads(logs)["predictions"][0]["label"] == 0, logs
    assert inspect(client)["ExitCode"] == 0
    health = inspect(model)["Health"]
    passed = [entry for entry in health["Log"] if entry["ExitCode"] == 0]
    assert passed, health
    assert "healthy: 2 passed" in passed[0]["Output"], passed[0]["Output"]
    # Docker stamps probes and starts with the same clock: the client started
    # after the model's first passing probe had ended, not when the model did.
    started = instant(inspect(client)["StartedAt"])
    first_pass = instant(passed[0]["End"])
    assert started >= first_pass, (started, health["Log"])
    assert instant(inspect(model)["StartedAt"]) < instant(passed[0]["Start"]) < started
    print(f"\n[e2e] compose: model healthy at {first_pass}, client started at {started}")


def test_client_is_never_started_while_torchprobe_fails_the_model_server(
    image: str, project: Any
) -> None:
    """The control: a model that cannot load is unhealthy by torchprobe's
    status-file check, and compose refuses to start the client. Short probe
    timings here (the example's own start period would wait 120 s)."""
    spec = adapted(image)
    model = spec["services"]["model"]
    model["environment"]["MODEL_PATH"] = "/nonexistent/model.pt"
    model["healthcheck"].update(interval="1s", start_period="1s", retries=1)
    p = project(spec)
    done = p.up()
    assert done.returncode != 0, done.stdout[-3000:]
    assert "is unhealthy" in done.stderr, done.stderr[-3000:]
    assert p.container("client") is None, "the client was created"
    container = p.container("model")
    assert container
    log = inspect(container)["Health"]["Log"]
    # torchprobe's report: which probe ran first (before or after the workers
    # wrote their files) decides the reason status-file gives, not the verdict.
    assert log and log[-1]["ExitCode"] == 1, log
    assert re.search(r"^FAIL\s+status-file ", log[-1]["Output"], re.M), log[-1]["Output"]
    assert "UNHEALTHY:" in log[-1]["Output"], log[-1]["Output"]
