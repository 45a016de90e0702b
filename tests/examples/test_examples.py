"""Every example is exercised: the Flask app really served, every torchprobe
command in the deployment files checked against the CLI.

- examples/flask_app runs under gunicorn in a subprocess on 127.0.0.1 with its
  own gunicorn.conf.py, the monitor in each worker, and a model file written by
  its make_model.py: /predict, /health, /ready, a corrupt model, a model still
  loading, and the fault-injection routes.
- Dockerfile.example, examples/compose.yaml and examples/kubernetes/: each
  torchprobe command in them is parsed by the CLI's own option parser and
  planned (every CHECK validated, as a run does before anything runs), and its
  check names are those that the installed ``torchprobe --list`` shows. The
  Dockerfile's HEALTHCHECK command also runs, for real, against the served app.
- examples/ci-smoke.sh: syntax here; it runs against a real engine in tests/e2e.

Needs flask, gunicorn and PyYAML (skipped without them, a failure under CI=true).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, needs_torch, require, run_cli, stop_group

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
APP_DIR = EXAMPLES / "flask_app"
DOCKERFILE = ROOT / "Dockerfile.example"
COMPOSE = EXAMPLES / "compose.yaml"
DEPLOYMENT = EXAMPLES / "kubernetes" / "deployment.yaml"
SIDECAR = EXAMPLES / "kubernetes" / "sidecar.yaml"
SIDECAR_DRA = EXAMPLES / "kubernetes" / "sidecar-dra.yaml"
CI_SMOKE = EXAMPLES / "ci-smoke.sh"
#: The model's cluster centres (examples/flask_app/make_model.py): centre k is class k.
CENTRES = [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]]
# These servers are on 127.0.0.1: no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def needs(module: str, package: str) -> None:
    require(importlib.util.find_spec(module) is not None,
            f"{package} is not installed (pip install {package})")  # fmt: skip


# -- torchprobe commands in the deployment files -------------------------------------------


def healthcheck(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[str]]:
    """The Dockerfile's HEALTHCHECK: its flags and its exec-form command."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    assert len(lines) == 1, f"one HEALTHCHECK instruction expected, found {len(lines)}"
    head, cmd, exec_form = lines[0].partition(" CMD ")
    assert cmd, "HEALTHCHECK without CMD"
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", head))
    try:
        argv = json.loads(exec_form)
    except json.JSONDecodeError:
        pytest.fail(f"HEALTHCHECK CMD is not in exec form (a JSON array): {exec_form}")
    return flags, argv


def load_yaml(path: Path) -> Any:
    needs("yaml", "pyyaml")
    import yaml

    return yaml.safe_load(path.read_text())


def deployment_probes() -> dict[str, dict[str, Any]]:
    """``container/probeKind`` -> the probe, for every container of the Deployment."""
    document = load_yaml(DEPLOYMENT)
    assert document["kind"] == "Deployment"
    probes = {}
    for container in document["spec"]["template"]["spec"]["containers"]:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                probes[f"{container['name']}/{kind}"] = container[kind]
    return probes


def compose_healthchecks() -> dict[str, list[str]]:
    """service -> its healthcheck's command, as the container receives it."""
    services = load_yaml(COMPOSE)["services"]
    found = {}
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if test is None:
            continue
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: not exec form: {test}"
        # compose turns $$ into $ before the container sees it
        found[name] = [part.replace("$$", "$") for part in test[1:]]
    return found


def all_torchprobe_commands() -> list[tuple[str, list[str]]]:
    commands = [("Dockerfile.example HEALTHCHECK", healthcheck()[1])]
    commands += [(f"compose.yaml {name}", argv) for name, argv in compose_healthchecks().items()]
    for where, probe in deployment_probes().items():
        if "exec" in probe:
            commands.append((f"deployment.yaml {where}", probe["exec"]["command"]))
    return commands


@dataclass
class Parsed:
    timeout: float
    checks: list[str]
    planned: list[Any]


