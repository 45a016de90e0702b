"""The model-server presets against stand-ins of the servers that need a GPU.

Triton, vLLM, TGI, SGLang and Ollama cannot run here; tests/standins.py
answers as they do (see its docstring). The servers that do run on a CPU are
tested for real in tests/realservers. Most cases build the check in-process
(fast); the ones about what a user sees go through the installed command.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import pytest
from conftest import run_cli
from servers import closed_port, http_server, reply, routes
from standins import TGI, VLLM, Ollama, SGLang, Triton

from torchprobe.base import Check, CheckFailed, Outcome, Status, UsageError
from torchprobe.checks.server import base_url
from torchprobe.engine import registry
from torchprobe.engine.spec import parse_occurrence

pytestmark = pytest.mark.standins


def build(token: str) -> Check:
    name = token.partition(":")[0]
    cls = registry.builtin(name)
    assert cls is not None, name
    occurrence = parse_occurrence(token, {o.key: o for o in cls.options}, os.environ)
    check = cls(**occurrence.values, timeout=occurrence.timeout or cls.timeout)
    check.deadline = time.monotonic() + check.timeout
    return check


def passes(token: str) -> Outcome:
    outcome = build(token).run()
    assert isinstance(outcome, Outcome) and outcome.status is Status.PASS, outcome
    return outcome


def fails(token: str) -> CheckFailed:
    check = build(token)
    with pytest.raises(CheckFailed) as caught:
        check.run()
    return caught.value


# --- Triton (KServe v2) ------------------------------------------------------------------


def test_triton_ready_with_model_reports_what_it_saw() -> None:
    with Triton() as server:
        outcome = passes(f"triton:url={server.url},model=resnet50")
    assert outcome.message.startswith(
        "ready: server live, model 'resnet50' ready, triton 2.50.0 in "
    )
    assert server.paths() == ["/v2/health/live", "/v2/models/resnet50/ready", "/v2"]
    assert outcome.details["endpoints"]["/v2/models/resnet50/ready"] == 200
    assert outcome.details["server_version"] == "triton 2.50.0"


def test_triton_model_not_ready_fails_naming_the_model() -> None:
    with Triton(models={"resnet50": {"1": False}}) as server:
        error = fails(f"triton:url={server.url},model=resnet50")
    assert error.message == (
        "model 'resnet50' not ready: GET /v2/models/resnet50/ready answered HTTP 400 Bad Request"
    )


def test_with_model_a_broken_neighbour_does_not_fail_a_ready_model() -> None:
    # Triton (strict readiness) and MLServer say the server is not ready while any
    # model is not: with model=, that model's own readiness decides.
    with Triton(models={"resnet50": {"1": True}, "bert": {"1": False}}) as server:
        server.ready = False
        passes(f"triton:url={server.url},model=resnet50")
        error = fails(f"triton:url={server.url},model=bert")
        server.live = False
        dead = fails(f"triton:url={server.url},model=resnet50")
    assert error.message.startswith("model 'bert' not ready: GET /v2/models/bert/ready")
    assert dead.message.startswith("server not live: GET /v2/health/live answered HTTP 400")


def test_triton_unknown_model_fails_naming_it() -> None:
    with Triton() as server:
        error = fails(f"triton:url={server.url},model=bert")
    assert "model 'bert' not ready" in error.message


def test_triton_version_is_its_own_path() -> None:
    with Triton(models={"resnet50": {"1": False, "2": True}}) as server:
        passes(f"triton:url={server.url},model=resnet50,version=2")
        error = fails(f"triton:url={server.url},model=resnet50,version=1")
    assert "/v2/models/resnet50/versions/2/ready" in server.paths()
    assert error.message.startswith("model 'resnet50' version 1 not ready: GET ")


def test_triton_live_passes_while_not_ready() -> None:
    with Triton() as server:
        server.ready = False
        passes(f"triton:url={server.url},mode=live")
        error = fails(f"triton:url={server.url}")
    assert error.message.startswith("server not ready: GET /v2/health/ready answered HTTP 400")


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    answers = {"/triton/v2/health/ready": reply(200, b""), "/triton/v2": reply(404, b"")}
    with http_server(routes(answers)) as server:
        passes(f"triton:url={server.url}/triton/")


def test_model_names_are_url_encoded_in_paths() -> None:
    with Triton(models={"a b/c": {"1": True}}) as server:
        passes(f"triton:url={server.url},model=a b/c")
    assert "/v2/models/a%20b%2Fc/ready" in server.paths()


# --- vLLM ---------------------------------------------------------------------------------


def test_vllm_ready_means_health_and_the_model_listed() -> None:
    with VLLM() as server:
        outcome = passes(f"vllm:url={server.url},model=facebook/opt-125m")
        anything = passes(f"vllm:url={server.url}")
    assert "engine up, serving 'facebook/opt-125m'" in outcome.message
    assert "serving 'facebook/opt-125m'" in anything.message
    assert outcome.details["models"] == ["facebook/opt-125m"]


def test_vllm_engine_up_but_model_missing_is_not_ready() -> None:
    with VLLM(models=[]) as server:
        passes(f"vllm:url={server.url},mode=live")
        error = fails(f"vllm:url={server.url}")
    assert error.message == "no model served: /v1/models lists none"


def test_vllm_other_model_served_fails_listing_what_is() -> None:
    with VLLM() as server:
        error = fails(f"vllm:url={server.url},model=meta-llama/Llama-3-8B")
    assert error.message == (
        "model 'meta-llama/Llama-3-8B' not served: /v1/models lists 'facebook/opt-125m'"
    )


def test_vllm_dead_engine_fails_at_health() -> None:
    with VLLM() as server:
        server.engine_dead = True
        error = fails(f"vllm:url={server.url}")
    assert error.message == "engine not healthy: GET /health answered HTTP 503 Service Unavailable"


def test_vllm_listed_but_cannot_generate_is_caught_only_by_generate() -> None:
    with VLLM() as server:
        server.generation_broken = True
        passes(f"vllm:url={server.url}")
        error = fails(f"vllm:url={server.url},generate=true")
        server.generation_broken = False
        outcome = passes(f"vllm:url={server.url},generate=true")
    assert error.message.startswith(
        "cannot generate: POST /v1/completions answered HTTP 500 Internal Server Error: "
    )
    assert "EngineCore encountered an issue" in error.message
    assert outcome.message.startswith("ready: engine up, serving 'facebook/opt-125m', generated 1")
    method, _, headers, body = server.requests[-1]
    assert method == "POST" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"model": "facebook/opt-125m", "prompt": "Hi", "max_tokens": 1}


def test_vllm_api_key_missing_or_wrong_is_unauthorized_and_never_shown() -> None:
    key = "sk-the-right-key-7f3a"
    with VLLM(api_key=key) as server:
        missing = run_cli(f"vllm:url={server.url}")
        wrong = run_cli(f"vllm:url={server.url},token=sk-a-wrong-key-91b2", "-v")
        right = run_cli(f"vllm:url={server.url},token={key}", "--format", "json")
    assert missing.rc == 1 and wrong.rc == 1
    assert "unauthorized: GET /v1/models answered HTTP 401 Unauthorized" in missing.stdout
    assert "needs credentials" in missing.stdout
    assert "rejected the credentials" in wrong.stdout
    assert right.rc == 0, right.stdout
    for run in (missing, wrong, right):
        for secret in (key, "sk-a-wrong-key-91b2"):
            assert secret not in run.stdout + run.stderr
    assert server.requests[-1][2]["authorization"] == f"Bearer {key}"


# --- TGI, SGLang, Ollama -------------------------------------------------------------------


def test_tgi_reports_the_model_id_and_fails_on_an_unhealthy_shard() -> None:
    with TGI() as server:
        outcome = passes(f"tgi:url={server.url},model=bigscience/bloom-560m")
        other = fails(f"tgi:url={server.url},model=gpt2")
        server.healthy = False
        error = fails(f"tgi:url={server.url}")
    assert "shards healthy, serving 'bigscience/bloom-560m'" in outcome.message
    assert outcome.details["server_version"] == "2.4.1"
    assert other.message == "model 'gpt2' not served: /info lists 'bigscience/bloom-560m'"
    assert error.message == (
        "not healthy: GET /health answered HTTP 503 Service Unavailable: "
        '{"error": "unhealthy", "error_type": "healthcheck"}'
    )


def test_tgi_slow_health_within_the_timeout_passes() -> None:
    assert build("tgi").timeout == 10  # /health queues behind the load
    with TGI() as server:
        server.delay["/health"] = 2.0
        passes(f"tgi:url={server.url},timeout=4")
        error = fails(f"tgi:url={server.url},timeout=1")
    assert error.message.startswith("GET /health: timed out after 1s")


def test_sglang_default_timeout_allows_its_one_second_health() -> None:
    with SGLang() as server:
        outcome = passes(f"sglang:url={server.url}")
        generate = passes(f"sglang:url={server.url},generate=true")
        server.starting = True
        starting = fails(f"sglang:url={server.url}")
    assert build("sglang").timeout >= 5
    assert outcome.details["elapsed_ms"] >= 1000
    assert generate.message.startswith("ready: server up, generation healthy in ")
    assert server.paths()[:3] == ["/health", "/get_model_info", "/health_generate"]
    assert starting.message.startswith("server not healthy: GET /health answered HTTP 503")


def test_sglang_wedged_generation_fails_at_the_timeout() -> None:
    with SGLang() as server:
        server.hang.add("/health_generate")
        started = time.monotonic()
        run = run_cli(f"sglang:url={server.url},generate=true,timeout=2")
    assert run.rc == 1
    assert time.monotonic() - started < 6
    contrast = "inference did not answer in 2s (GET /get_model_info answered HTTP 200 OK in "
    assert f"GET /health_generate: {contrast}" in run.stdout


def test_ollama_model_pulled_and_whether_it_is_loaded() -> None:
    with Ollama(loaded=["qwen2.5:0.5b"]) as server:
        short = passes(f"ollama:url={server.url},model=llama3.2")
        loaded = passes(f"ollama:url={server.url},model=qwen2.5:0.5b")
        missing = fails(f"ollama:url={server.url},model=mistral")
        live = passes(f"ollama:url={server.url},model=mistral,mode=live")
    assert "model 'llama3.2' present, not loaded (loads on first request)" in short.message
    assert short.details["model_loaded"] is False
    assert "model 'qwen2.5:0.5b' present, loaded" in loaded.message
    assert missing.message == (
        "model 'mistral' not pulled: /api/tags lists 'llama3.2:latest', 'qwen2.5:0.5b'"
    )
    assert live.message.startswith("live: server running in ")


# --- every preset: the common behaviour ----------------------------------------------------

PRESETS = ["torchserve", "triton", "kserve", "vllm", "tgi", "sglang", "ray", "bentoml",
           "litserve", "ollama"]  # fmt: skip


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_fails_on_a_closed_port_naming_the_endpoint(name: str) -> None:
    port = closed_port()
    error = fails(f"{name}:url=http://127.0.0.1:{port}")
    assert error.message.startswith("GET /")
    assert f"connection refused: 127.0.0.1:{port}" in error.message


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_times_out_on_a_server_that_never_answers(name: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        started = time.monotonic()
        error = fails(f"{name}:url=http://127.0.0.1:{port},timeout=1")
    assert time.monotonic() - started < 2
    assert "timed out after 1s" in error.message


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_says_unauthorized_on_401(name: str) -> None:
    with http_server(routes({}, reply(401, b'{"error": "Unauthorized"}'))) as server:
        error = fails(f"{name}:url={server.url},token=nope")
    assert error.message.startswith("unauthorized: GET /")


def test_the_default_port_is_named_when_nothing_listens_there() -> None:
    probe = socket.socket()
    if probe.connect_ex(("127.0.0.1", 11434)) == 0:
        probe.close()
        pytest.skip("something listens on 11434 here")
    probe.close()
    error = fails("ollama")
    assert error.message == (
        "GET /: connection refused: 127.0.0.1:11434 "
        "(127.0.0.1:11434 is Ollama's default; url= sets another)"
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("triton:mode=ready,version=2", "version= needs model="),
        ("kserve:protocol=v1", "protocol=v1 needs model="),
        ("kserve:protocol=v1,model=m,version=1", "version= is for protocol=v2"),
        ("torchserve:token=a,token-file=/k.json", "token= and token-file= exclude each other"),
    ],
)
def test_contradictory_options_are_usage_errors(token: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build(token)


@pytest.mark.parametrize(
    "arguments",
    [
        ["vllm:mode=ready-ish"],
        ["triton:url=localhost:8000"],
        ["kserve:url=http://h:8080/?x=1"],
        ["ray:bogus=1"],
    ],
)
def test_bad_preset_options_are_one_line_exit_1(arguments: list[str]) -> None:
    run = run_cli(*arguments)
    assert run.rc == 1
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr


def test_list_shows_every_preset_with_its_port_and_options() -> None:
    run = run_cli("--list", "--format", "json")
    assert run.rc == 0
    listed = {c["name"]: c for c in json.loads(run.stdout)["checks"]}
    ports = {"torchserve": 8080, "triton": 8000, "kserve": 8080, "vllm": 8000, "tgi": 80,
             "sglang": 30000, "ray": 8000, "bentoml": 3000, "litserve": 8000,
             "ollama": 11434}  # fmt: skip
    for name, port in ports.items():
        entry = listed[name]
        assert f"[port {port}" in entry["description"], entry
        keys = {o["key"] for o in entry["options"]}
        assert {"url", "mode", "token", "header", "insecure"} <= keys
        url = next(o for o in entry["options"] if o["key"] == "url")
        assert f"http://127.0.0.1:{port}" in url["help"]


# --- TorchServe's token file (the real server: tests/realservers) --------------------------


def _key_file(tmp_path: Any, inference: str, management: str) -> str:
    path = tmp_path / "key_file.json"
    document = {
        "management": {"key": management, "expiration time": "2026-11-26T08:00:00Z"},
        "inference": {"key": inference, "expiration time": "2026-11-26T08:00:00Z"},
        "API": {"key": "api-key-never-sent"},
    }
    path.write_text(json.dumps(document))
    return str(path)


def test_torchserve_token_file_is_read_on_every_run_and_never_shown(tmp_path: Any) -> None:
    healthy = reply(200, b'{\n  "status": "Healthy"\n}\n')
    with http_server(routes({"/ping": healthy})) as server:
        path = _key_file(tmp_path, "inf-key-1111", "mgmt-key-2222")
        outcome = passes(f"torchserve:url={server.url},token-file={path}")
        _key_file(tmp_path, "inf-key-3333", "mgmt-key-4444")  # rotated, as after an hour
        run = run_cli(f"torchserve:url={server.url},token-file={path}", "--format", "json")
    sent = [r.header("Authorization") for r in server.requests]
    assert sent == ["Bearer inf-key-1111", "Bearer inf-key-3333"]
    assert outcome.message.startswith("ready: server Healthy in ")
    assert run.rc == 0
    for secret in ("inf-key-3333", "mgmt-key-4444", "api-key-never-sent"):
        assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ('{"inference": {}}', "no inference key"),
    ],
)
def test_torchserve_bad_token_file_fails_saying_why(
    tmp_path: Any, content: str | None, message: str
) -> None:
    path = tmp_path / "key_file.json"
    if content is not None:
        path.write_text(content)
    with http_server(routes({"/ping": reply(200, b'{"status": "Healthy"}')})) as server:
        error = fails(f"torchserve:url={server.url},token-file={path}")
    assert error.message.startswith(f"token-file {path}: {message}")


def test_torchserve_400_for_a_bad_key_is_unauthorized() -> None:
    body = (
        b'{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed. '
        b'Token either incorrect, expired, or not provided correctly"}'
    )
    with http_server(routes({"/ping": reply(400, body)})) as server:
        error = fails(f"torchserve:url={server.url},token=stale")
    assert error.message.startswith("unauthorized: GET /ping answered HTTP 400 Bad Request")


def test_torchserve_unhealthy_ping_quotes_the_answer() -> None:
    with http_server(routes({"/ping": reply(500, b'{"status": "Unhealthy"}')})) as server:
        error = fails(f"torchserve:url={server.url}")
    assert error.message == (
        'server not Healthy: GET /ping answered HTTP 500 Internal Server Error: {"status": '
        '"Unhealthy"}'
    )


def test_torchserve_ping_200_but_not_healthy_is_not_healthy() -> None:
    with http_server(routes({"/ping": reply(200, b'{"status": "Partial Healthy"}')})) as server:
        error = fails(f"torchserve:url={server.url}")
    assert error.message == (
        'server not Healthy: GET /ping answered HTTP 200 OK, but JSON status is "Partial '
        "Healthy\" (expected 'Healthy')"
    )


# --- a preset written as a plugin (examples/plugin) ----------------------------------------


def test_the_example_plugin_preset_is_a_few_declared_lines() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "plugin"))
    try:
        from torchprobe_example import TextEmbeddings
    finally:
        sys.path.pop(0)
    info = reply(200, b'{"model_id": "BAAI/bge-small-en-v1.5", "version": "1.5.0"}')
    answers = {"/health": reply(200, b""), "/info": info}
    with http_server(routes(answers)) as server:
        url = base_url(server.url)
        check = TextEmbeddings(url=url, model="BAAI/bge-small-en-v1.5")
        check.deadline = time.monotonic() + 5
        outcome = check.run()
        other = TextEmbeddings(url=check.url, model="intfloat/e5")
        other.deadline = time.monotonic() + 5
        with pytest.raises(CheckFailed, match="model 'intfloat/e5' not served"):
            other.run()
    assert isinstance(outcome, Outcome)
    assert outcome.message.startswith("ready: healthy, serving 'BAAI/bge-small-en-v1.5' in ")


def test_every_healthcheck_line_in_the_readme_is_a_valid_command() -> None:
    import re

    from conftest import clean_env
    from docs_text import documentation

    found = re.findall(r'^HEALTHCHECK CMD \["torchprobe", (.*)\]$', documentation(), re.M)
    lines = list(dict.fromkeys(found))
    # As many distinct lines as the README held before they moved to docs/.
    assert len(lines) >= 12, lines
    env = clean_env(VLLM_API_KEY="sk-test")
    for line in lines:
        arguments = json.loads(f"[{line}]")
        run = run_cli(*arguments, "--dry-run", env=env)
        assert run.rc == 0, (line, run.stdout, run.stderr)


def test_ray_dashboard_status_decides_readiness_when_given() -> None:
    routes_ = b'{"/classify": "classifier", "/broken": "broken"}'
    apps = {
        "applications": {
            "classifier": {"name": "classifier", "route_prefix": "/classify", "status": "RUNNING",
                           "message": "", "deployments": {}},
            "broken": {"name": "broken", "route_prefix": "/broken", "status": "DEPLOY_FAILED",
                       "message": "Deploying app 'broken' failed with exception:\nRuntimeError: "
                                  "model file missing", "deployments": {
                           "Broken": {"status": "DEPLOY_FAILED", "message": "The deployment "
                                      "failed to start.\nTraceback (most recent call last):\n"
                                      "  File \"app.py\", line 3\nOSError: weights.pt is "
                                      "corrupt\n"}}},
        }
    }  # fmt: skip
    answers = {
        "/-/healthz": reply(200, b"success"),
        "/-/routes": reply(200, routes_),
        "/api/serve/applications/": reply(200, json.dumps(apps).encode()),
    }
    with http_server(routes(answers)) as server:
        base = f"ray:url={server.url},dashboard-url={server.url}"
        assert passes(f"ray:url={server.url},app=broken").status is Status.PASS  # routes only
        good = passes(f"{base},app=/classify")
        broken = fails(f"{base},app=broken")
        every = fails(base)
        unknown = fails(f"ray:url={server.url},dashboard-url={server.url},app=/nope")
    assert good.message.startswith("ready: proxy healthy, application 'classifier' at /classify")
    assert good.message.split(" in ")[0].endswith("RUNNING")
    assert broken.message == (
        "application 'broken' is DEPLOY_FAILED: Deploying app 'broken' failed with exception: "
        "RuntimeError: model file missing (Broken: OSError: weights.pt is corrupt)"
    )
    assert every.message.startswith("application 'broken' is DEPLOY_FAILED")
    assert unknown.message.startswith("application '/nope' not deployed: /-/routes lists")


def test_help_names_every_preset_in_the_registry() -> None:
    import re

    from torchprobe.checks.server import ServerCheck
    from torchprobe.cli.command import EPILOG

    listed = re.search(r"\(model servers: ([^)]*)\)", " ".join(EPILOG.split()))
    assert listed is not None
    named = {n.strip() for n in re.split(r"[,;]|\band\b", listed.group(1)) if n.strip()}
    presets = {
        n for n in registry.BUILTIN if issubclass(registry.builtin(n) or object, ServerCheck)
    }
    assert named == presets | {"grpc"}


def test_presets_speak_https_verified_or_insecure(tmp_path: Any) -> None:
    from servers import make_certificate, tls_context

    certificate = make_certificate(tmp_path, ["localhost"])
    answers = {"/livez": reply(200, b"\n"), "/readyz": reply(200, b"\n")}
    with http_server(routes(answers), tls=tls_context(*certificate)) as server:
        url = server.url.replace("http://", "https://")
        untrusted = fails(f"bentoml:url={url}")
        outcome = passes(f"bentoml:url={url},insecure=true")
    assert untrusted.message.startswith("GET /readyz: TLS certificate of 127.0.0.1:")
    assert "insecure=true skips verification" in untrusted.message
    assert outcome.details["url"] == f"{url}/"


def test_a_hanging_info_endpoint_costs_at_most_a_second_and_never_the_verdict() -> None:
    with Triton() as server:
        server.hang.add("/v2")
        started = time.monotonic()
        run = run_cli(f"triton:url={server.url},model=resnet50", "--format", "json")
    assert run.rc == 0, run.stdout
    assert time.monotonic() - started < 4
    result = json.loads(run.stdout)["checks"][0]
    assert result["details"]["endpoints"]["/v2"].startswith("timed out after 1s")


def test_the_serve_api_of_a_big_cluster_is_read_whole() -> None:
    # The Serve API lists every application with its config: it outgrows 64 KiB.
    config = {"import_path": "app:build", "runtime_env": {"pip": ["x" * 50] * 40}}
    apps = {
        f"app{i}": {"name": f"app{i}", "route_prefix": f"/app{i}", "status": "RUNNING",
                    "message": "", "deployed_app_config": config, "deployments": {}}
        for i in range(100)
    }  # fmt: skip
    document = json.dumps({"applications": apps}).encode()
    assert len(document) > 200 * 1024
    routes_ = json.dumps({f"/app{i}": f"app{i}" for i in range(100)}).encode()
    answers = {
        "/-/healthz": reply(200, b"success"),
        "/-/routes": reply(200, routes_),
        "/api/serve/applications/": reply(200, document),
    }
    with http_server(routes(answers)) as server:
        outcome = passes(f"ray:url={server.url},dashboard-url={server.url},app=app99")
    assert outcome.details["applications"] == {"app99": "RUNNING"}
