"""The inference canary (``infer=``, ``expect=``, ``generate=true``) against stand-ins.

Each server is shown in four states, through the installed command:

- idle: the canary passes;
- busy: more requests in flight than the server has workers, each slower than
  the probe's interval (all of them complete), and every probe run passes —
  ``mode=live`` without ever waiting for the engine;
- wedged: the health endpoints answer and the inference never does: the canary
  fails on time, naming what the health endpoint answered meanwhile;
- soft-failed: inference answers 200 with empty or wrong results: ``expect=``
  (or the preset's own judge) fails naming path, expected and got.

The real servers that run on a CPU are driven the same way in tests/realservers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, require, run_cli, script
from standins import TGI, VLLM, Ollama, SGLang, StandIn, Triton, _json, load

from torchprobe.base import CheckFailed, UsageError
from torchprobe.checks.canary import BODY_MAX
from torchprobe.engine import registry
from torchprobe.engine.spec import parse_occurrence

pytestmark = pytest.mark.standins

# Commas inside a JSON value never split it: a comma splits only before a
# declared option (KEY=), and no JSON key here reads as one.
TRITON_INFER = '{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
TRITON = f"model=resnet50,infer={TRITON_INFER},expect=outputs.0.data.0=10"


def busy(server: StandIn, clients: int) -> None:
    """Wait until every worker is taken and requests queue behind them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        engine = [
            r for r in server.requests if any(p in r[1] for p in ("infer", "complet", "generate"))
        ]
        if len(engine) >= clients:
            return
        time.sleep(0.05)
    raise AssertionError("the load never reached the server")


def probe(*arguments: str) -> Any:
    run = run_cli(*arguments)
    assert "Traceback" not in run.stderr
    return run


# --- Triton (KServe v2) ---------------------------------------------------------------------


def test_triton_idle_canary_passes_and_sends_the_body_as_json() -> None:
    with Triton() as server:
        run = probe(f"triton:url={server.url},{TRITON}")
    assert run.rc == 0, run.stdout
    assert "inference answer as expected in " in run.stdout
    method, path, headers, body = server.requests[-1]  # after the health endpoints
    assert (method, path) == ("POST", "/v2/models/resnet50/infer")
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == json.loads(TRITON_INFER)


def test_triton_busy_canary_and_live_pass_every_run() -> None:
    with Triton() as server:
        server.workers, server.busy = 1, 0.5  # one model instance, 0.5 s a request
        body = json.loads(TRITON_INFER)
        with load(f"{server.url}/v2/models/resnet50/infer", body, clients=3) as statuses:
            busy(server, 3)
            runs = [probe("--timeout", "20", f"triton:url={server.url},{TRITON},timeout=15")
                    for _ in range(2)]  # fmt: skip
            live = probe(f"triton:url={server.url},mode=live,timeout=5")
        completed = list(statuses)
    for run in runs:
        assert run.rc == 0, run.stdout
    assert live.rc == 0, live.stdout
    assert len(completed) >= 3 and set(completed) == {200}


def test_triton_wedged_canary_fails_on_time_with_the_contrast() -> None:
    with Triton() as server:
        server.hang.add("/v2/models/resnet50/infer")
        health = probe(f"triton:url={server.url},model=resnet50,timeout=2")
        run = probe(f"triton:url={server.url},{TRITON},timeout=2")
    assert health.rc == 0, health.stdout  # the fake-dead: every health endpoint says ready
    assert run.rc == 1, run.stdout
    assert run.elapsed < 2 + 5
    assert (
        "POST /v2/models/resnet50/infer: inference did not answer in 2s "
        "(GET /v2/models/resnet50/ready answered HTTP 200 OK in "
    ) in run.stdout


def test_the_contrast_is_in_the_json_details_and_a_big_answer_is_bounded() -> None:
    class Big(StandIn):
        size = 512 * 1024

        def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            if path == "/health":
                return 200, b"ok", "text/plain"
            return _json(200, {"labels": ["cat"], "mask": "x" * self.size})

    with Big() as server:
        server.hang.add("/predict")
        wedged = probe("--format", "json", f"litserve:url={server.url},infer=[1],timeout=2")
        server.hang.clear()
        big = probe(f"litserve:url={server.url},infer=[1],expect=labels.0=cat")
        server.size = 8 * 1024 * 1024
        huge = probe(f"litserve:url={server.url},infer=[1],expect=labels.0=cat")
    details = json.loads(wedged.stdout)["checks"][0]["details"]
    assert details["answered"].startswith("GET /health answered HTTP 200 OK in ")
    assert big.rc == 0, big.stdout  # half a MiB of answer is read whole
    assert huge.rc == 1
    assert "the body exceeds 1024 KiB and cannot be read as JSON" in huge.stdout


