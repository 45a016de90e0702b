"""examples/compose-sidecar.yaml brought up by a real docker compose: the
server's healthcheck asks the torchprobe serve sidecar beside it, and the
client starts only once the sidecar's /ready said 200.

As in test_compose.py, the engine here has no bridge network and no registry,
so a copy of the example is run, changed only where it must be (``adapted``):
the suite's image (the example Flask server, on the CPU) in place of vLLM and
of the sidecar's image, the sidecar's checks asking that server instead of
vLLM, no GPU reservation, no published port, the server in a network
namespace of its own (network_mode: none) which the sidecar (as written) and
the client join. The healthchecks, network_mode of the sidecar and depends_on
are the example's own. Then the sidecar is stopped: the server's healthcheck,
which only asks the sidecar, must fail.

Needs the docker-compose command and a Docker engine (skipped without them, a
failure under CI=true).
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from typing import Any

import pytest
import yaml
from conftest import run_cli

from .compose import Project, inspect, instant
from .conftest import ROOT, docker

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "compose-sidecar.yaml"
VLLM = "vllm:url=http://127.0.0.1:8000"


def test_the_example_as_written_is_a_valid_compose_file(compose: str) -> None:
    done = subprocess.run([compose, "-f", str(EXAMPLE), "config", "-q"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_examples_torchprobe_commands_pass_dry_run() -> None:
    sidecar = yaml.safe_load(EXAMPLE.read_text())["services"]["torchprobe"]
    argv = sidecar["command"]
    assert argv[:2] == ["torchprobe", "serve"], argv
    done = run_cli(*argv[1:], "--dry-run")
    assert done.rc == 0, done.stderr
    assert "live:" in done.stdout and "ready:" in done.stdout
    probe = sidecar["healthcheck"]["test"]
    assert probe[:2] == ["CMD", "torchprobe"], probe
    done = run_cli("--dry-run", *probe[2:])
    assert done.rc == 0, done.stderr


def adapted(image: str) -> dict[str, Any]:
    """The example with only what this engine needs changed; each change
    asserts the part it replaces."""
    services = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["services"])
    assert set(services) == {"server", "torchprobe", "client"}, set(services)
    server, sidecar, client = services["server"], services["torchprobe"], services["client"]
    for service in (server, sidecar):
        (device,) = service.pop("deploy")["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["device_ids"] == ["0"]
    assert server.pop("image").startswith("vllm/") and server.pop("command")[0] == "--model"
    assert server.pop("ports") == ["8000:8000"]
    server.update(image=image, environment={"DEVICE": "cpu", "WEB_CONCURRENCY": "1"},
                  network_mode="none")  # fmt: skip
    sidecar["image"] = image
    argv = sidecar["command"]
    live, ready = argv.index("--live") + 1, argv.index("--ready") + 1
    assert VLLM in argv[live] and argv[ready] == VLLM, argv
    argv[live] = "http:url=http://127.0.0.1:8000/health"
    argv[ready] = "http:url=http://127.0.0.1:8000/ready"
    assert client.pop("image").startswith("vllm/")
    assert "http://server:8000/v1/completions" in client.pop("entrypoint")[-1]
    client.update(image=image, network_mode="service:server", entrypoint=[
        "python", "-c", "import urllib.request as u; r = u.urlopen(u.Request("
        "'http://127.0.0.1:8000/predict', b'{\"inputs\": [[2, 0, 0, 0]]}', "
        "{'Content-Type': 'application/json'}), timeout=10); print(r.read().decode())"],
        healthcheck={"disable": True})  # fmt: skip
    # What the test is about stays as written.
    assert sidecar["network_mode"] == "service:server"
    assert "127.0.0.1:9400/ready" in server["healthcheck"]["test"][-1]
    assert sidecar["healthcheck"]["test"][1] == "torchprobe"
    assert client["depends_on"] == {"server": {"condition": "service_healthy"}}
    return {"services": services}


def test_the_client_starts_once_the_sidecar_says_ready_and_the_server_needs_the_sidecar(
    image: str, project: Any
) -> None:
    p: Project = project(adapted(image))
    done = p.run("up", "-d", timeout=300)  # returns once the client is started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    server, sidecar, client = (p.container(s) for s in ("server", "torchprobe", "client"))
    assert server and sidecar and client, p.run("ps").stdout
    assert docker("wait", client, timeout=120).stdout.strip() == "0", docker("logs", client).stderr
    logs = docker("logs", client).stdout
    assert json.loads(logs)["predictions"][0]["label"] == 0, logs
    health = inspect(server)["Health"]
    passed = [e for e in health["Log"] if e["ExitCode"] == 0]
    assert passed, health
    started = instant(inspect(client)["StartedAt"])
    assert started >= instant(passed[0]["End"]), (started, health["Log"])
    # The sidecar's own probe, as the example writes it, passes too.
    deadline = time.monotonic() + 120
    while inspect(sidecar)["Health"]["Status"] != "healthy":
        assert time.monotonic() < deadline, inspect(sidecar)["Health"]
        time.sleep(1)
    # The server's healthcheck asks nothing but the sidecar: without it, it fails.
    docker("stop", "-t", "5", sidecar)
    stopped = instant(inspect(sidecar)["FinishedAt"])
    deadline = time.monotonic() + 120
    while True:
        failed = [e for e in inspect(server)["Health"]["Log"]
                  if e["ExitCode"] != 0 and instant(e["Start"]) > stopped]  # fmt: skip
        if failed:
            break
        assert time.monotonic() < deadline, inspect(server)["Health"]
        time.sleep(1)
    assert "sidecar /ready:" in failed[0]["Output"], failed[0]["Output"]