def parse_command(argv: list[str]) -> Parsed:
    """What the CLI does with argv before running anything: click parses the
    options, then every CHECK is parsed and validated (plan), raising on an
    unknown check, an unknown option or a bad value."""
    from torchprobe.cli.command import command
    from torchprobe.engine.plan import plan

    assert argv[0] == "torchprobe", argv
    ctx = command.make_context("torchprobe", list(argv[1:]))
    # ${VAR}s (a Secret in Kubernetes) are set in the container, not here.
    environ = {name: "x" for name in re.findall(r"\$\{(\w+)\}", " ".join(argv))}
    checks = list(ctx.params["checks"])
    return Parsed(ctx.params["timeout"], checks, plan(checks, environ))


@pytest.fixture(scope="module")
def listed_checks() -> set[str]:
    """Check names as the installed console script lists them."""
    done = run_cli("--list", "--format", "json")
    assert done.rc == 0, done.stderr
    return {entry["name"] for entry in json.loads(done.stdout)["checks"]}


def test_every_torchprobe_command_in_the_examples_is_valid(listed_checks: set[str]) -> None:
    commands = all_torchprobe_commands()
    # the Dockerfile, compose, and startup + liveness in Kubernetes
    assert len(commands) >= 4, commands
    for where, argv in commands:
        parsed = parse_command(argv)
        assert parsed.checks, f"{where}: no CHECK given, the default set would run"
        names = {p.occurrence.check for p in parsed.planned}
        assert names <= listed_checks, f"{where}: {names - listed_checks} not in torchprobe --list"


def test_unknown_check_or_option_is_caught_by_the_same_validation() -> None:
    """The validation above is not vacuous: what the CLI rejects, it rejects."""
    from torchprobe.base import UsageError

    with pytest.raises(UsageError, match="unknown check"):
        parse_command(["torchprobe", "status-files"])
    with pytest.raises(UsageError, match="max-age"):
        parse_command(["torchprobe", "status-file:max-age=soon"])


def test_dockerfile_healthcheck_is_exec_form_with_every_timing_explained() -> None:
    text = DOCKERFILE.read_text()
    flags, argv = healthcheck()
    assert argv[0] == "torchprobe"
    assert set(flags) == {"interval", "timeout", "start-period", "retries"}
    # engines before 25 reject --start-interval: only a comment may name it
    assert not re.search(r"^HEALTHCHECK.*--start-interval", text, re.M)
    assert "--start-interval" in text
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for flag in flags:
        assert f"# --{flag}=" in comments, f"--{flag} is not explained in a comment"
    parsed = parse_command(argv)
    docker_timeout = float(flags["timeout"].rstrip("s"))
    assert parsed.timeout < docker_timeout, "torchprobe must finish before Docker's timeout"
    assert float(flags["start-period"].rstrip("s")) >= 60, "the start period covers model loading"
    assert {p.occurrence.check for p in parsed.planned} >= {"status-file"}


def test_dockerfile_takes_an_official_pytorch_base_and_advises_init() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=pytorch/pytorch:\S+-cuda\S+-runtime$", text, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert "--init" in text
    assert "COPY examples/flask_app /app" in text
    assert "make_model.py" in text, "the model file is made at build time"