def test_triton_soft_failed_model_fails_naming_path_expected_and_got() -> None:
    with Triton() as server:
        server.soft_failed = True
        plain = probe(f"triton:url={server.url},model=resnet50,infer={TRITON_INFER}")
        run = probe(f"triton:url={server.url},{TRITON}")
    assert plain.rc == 0, plain.stdout  # without expect= any JSON 2xx passes
    assert run.rc == 1, run.stdout
    assert (
        "wrong answer: POST /v2/models/resnet50/infer answered HTTP 200 OK, "
        "but JSON outputs.0.data.0 is 0.0 (expected '10')"
    ) in run.stdout


def test_triton_version_and_unknown_model_in_the_canary() -> None:
    with Triton(models={"resnet50": {"1": True, "2": True}}) as server:
        versioned = probe(f"triton:url={server.url},{TRITON},version=2")
        server.models["resnet50"] = {"1": True}
        gone = probe(f"triton:url={server.url},{TRITON},version=2")
    assert versioned.rc == 0, versioned.stdout
    assert ("POST", "/v2/models/resnet50/versions/2/infer") in [r[:2] for r in server.requests]
    assert gone.rc == 1
    assert "not ready: GET /v2/models/resnet50/versions/2/ready" in gone.stdout


# --- vLLM -----------------------------------------------------------------------------------


def test_vllm_canary_idle_busy_wedged_soft_failed() -> None:
    with VLLM() as server:
        spec = f"vllm:url={server.url},model=facebook/opt-125m,generate=true"
        idle = probe(spec)
        server.workers, server.busy = 2, 0.5
        body = {"model": "facebook/opt-125m", "prompt": "Hi", "max_tokens": 16}
        with load(f"{server.url}/v1/completions", body, clients=4) as statuses:
            busy(server, 4)
            loaded = [probe("--timeout", "20", f"{spec},timeout=15") for _ in range(2)]
            live = probe(f"vllm:url={server.url},mode=live,timeout=5")
        completed = list(statuses)
        server.soft_failed = True
        soft = probe(spec)
        server.soft_failed = False
        server.hang.add("/v1/completions")
        wedged = probe(f"{spec},timeout=2")
        plain = probe(f"vllm:url={server.url},model=facebook/opt-125m,timeout=2")
    assert idle.rc == 0, idle.stdout
    assert all(run.rc == 0 for run in loaded), [run.stdout for run in loaded]
    assert live.rc == 0, live.stdout
    assert len(completed) >= 4 and set(completed) == {200}
    assert soft.rc == 1
    assert "cannot generate: POST /v1/completions answered HTTP 200 without choices" in soft.stdout
    assert wedged.rc == 1 and wedged.elapsed < 2 + 5
    assert (
        "POST /v1/completions: inference did not answer in 2s (GET /v1/models answered HTTP 200"
    ) in wedged.stdout
    assert plain.rc == 0  # /health and /v1/models say all is well


# --- TGI: /health queues, /info does not ------------------------------------------------------


def test_tgi_live_uses_the_router_and_never_waits_for_the_queue() -> None:
    with TGI() as server:
        server.workers, server.busy = 1, 3.0
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 20}}
        with load(f"{server.url}/generate", body, clients=2) as statuses:
            busy(server, 2)
            live = [probe(f"tgi:url={server.url},mode=live,timeout=2") for _ in range(2)]
            queued = probe(f"tgi:url={server.url},timeout=2")
            # The run's own deadline (--timeout, 10 s by default) bounds the check's.
            ready = probe("--timeout", "40", f"tgi:url={server.url},timeout=30")
        completed = list(statuses)
    for run in live:
        assert run.rc == 0, run.stdout
        assert "live: router up in " in run.stdout
    # The old liveness endpoint, under the same load: it waits for the shards.
    assert queued.rc == 1 and "GET /health: timed out after 2s" in queued.stdout
    assert ready.rc == 0, ready.stdout  # a timeout longer than the queue
    assert len(completed) >= 2 and set(completed) == {200}
    assert [r[1] for r in server.requests if r[1] == "/info"]