def test_compose_waits_for_a_healthy_model_server() -> None:
    services = load_yaml(COMPOSE)["services"]
    checked = compose_healthchecks()
    waiting = {
        name: service["depends_on"]
        for name, service in services.items()
        if isinstance(service.get("depends_on"), dict)
    }
    assert waiting, "no service waits for another"
    for name, depends in waiting.items():
        for other, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, other, condition)
            assert other in checked, f"{name} waits for {other}, which has no healthcheck"
    for name, argv in checked.items():
        service = services[name]
        assert argv == healthcheck()[1], f"{name}: drifted from the image's HEALTHCHECK"
        assert service.get("init") is True, f"{name}: run it with an init"
        seconds = float(service["healthcheck"]["timeout"].rstrip("s"))
        assert parse_command(argv).timeout < seconds
        build = service.get("build", {})
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_kubernetes_probes_set_timeouts_above_torchprobes_own() -> None:
    probes = deployment_probes()
    assert {p.split("/")[1] for p in probes} == {"startupProbe", "livenessProbe", "readinessProbe"}
    for where, probe in probes.items():
        # the default timeoutSeconds is 1: no torchprobe run fits in it
        assert probe.get("timeoutSeconds", 1) > 1, f"{where}: timeoutSeconds not set"
        if "exec" in probe:
            assert parse_command(probe["exec"]["command"]).timeout < probe["timeoutSeconds"]
    startup = [p for w, p in probes.items() if w.endswith("/startupProbe")][0]
    assert {"cuda", "tensor"} <= set(_names(startup)), "startupProbe runs the heavy GPU checks"
    liveness = [p for w, p in probes.items() if w.endswith("/livenessProbe")][0]
    assert "status-file" in _names(liveness)


def test_kubernetes_readiness_gets_the_apps_ready_endpoint() -> None:
    document = load_yaml(DEPLOYMENT)
    container = document["spec"]["template"]["spec"]["containers"][0]
    get = container["readinessProbe"]["httpGet"]
    ports = {p["containerPort"] for p in container["ports"]} | {
        p.get("name") for p in container["ports"]
    }
    assert get["path"] == "/ready"
    assert get["port"] in ports


def test_kubernetes_sidecar_serves_the_servers_probes_and_passes_dry_run() -> None:
    document = load_yaml(SIDECAR)
    assert document["kind"] == "Deployment"
    template = document["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9400"
    assert annotations["prometheus.io/path"] == "/metrics"
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    commands = [(name, c["command"]) for name, c in containers.items()
                if c.get("command", [""])[0] == "torchprobe"]  # fmt: skip
    assert len(commands) == 1, commands
    name, argv = commands[0]
    sidecar = containers.pop(name)
    assert argv[1] == "serve" and argv[argv.index("--listen") + 1] == "0.0.0.0:9400"
    # The device plugin assigns GPUs per container: the sidecar takes none.
    assert "nvidia.com/gpu" not in str(sidecar.get("resources", {}))
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in sidecar["env"]
    ports = {p["containerPort"] for p in sidecar["ports"]} | {p["name"] for p in sidecar["ports"]}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["livenessProbe"]["httpGet"]["port"] in ports
    (server,) = containers.values()
    assert server["livenessProbe"]["httpGet"] == {"path": "/live", "port": 9400}
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9400}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert server[probe].get("timeoutSeconds", 1) > 1, f"{probe}: timeoutSeconds not set"
    done = run_cli(*argv[1:], "--dry-run")
    assert done.rc == 0, done.stderr
    assert "live:" in done.stdout and "ready:" in done.stdout


def test_kubernetes_dra_sidecar_shares_the_servers_gpu_claim_and_passes_dry_run() -> None:
    """With DRA the pod claims one GPU and both containers name the claim: the
    sidecar sees the server's GPU, no other, and takes none of its own."""
    needs("yaml", "pyyaml")
    import yaml

    template, deployment = yaml.safe_load_all(SIDECAR_DRA.read_text())
    assert template["kind"] == "ResourceClaimTemplate"
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["deviceClassName"] == "gpu.nvidia.com"
    assert "count" not in request["exactly"]  # one device
    pod = deployment["spec"]["template"]["spec"]
    (claim,) = pod["resourceClaims"]
    assert claim["resourceClaimTemplateName"] == template["metadata"]["name"]
    containers = {c["name"]: c for c in pod["containers"]}
    for container in containers.values():
        assert container["resources"]["claims"] == [{"name": claim["name"]}], container["name"]
        assert "nvidia.com/gpu" not in str(container["resources"])
        assert "NVIDIA_VISIBLE_DEVICES" not in str(container.get("env", []))
    sidecar = containers["torchprobe"]
    assert containers["server"]["livenessProbe"]["httpGet"] == {"path": "/live", "port": 9400}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    done = run_cli(*sidecar["command"][1:], "--dry-run")
    assert done.rc == 0, done.stderr
    assert "live:" in done.stdout and "xid: every GPU NVML shows" in done.stdout