def test_tgi_generate_idle_wedged_and_failing() -> None:
    with TGI() as server:
        idle = probe(f"tgi:url={server.url},generate=true")
        server.hang.add("/generate")
        wedged = probe(f"tgi:url={server.url},generate=true,timeout=2")
        server.hang.clear()
        server.healthy = False
        broken = probe(f"tgi:url={server.url},mode=live")
    assert idle.rc == 0, idle.stdout
    assert "generated 1 token in " in idle.stdout
    sent = next(r for r in server.requests if r[1] == "/generate")
    assert json.loads(sent[3]) == {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    assert wedged.rc == 1 and wedged.elapsed < 2 + 5
    assert "POST /generate: inference did not answer in 2s (GET /info answered" in wedged.stdout
    assert broken.rc == 0  # live does not run the shards: liveness is the router


# --- SGLang ---------------------------------------------------------------------------------


def test_sglang_live_answers_while_busy_and_ready_waits_for_its_token() -> None:
    with SGLang() as server:
        server.workers, server.busy = 1, 1.0
        body = {"text": "Hello", "sampling_params": {"max_new_tokens": 20}}
        with load(f"{server.url}/generate", body, clients=3) as statuses:
            busy(server, 3)
            live = probe(f"sglang:url={server.url},mode=live,timeout=5")
            ready = probe(f"sglang:url={server.url}")
            generate = probe(f"sglang:url={server.url},generate=true")
        completed = list(statuses)
    assert live.rc == 0 and "live: server up in " in live.stdout, live.stdout
    assert ready.rc == 0, ready.stdout
    assert generate.rc == 0, generate.stdout
    assert len(completed) >= 3 and set(completed) == {200}


# --- Ollama ---------------------------------------------------------------------------------


def test_ollama_canary_idle_busy_wedged_soft_failed() -> None:
    with Ollama() as server:
        spec = f'ollama:url={server.url},model=llama3.2,infer={{"prompt":"Say hi"}}'
        idle = probe(f"{spec},expect=response=Hello")
        server.busy = 0.5  # one request at a time
        body = {"model": "llama3.2", "prompt": "a long story", "stream": False}
        with load(f"{server.url}/api/generate", body, clients=3) as statuses:
            busy(server, 3)
            loaded = probe("--timeout", "20", f"{spec},timeout=15")
            live = probe(f"ollama:url={server.url},mode=live,timeout=5")
        completed = list(statuses)
        server.soft_failed = True
        soft = probe(f"{spec},expect=response=Hello")
        server.soft_failed = False
        server.hang.add("/api/generate")
        wedged = probe(f"{spec},timeout=2")
    assert idle.rc == 0, idle.stdout
    sent = next(r for r in server.requests if r[1] == "/api/generate")
    assert json.loads(sent[3]) == {"prompt": "Say hi", "model": "llama3.2", "stream": False}
    assert loaded.rc == 0 and live.rc == 0, loaded.stdout + live.stdout
    assert len(completed) >= 3 and set(completed) == {200}
    assert soft.rc == 1
    assert "but JSON response is \"\" (expected 'Hello')" in soft.stdout
    assert wedged.rc == 1 and wedged.elapsed < 2 + 5
    assert "POST /api/generate: inference did not answer in 2s (GET /api/tags answered" in (
        wedged.stdout
    )


# --- the other presets' inference endpoints ---------------------------------------------------


class Routes(StandIn):
    """Fixed JSON answers by path; everything else 404."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__()
        self.answers = answers

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if path in self.answers:
            return _json(200, self.answers[path])
        return _json(404, {"detail": "Not Found"})


@pytest.mark.parametrize(
    ("preset", "options", "health", "inference"),
    [
        ("torchserve", "model=tiny,management-url={url}",
         {"/ping": {"status": "Healthy"}, "/models/tiny": [{"workers": [{"status": "READY"}]}]},
         "/predictions/tiny"),
        ("kserve", "model=m", {"/v2/health/live": {}, "/v2/models/m/ready": {}},
         "/v2/models/m/infer"),
        ("kserve", "protocol=v1,model=m", {"/v1/models/m": {"ready": True}},
         "/v1/models/m:predict"),
        ("bentoml", "api=classify", {"/readyz": {}}, "/classify"),
        ("litserve", "", {"/health": {}}, "/predict"),
        ("ray", "app=clf", {"/-/healthz": {}, "/-/routes": {"/classify": "clf"}}, "/classify"),
    ],
)  # fmt: skip
def test_each_preset_posts_infer_to_its_inference_endpoint(
    preset: str, options: str, health: dict[str, Any], inference: str
) -> None:
    answers = {**health, inference: {"labels": ["cat"]}}
    with Routes(answers) as server:
        options = options.format(url=server.url)
        base = f"{preset}:url={server.url}" + (f",{options}" if options else "")
        good = probe(f'{base},infer={{"inputs":[[1,2,3,4]]}},expect=labels.0=cat')
        wrong = probe(f'{base},infer={{"inputs":[[1,2,3,4]]}},expect=labels.0=dog')
    assert good.rc == 0, good.stdout
    posted = [r for r in server.requests if r[0] == "POST"]
    assert posted and {r[1] for r in posted} == {inference}
    assert json.loads(posted[0][3]) == {"inputs": [[1, 2, 3, 4]]}
    assert wrong.rc == 1
    assert f"wrong answer: POST {inference} answered HTTP 200 OK, but JSON labels.0 is" in (
        wrong.stdout
    )
    assert "\"cat\" (expected 'dog')" in wrong.stdout


def test_a_2xx_that_is_not_json_is_a_wrong_answer_and_an_error_quotes_the_body() -> None:
    class Odd(StandIn):
        status = 200

        def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            if path == "/health":
                return 200, b"ok", "text/plain"
            if self.status == 200:
                return 200, b"<html>maintenance</html>", "text/html"
            return _json(self.status, {"error": "CUDA out of memory"})

    with Odd() as server:
        html = probe(f"litserve:url={server.url},infer=[1]")
        server.status = 500
        error = probe(f"litserve:url={server.url},infer=[1]")
    assert html.rc == 1
    assert "wrong answer: POST /predict answered HTTP 200 OK, but the body is not JSON" in (
        html.stdout
    )
    assert error.rc == 1
    assert "inference failed: POST /predict answered HTTP 500 Internal Server Error: " in (
        error.stdout
    )
    assert "CUDA out of memory" in error.stdout


# --- infer=@PATH and content-type= ----------------------------------------------------------


def test_infer_file_is_read_on_every_run(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text('{"inputs": [[1, 2, 3, 4]]}')
    cls = registry.builtin("litserve")
    assert cls is not None
    with Routes({"/health": {}, "/predict": {"labels": ["cat"]}}) as server:
        token = f"litserve:url={server.url},infer=@{sample}"
        occurrence = parse_occurrence(token, {o.key: o for o in cls.options}, os.environ)
        check = cls(**occurrence.values, timeout=5)
        for body in ('{"inputs": [[1, 2, 3, 4]]}', '{"inputs": [[9, 9, 9, 9]]}'):
            sample.write_text(body)  # a new sample between runs, no new process
            check.deadline = time.monotonic() + 5
            check.run()
        sample.write_text("{broken")
        check.deadline = time.monotonic() + 5
        with pytest.raises(CheckFailed, match=r"infer=@.*sample.json: not JSON"):
            check.run()
    posted = [json.loads(r[3]) for r in server.requests if r[0] == "POST"]
    assert posted == [{"inputs": [[1, 2, 3, 4]]}, {"inputs": [[9, 9, 9, 9]]}]


def test_content_type_sends_a_file_as_it_is(tmp_path: Path) -> None:
    image = tmp_path / "kitten.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with Routes({"/health": {}, "/predict": {"label": "cat"}}) as server:
        run = probe(
            f"litserve:url={server.url},infer=@{image},content-type=image/jpeg,expect=label=cat"
        )
    assert run.rc == 0, run.stdout
    posted = next(r for r in server.requests if r[0] == "POST")
    assert posted[2]["content-type"] == "image/jpeg"
    assert posted[3] == image.read_bytes()


def test_the_canary_waits_for_readiness() -> None:
    # /models/tiny (the management API) is not answered: no inference is sent
    # to a model that is not ready.
    with Routes({"/ping": {"status": "Healthy"}, "/predictions/tiny": [[0.1, 0.2]]}) as server:
        run = probe(f"torchserve:url={server.url},management-url={server.url},model=tiny,"
                    "infer=[[1,2,3,4]]")  # fmt: skip
    assert run.rc == 1
    assert "model 'tiny' is not registered: GET /models/tiny answered HTTP 404" in run.stdout
    assert not [r for r in server.requests if r[0] == "POST"]


# --- bad input: one line on stderr, exit 1 ----------------------------------------------------


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def _big(tmp_path: Path) -> str:
    path = tmp_path / "big.json"
    path.write_text('{"x": "' + "a" * BODY_MAX + '"}')
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "litserve:infer={not json", "option 'infer': not JSON (Expecting"),
        (lambda d: "litserve:infer=@", "@PATH names no file"),
        (lambda d: f"litserve:infer=@{d}/missing.json", "missing.json: cannot read it: No such"),
        (lambda d: f"litserve:infer=@{d}", "not a regular file"),
        (_fifo, "not a regular file"),
        (_big, "over the 1 MiB limit"),
        (lambda d: "litserve:infer=[1],expect=nothing", "expected PATH=VALUE"),
        (lambda d: "litserve:expect=a=1", "expect= is for the answer of infer="),
        (lambda d: "litserve:content-type=text/plain", "content-type= is for the answer"),
        (lambda d: "torchserve:infer=[1]", "infer= needs model= (POST /predictions/{model})"),
        (lambda d: "triton:infer=[1]", "infer= needs model="),
        (lambda d: "bentoml:infer=[1]", "infer= needs api= (POST /{api})"),
        (lambda d: "ray:infer=[1]", "infer= needs app="),
        (lambda d: "litserve:mode=live,infer=[1]", "infer= sends inference, which mode=live"),
        (lambda d: "vllm:mode=live,generate=true", "generate=true sends inference, which mode=l"),
        (lambda d: "tgi:mode=live,generate=true", "generate=true sends inference"),
        (lambda d: "sglang:mode=live,generate=true", "generate=true sends inference"),
        (lambda d: "torchserve:mode=live,model=m,infer=[1]", "mode=live never does"),
    ],
)
def test_bad_canary_input_is_one_line_exit_1(tmp_path: Path, make: Any, message: str) -> None:
    token = make(tmp_path)
    if token.startswith("/"):  # the fifo and the big file: a path
        token = f"litserve:infer=@{token}"
    started = time.monotonic()
    run = run_cli(token)
    assert run.rc == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("torchprobe: error: ")
    assert message in lines[0], lines[0]
    assert time.monotonic() - started < 30  # a FIFO must not block the parse


def test_an_unreadable_infer_file_is_one_line_exit_1(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text("[1]")
    sample.chmod(0)
    command = [str(script()), f"litserve:infer=@{sample}"]
    if os.geteuid() == 0:
        # Root reads any file through CAP_DAC_OVERRIDE: the probe runs without
        # it (and without CAP_DAC_READ_SEARCH), as in an image that drops them.
        setpriv = shutil.which("setpriv")
        require(setpriv is not None, "setpriv (util-linux) is not installed")
        command = [str(setpriv), "--bounding-set", "-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env=clean_env(), stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "cannot read it: Permission denied" in done.stderr


def test_the_canary_makes_a_check_a_readiness_check() -> None:
    def built(token: str) -> Any:
        name = token.partition(":")[0]
        cls = registry.builtin(name)
        assert cls is not None
        values = parse_occurrence(token, {o.key: o for o in cls.options}, os.environ).values
        return cls(**values)

    assert built("vllm:mode=live").checks_readiness() is False
    assert built("vllm:generate=true").checks_readiness() is True
    assert built("litserve:mode=live").checks_readiness() is False
    assert built("litserve:infer=[1]").checks_readiness() is True
    assert built("tgi").checks_readiness() is True
    with pytest.raises(UsageError):
        built("tgi:mode=live,generate=true")


def test_every_canary_example_in_the_readme_is_a_valid_command() -> None:
    import re
    import shlex

    from docs_text import documentation

    lines = list(dict.fromkeys(re.findall(r"^torchprobe '.*'$", documentation(), re.M)))
    # As many as the README held before they moved to docs/.
    assert len(lines) >= 5, lines
    for line in lines:
        arguments = shlex.split(line)[1:]
        run = run_cli(*arguments, "--dry-run")
        assert run.rc == 0, (line, run.stdout, run.stderr)