def _names(probe: dict[str, Any]) -> list[str]:
    return [p.occurrence.check for p in parse_command(probe["exec"]["command"]).planned]


def test_readme_links_to_examples_resolve() -> None:
    """README.md and docs/ link to the examples, each relative to its own file
    (docs/ pages as ../examples/...): every such link names a file that exists."""
    from docs_text import documentation_files

    targets: set[str] = set()
    missing = []
    for page in documentation_files():
        for link in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            path = (page.parent / link).resolve()
            inside = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else link
            if re.match(r"(examples/|Dockerfile)", inside):
                targets.add(inside)
                if not path.exists():
                    missing.append(f"{page.relative_to(ROOT)}: {link}")
    assert {"Dockerfile.example", "examples/flask_app", "examples/plugin"} <= targets
    # the README's six example links, before its sections moved to docs/
    assert len(targets) >= 6, targets
    assert not missing, f"links to missing files: {missing}"


def test_ci_smoke_script_is_valid_bash() -> None:
    assert os.access(CI_SMOKE, os.X_OK), "examples/ci-smoke.sh is not executable"
    done = subprocess.run(["bash", "-n", str(CI_SMOKE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(CI_SMOKE)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


# -- the Flask app, served ----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Service:
    """examples/flask_app under gunicorn with its own gunicorn.conf.py, on a
    port of its own: the test binds it and hands gunicorn the descriptor
    (``-b fd://N``), so there is no race for a free port."""

    def __init__(self, tmp: Path, model: Path | str, *, workers: int = 1,
                 faults: bool = False, max_busy: float = 30) -> None:  # fmt: skip
        self.status_dir = tmp / "status"
        self.log = tmp / "gunicorn.log"
        self.env = clean_env(
            MODEL_PATH=str(model),
            DEVICE="cpu",
            TORCHPROBE_STATUS_DIR=str(self.status_dir),
            MONITOR_INTERVAL="0.5",
            MONITOR_MAX_BUSY=str(max_busy),
            WEB_CONCURRENCY=str(workers),
            # a deadlocked thread would hold up the default graceful stop for 10 s
            GUNICORN_CMD_ARGS="--graceful-timeout 1",
            PYTHONWARNINGS="ignore",
        )
        self.env.pop("TORCHPROBE_EXAMPLE_FAULTS", None)
        if faults:
            self.env["TORCHPROBE_EXAMPLE_FAULTS"] = "1"
        self.workers = workers
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        fd = self.listener.fileno()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(APP_DIR / "gunicorn.conf.py"),
                 "--chdir", str(APP_DIR), "-b", f"fd://{fd}", "app:app"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                pass_fds=(fd,), start_new_session=True,
            )  # fmt: skip

    def request(self, path: str, body: Any = None, timeout: float = 10) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.address}{path}", data=data)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=timeout) as response:
                return Reply(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read())

    def wait_for(self, what: str, predicate: Callable[[], bool], deadline: float = 60) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"gunicorn exited:\n{self.log.read_text()[-3000:]}"
            try:
                if predicate():
                    return
            except OSError:
                pass  # not listening yet, or a worker restarting
            time.sleep(0.1)
        pytest.fail(f"not {what} within {deadline}s:\n{self.log.read_text()[-3000:]}")

    def statuses(self) -> dict[int, dict[str, Any]]:
        found = {}
        for path in self.status_dir.glob("*.json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            found[doc["pid"]] = doc
        return found

    def wait_for_workers(self, lifecycle: str) -> None:
        """Every worker's monitor has written its file and reached ``lifecycle``."""

        def reached() -> bool:
            docs = self.statuses()
            return len(docs) == self.workers and all(
                d["lifecycle"]["state"] == lifecycle for d in docs.values()
            )

        self.wait_for(f"{self.workers} worker(s) {lifecycle}", reached)

    def stop(self) -> None:
        stop_group(self.proc)
        self.listener.close()


@pytest.fixture(scope="module")
@needs_torch
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file written by the example's own make_model.py."""
    needs("flask", "flask")
    needs("gunicorn", "gunicorn")
    needs("torch", "torch==2.13.0")
    path = tmp_path_factory.mktemp("model") / "model.pt"
    done = subprocess.run([sys.executable, str(APP_DIR / "make_model.py"), str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(model: Path | str, **options: Any) -> Service:
        directory = tmp_path / f"service{len(started)}"
        directory.mkdir()
        service = Service(directory, model, **options)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def served(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Two workers, the model loaded in each, fault injection off (the default)."""
    service = Service(tmp_path_factory.mktemp("served"), model_file, workers=2)
    try:
        service.wait_for_workers("ready")
        yield service
    finally:
        service.stop()


def test_predict_classifies_a_point_near_each_centre(served: Service) -> None:
    reply = served.request("/predict", {"inputs": CENTRES})
    assert reply.status == 200
    predictions = reply.json["predictions"]
    assert [p["label"] for p in predictions] == [0, 1, 2]
    for p in predictions:
        assert p["scores"][p["label"]] > 0.9
        assert sum(p["scores"]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "body", [{}, {"inputs": []}, {"inputs": [[1, 2, 3]]}, {"inputs": [["a", 0, 0, 0]]}, [1]]
)
def test_predict_rejects_malformed_input(served: Service, body: Any) -> None:
    reply = served.request("/predict", body)
    assert reply.status == 400
    assert "inputs" in reply.json["error"]


def test_health_and_ready_answer_200_from_a_worker_with_its_pid(served: Service) -> None:
    workers = set(served.statuses())
    assert len(workers) == 2
    for path in ("/health", "/ready"):
        reply = served.request(path)
        assert reply.status == 200, reply.body
        assert reply.json["live"] is True and reply.json["ready"] is True
        assert reply.json["pid"] in workers


def test_every_worker_writes_a_status_file_that_says_ready(served: Service) -> None:
    for pid, doc in served.statuses().items():
        assert doc["live"] and doc["ready"], doc["reasons"]
        assert doc["lifecycle"]["state"] == "ready"
        assert [c["status"] for c in doc["checks"]] == ["pass"], "the monitor's tensor:device=cpu"
        assert pid != served.proc.pid, "the master runs no monitor"


def test_dockerfile_healthcheck_command_passes_against_the_served_app(served: Service) -> None:
    argv = [a.replace("127.0.0.1:8000", served.address) for a in healthcheck()[1]]
    done = run_cli(*argv[1:], env=served.env)
    assert done.rc == 0, done.stdout + done.stderr
    assert "2 worker(s), 2 ready" in done.stdout


def test_fault_routes_are_off_unless_switched_on(served: Service) -> None:
    assert served.request("/faults/sticky-cuda-error", {}).status == 404
    assert served.request("/faults/deadlock", {}).status == 404
    assert served.request("/health").status == 200


def test_corrupt_model_predict_answers_200_empty_but_not_ready_nor_live(
    model_file: Path, tmp_path: Path, serve: Callable[..., Service]
) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])  # truncated
    service = serve(corrupt)
    service.wait_for_workers("failed")
    # the soft failure: the process runs and /predict "succeeds" with nothing
    reply = service.request("/predict", {"inputs": CENTRES})
    assert (reply.status, reply.json) == (200, {"predictions": []})
    for path in ("/ready", "/health"):
        reply = service.request(path)
        assert reply.status == 503, (path, reply.body)
        assert any("model failed to load" in r for r in reply.json["reasons"]), reply.json
    assert "could not load the model" in service.log.read_text()
    # the image's own probe says so, naming the check and the reason
    argv = [a.replace("127.0.0.1:8000", service.address) for a in healthcheck()[1]]
    done = run_cli(*argv[1:], env=service.env)
    assert done.rc == 1
    assert re.search(r"^FAIL\s+status-file .*model failed to load", done.stdout, re.M), done.stdout


def test_model_still_loading_is_live_but_not_ready(
    tmp_path: Path, serve: Callable[..., Service], model_file: Path
) -> None:
    # A FIFO blocks the loader's open() until a writer comes: "loading" for as
    # long as the test needs, with no sleep and no timing to guess.
    fifo = tmp_path / "slow-model.pt"
    os.mkfifo(fifo)
    service = serve(fifo)
    service.wait_for_workers("loading")
    try:
        assert service.request("/health").status == 200
        ready = service.request("/ready")
        assert ready.status == 503
        assert any("model loading" in r for r in ready.json["reasons"]), ready.json
        reply = service.request("/predict", {"inputs": CENTRES})
        assert (reply.status, reply.json) == (503, {"error": "model loading"})
    finally:
        release_fifo(fifo)


def release_fifo(fifo: Path) -> None:
    """Let a loader blocked in open(fifo) go on.

    A worker reports "loading" just before it opens the file, so the writer may
    come first: a non-blocking open for writing then fails with ENXIO (no
    reader yet). Retry until the reader is there; if it never comes, the
    fixture's SIGTERM/SIGKILL of the process group ends it anyway.
    """
    for _ in range(200):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise
            time.sleep(0.05)


def test_sticky_cuda_error_in_one_worker_fails_only_that_worker(
    model_file: Path, serve: Callable[..., Service]
) -> None:
    service = serve(model_file, workers=2, faults=True)
    service.wait_for_workers("ready")
    reply = service.request("/faults/sticky-cuda-error", {})
    assert reply.status == 500
    poisoned = reply.json["pid"]
    assert reply.json["raised"].startswith(("AcceleratorError: CUDA error:", "RuntimeError: CUDA"))

    def published() -> bool:
        return service.statuses()[poisoned]["sticky"] is not None

    service.wait_for("the sticky error in the status file", published, deadline=10)
    docs = service.statuses()
    assert docs[poisoned]["sticky"]["code"] == 710
    assert docs[poisoned]["live"] is False
    (healthy,) = set(docs) - {poisoned}
    assert docs[healthy]["live"] is True, "a sticky error belongs to one process"
    done = run_cli("--timeout", "4", "status-file", env=service.env)
    assert done.rc == 1
    assert f"pid {poisoned} not live: sticky CUDA error 710" in done.stdout


def test_deadlocked_handler_makes_the_worker_not_live_while_other_threads_answer(
    model_file: Path, serve: Callable[..., Service]
) -> None:
    service = serve(model_file, faults=True, max_busy=1)
    service.wait_for_workers("ready")
    # The request never returns: send it from a thread and stop listening.
    stuck = threading.Thread(
        target=lambda: _ignore(lambda: service.request("/faults/deadlock", {}, timeout=30)),
        daemon=True,
    )
    stuck.start()

    def unhealthy() -> bool:
        reply = service.request("/health", timeout=2)
        return reply.status == 503 and any("request in flight" in r for r in reply.json["reasons"])

    # /health still answers — from another thread of the same worker
    service.wait_for("reported stuck by /health", unhealthy, deadline=15)
    # the deadlocked thread holds the model lock: inference is blocked too
    with pytest.raises(TimeoutError):
        service.request("/predict", {"inputs": CENTRES}, timeout=1)
    # and the monitor thread runs on: the status file keeps being refreshed
    (doc,) = service.statuses().values()
    first = doc["updated"]
    service.wait_for("status file refreshed", lambda: _updated(service) > first, deadline=5)
    done = run_cli("--timeout", "4", "status-file", env=service.env)
    assert done.rc == 1
    assert "request in flight" in done.stdout


def _updated(service: Service) -> float:
    (doc,) = service.statuses().values()
    return float(doc["updated"])


def _ignore(call: Callable[[], Any]) -> None:
    try:
        call()
    except OSError:
        pass
