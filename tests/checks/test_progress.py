"""``stall=`` on the presets and the generic ``progress`` check, through the
installed command, against stand-ins that serve each server's real metrics
(tests/metrics_standins.py).

Progress is judged across runs, so each case runs the command two or three
times with ``stall=1s`` and sleeps past it between runs; nothing here depends
on how fast the machine is: a stand-in's counters move at each scrape when
it is busy and never when it is wedged.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import metrics_standins as ms
import pytest
from conftest import Run, clean_env, require, run_cli
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from servers import closed_port, http_server, reply, routes
from standins import Triton

from torchprobe.checks.progress import watch

pytestmark = pytest.mark.standins
PAST_STALL = 1.2  # a sleep that outlasts stall=1s


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(TORCHPROBE_STATE_DIR=str(tmp_path / "state"))


def probe(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = run_cli(*args, env=env)
    return done.rc, done.stdout, done.stderr


def json_run(env: dict[str, str], token: str) -> dict[str, object]:
    done = run_cli("--format", "json", token, env=env)
    document = json.loads(done.stdout)
    check = document["checks"][0]
    assert isinstance(check, dict)
    return check


# --- vLLM ------------------------------------------------------------------------------


def test_vllm_wedged_engine_behind_a_live_api_fails_after_stall(env: dict[str, str]) -> None:
    # /health answers 200 (the API server is up) while the engine holds its
    # requests and no token counter moves: vLLM #39863, #46811.
    with ms.VLLM() as server:
        server.work.state = "wedged"
        token = f"vllm:url={server.url},mode=live,stall=1s"
        rc, out, _ = probe(env, token)
        assert rc == 0, out
        assert "first reading (4 requests running, 2 waiting); progress is judged" in out
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
        assert rc == 1, out
        assert re.search(
            r"stalled: 4 requests running, 2 waiting, no token processed for \d+s \(stall=1s\)", out
        ), out
        check = json_run(env, token)
        figures = check["details"]["progress"]  # type: ignore[index]
        assert figures["state"] == "stalled" and figures["pending"] == 6
        assert figures["pending_by"] == {"requests running": 4, "waiting": 2}
        assert figures["seconds_since_progress"] >= 1
        prom = run_cli("--format", "prometheus", token, env=env).stdout
        assert 'torchprobe_progress_pending{check="vllm",name="vllm"} 6' in prom
        assert 'torchprobe_progress_seconds_since{check="vllm",name="vllm"}' in prom
        assert ("GET", "/health") in [(m, p) for m, p, _, _ in server.requests]


def test_vllm_busy_engine_passes_every_run(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        server.work.state = "busy"
        token = f"vllm:url={server.url},stall=1s"
        outputs = []
        for _ in range(3):
            rc, out, _ = probe(env, token)
            assert rc == 0, out
            outputs.append(out)
            time.sleep(PAST_STALL)
    assert "first reading" in outputs[0]
    assert all("progressing: 4 requests running, 2 waiting" in o for o in outputs[1:])
    assert "ready: engine up, serving 'facebook/opt-125m'" in outputs[1]


def test_vllm_idle_engine_passes(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        token = f"vllm:url={server.url},stall=1s"
        probe(env, token)
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 0 and "idle: nothing pending" in out, out


def test_vllm_model_narrows_to_that_models_series(env: dict[str, str]) -> None:
    with ms.VLLM(models=["good", "stuck"]) as server:
        server.busy_models = ["stuck"]
        server.work.state = "wedged"
        for model in ("good", "stuck"):
            probe(env, f"vllm:url={server.url},model={model},stall=1s")
        time.sleep(PAST_STALL)
        good = probe(env, f"vllm:url={server.url},model=good,stall=1s")
        stuck = probe(env, f"vllm:url={server.url},model=stuck,stall=1s")
    assert good[0] == 0 and "idle: nothing pending" in good[1], good
    assert stuck[0] == 1 and "stalled: 4 requests running" in stuck[1], stuck


def test_a_counter_reset_after_a_restart_is_a_first_reading(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        server.work.state = "busy"
        token = f"vllm:url={server.url},stall=1s"
        probe(env, token)
        probe(env, token)
        server.restart()  # the server came back: counters from zero, work stuck
        server.work.state = "wedged"
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
        assert rc == 0, out
        assert "the counters went down: the server restarted" in out
        assert "progress is judged from the next run" in out
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 1 and "stalled" in out, out


def test_progress_then_a_wedge_fails_only_after_the_duration(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        server.work.state = "busy"
        token = f"vllm:url={server.url},stall=3s"
        probe(env, token)
        probe(env, token)
        server.work.state = "wedged"
        rc, out, _ = probe(env, token)  # no movement yet, but far from 3 s
        assert rc == 0 and "pending: 4 requests running, 2 waiting, no token" in out, out
        time.sleep(3.2)
        rc, out, _ = probe(env, token)
    assert rc == 1 and "(stall=3s)" in out, out


# --- TGI, SGLang, Triton, BentoML ------------------------------------------------------


@pytest.mark.parametrize(
    ("stand_in", "name", "busy", "stalled"),
    [
        (ms.TGI, "tgi", "progressing: 4 requests in the batch, 2 queued",
         "stalled: 4 requests in the batch, 2 queued, no generation step for"),
        (ms.SGLang, "sglang", "progressing: 4 requests running, 2 queued",
         "stalled: 4 requests running, 2 queued, no token generated for"),
    ],
)  # fmt: skip
def test_llm_servers_idle_and_busy_pass_and_wedged_fail(
    env: dict[str, str], stand_in: type[ms.Metered], name: str, busy: str, stalled: str
) -> None:
    with stand_in() as server:
        server.delay = {}  # SGLang's 1 s health answer is not what this is about
        token = f"{name}:url={server.url},stall=1s"
        rc, out, _ = probe(env, token)
        assert rc == 0 and "first reading; progress is judged from the next run" in out, out
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
        assert rc == 0 and "idle: nothing pending" in out, out
        server.work.state = "busy"
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
        assert rc == 0 and busy in out, out
        server.work.state = "wedged"
        probe(env, token)
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 1 and stalled in out, out


def test_triton_judges_the_model_and_version_on_its_metrics_port(env: dict[str, str]) -> None:
    with Triton(models={"a": {"1": True}, "b": {"1": True}}) as api:
        with ms.TritonMetrics(models={"a": ["1"], "b": ["1"]}) as metrics:
            metrics.busy_models = [("b", "1")]
            metrics.work.state = "wedged"
            base = f"triton:url={api.url},metrics-url={metrics.url}/metrics,stall=1s"
            for model in ("a", "b"):
                probe(env, f"{base},model={model},version=1")
            time.sleep(PAST_STALL)
            a = probe(env, f"{base},model=a,version=1")
            b = probe(env, f"{base},model=b,version=1")
            metrics.work.state = "busy"
            probe(env, f"{base},model=b,version=1")
            moving = probe(env, f"{base},model=b,version=1")
    assert a[0] == 0 and "idle: nothing pending" in a[1], a
    assert b[0] == 1 and "stalled: 2 requests pending, no model execution for" in b[1], b
    assert moving[0] == 0 and "progressing: 2 requests pending" in moving[1], moving


def test_triton_reads_its_metrics_port_8002_by_default(env: dict[str, str]) -> None:
    # Without metrics-url=, Triton's metrics are on the server's host at port 8002.
    metrics = ms.TritonMetrics(models={"m": ["1"]})
    metrics.port = 8002
    try:
        metrics.__enter__()
    except OSError as exc:
        pytest.skip(f"port 8002 is not free here: {exc}")
    try:
        metrics.work.state = "wedged"
        with Triton(models={"m": {"1": True}}) as api:
            token = f"triton:url={api.url},mode=live,stall=1s"
            first = probe(env, token)
            time.sleep(PAST_STALL)
            stalled = probe(env, token)
    finally:
        metrics.__exit__(None, None, None)
    assert first[0] == 0 and "first reading (2 requests pending)" in first[1], first
    assert stalled[0] == 1 and "stalled: 2 requests pending, no model execution" in stalled[1]
    assert ("GET", "/metrics") in [(m, p) for m, p, _, _ in metrics.requests]


def test_bentoml_health_and_timed_out_requests_are_not_progress(env: dict[str, str]) -> None:
    # BentoML counts /livez and /readyz in bentoml_service_request_total like
    # any request, so the probe's own requests must not read as progress; nor
    # must a wedged request that its traffic timeout answered 504.
    with ms.BentoML() as server:
        server.work.state = "wedged"
        token = f"bentoml:url={server.url},mode=live,stall=1s"
        probe(env, token)
        time.sleep(PAST_STALL)
        server.time_out()
        rc, out, _ = probe(env, token)
        assert rc == 1 and "stalled: 6 requests in progress, no request completed" in out, out
        server.work.state = "busy"
        probe(env, token)
        rc, out, _ = probe(env, token)
    assert rc == 0 and "progressing: 6 requests in progress" in out, out


# --- the metrics endpoint misbehaving --------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("missing", "metrics: GET /metrics answered HTTP 404 Not Found (SGLang serves /metrics "
                    "only when started with --enable-metrics)"),
        ("huge", "metrics: GET /metrics answered more than 8 MiB"),
        ("flood", "metrics: GET /metrics: more than 10000 lines of the selected metrics"),
        ("garbage", "metrics: GET /metrics: the metrics show no sglang:num_running_reqs or "
                    "sglang:num_queue_reqs"),
        ("nan", "metrics: GET /metrics: the metrics show no"),
    ],
)  # fmt: skip
def test_a_broken_metrics_endpoint_fails_with_the_reason(
    env: dict[str, str], fault: str, expected: str
) -> None:
    with ms.SGLang() as server:
        server.delay = {}
        server.fault = fault
        done = run_cli(f"sglang:url={server.url},stall=1s", env=env)
    assert done.rc == 1 and expected in done.stdout, done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert done.elapsed < 30


@pytest.mark.parametrize("fault", ["line", "duplicate"])
def test_a_huge_line_or_duplicate_series_change_nothing(env: dict[str, str], fault: str) -> None:
    with ms.VLLM() as server:
        server.fault = fault
        server.work.state = "wedged"
        token = f"vllm:url={server.url},stall=1s"
        rc, out, _ = probe(env, token)
        assert rc == 0 and "first reading (4 requests running, 2 waiting)" in out, out
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 1 and "stalled: 4 requests running, 2 waiting" in out, out


def test_a_slow_metrics_endpoint_fails_at_the_timeout(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        server.delay = {"/metrics": 30.0}
        done = run_cli(f"vllm:url={server.url},stall=1s,timeout=1", env=env)
    assert done.rc == 1 and "metrics: GET /metrics: timed out after 1s" in done.stdout
    assert done.elapsed < 1 + 5  # the timeout, plus a process start on a loaded machine


def test_an_unreachable_metrics_url_fails_naming_it(env: dict[str, str]) -> None:
    port = closed_port()
    with ms.VLLM() as server:
        done = run_cli(
            f"vllm:url={server.url},stall=1s,metrics-url=http://127.0.0.1:{port}/metrics", env=env
        )
    assert done.rc == 1
    assert f"metrics: GET /metrics: connection refused: 127.0.0.1:{port}" in done.stdout


def test_credentials_go_to_the_metrics_url_only_on_the_servers_origin(
    env: dict[str, str],
) -> None:
    with ms.VLLM(api_key="sekret") as server, ms.VLLM() as elsewhere:
        run_cli(f"vllm:url={server.url},token=sekret,stall=1s", env=env)
        run_cli(
            f"vllm:url={server.url},token=sekret,stall=1s,metrics-url={elsewhere.url}/metrics",
            env=env,
        )
    own = [h for _, p, h, _ in server.requests if p == "/metrics"]
    other = [h for _, p, h, _ in elsewhere.requests if p == "/metrics"]
    assert own and own[0].get("authorization") == "Bearer sekret"
    assert other and "authorization" not in other[0]


# --- state -----------------------------------------------------------------------------


def test_one_state_file_per_server_named_by_a_hash(env: dict[str, str]) -> None:
    with ms.VLLM() as one, ms.VLLM() as two:
        for server in (one, two):
            assert probe(env, f"vllm:url={server.url},token=sekret,stall=1s")[0] == 0
    names = sorted(os.listdir(env["TORCHPROBE_STATE_DIR"]))
    assert len(names) == 2, names
    for name in names:
        assert name.startswith("progress-") and name.endswith(".state")
        assert "127.0.0.1" not in name and "sekret" not in name and ".json" not in name
    for name in names:
        assert "sekret" not in Path(env["TORCHPROBE_STATE_DIR"], name).read_text()


def test_a_state_directory_that_cannot_be_written_fails_saying_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = clean_env(TORCHPROBE_STATE_DIR=str(blocker))
    with ms.VLLM() as server:
        first = run_cli(f"vllm:url={server.url},stall=1s", env=env)
        second = run_cli(f"vllm:url={server.url},stall=1s", env=env)
    for done in (first, second):  # never a silent "first reading" run after run
        assert done.rc == 1, done.stdout
        assert f"cannot keep progress state in {blocker}/progress-" in done.stdout
        assert "set TORCHPROBE_STATE_DIR to a writable directory" in done.stdout


def run_with_the_state_locked(env: dict[str, str], token: str, *flags: str) -> tuple[Run, str]:
    """One run of ``token`` while this process holds the flock of its state file
    (made by a first run): the run, and the state file's name."""
    import fcntl

    assert probe(env, token)[0] == 0
    [name] = os.listdir(env["TORCHPROBE_STATE_DIR"])
    fd = os.open(os.path.join(env["TORCHPROBE_STATE_DIR"], name), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return run_cli(*flags, token, env=env), name
    finally:
        os.close(fd)


def test_a_state_file_locked_by_another_run_fails_saying_so(env: dict[str, str]) -> None:
    # Each run reads and replaces its reading under an flock of the state file;
    # a run that cannot have it within the lock's wait (1 s) fails, never judges
    # without the previous reading.
    with ms.VLLM() as server:
        token = f"vllm:url={server.url},stall=1s"
        held, name = run_with_the_state_locked(env, token)
        free = run_cli(token, env=env)
    assert held.rc == 1, held.stdout
    assert f"cannot keep progress state in {env['TORCHPROBE_STATE_DIR']}/{name}" in held.stdout
    assert "locked by another run" in held.stdout, held.stdout
    assert free.rc == 0 and "idle: nothing pending" in free.stdout, free.stdout


def test_a_held_state_lock_is_waited_for_no_longer_than_the_checks_timeout(
    env: dict[str, str],
) -> None:
    """The lock's own wait (1 s) is cut to what is left of the check's timeout:
    the message says how long it waited, which the timeout bounds."""
    import re

    with ms.VLLM() as server:
        token = f"vllm:url={server.url},stall=1s,timeout=0.5s"
        held, _ = run_with_the_state_locked(env, token, "--format", "json")
    assert held.rc == 1, held.stdout
    (check,) = json.loads(held.stdout)["checks"]
    found = re.search(r"locked by another run for ([0-9.e-]+)s", check["message"])
    assert found is not None, check["message"]
    assert float(found.group(1)) <= 0.5, check["message"]


def test_a_state_file_of_another_life_of_pid_1_is_no_reading(env: dict[str, str]) -> None:
    with ms.VLLM() as server:
        server.work.state = "wedged"
        token = f"vllm:url={server.url},stall=1s"
        probe(env, token)
        state = Path(env["TORCHPROBE_STATE_DIR"])
        (path,) = state.iterdir()
        document = json.loads(path.read_text())
        document["life"] = "another-boot:1"  # as if the container had restarted
        path.write_text(json.dumps(document))
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 0 and "first reading" in out, out


# --- usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("torchserve:stall=30s", "check 'torchserve': stall= needs a metric of pending work, "
         "and TorchServe's metrics (0.12, port 8082) show only ts_inference_latency_microseconds"),
        ("litserve:stall=30s", "LitServe has no metrics endpoint of its own; infer="),
        ("ollama:stall=30s", "Ollama has no metrics endpoint; infer= (one real inference"),
        ("kserve:stall=30s", "only latency histograms"),
        ("vllm:stall=0", "a duration must be greater than zero"),
        ("vllm:stall=soon", "is not a duration"),
        ("vllm:metrics-url=http://127.0.0.1:1/metrics", "metrics-url= is for stall="),
        ("ray:stall=30s", "check 'ray': stall= needs metrics-url=: Ray exports metrics on each"),
        ("progress:url=http://127.0.0.1:1/metrics,pending=a{b=1},done=c,stall=1s",
         "bad label matcher"),
        ("progress:url=http://127.0.0.1:1/metrics,pending=a|,done=c,stall=1s", "empty metric"),
        ("progress:url=http://127.0.0.1:1/metrics,pending=a,done=c", "stall"),
        ('progress:url=http://127.0.0.1:1/metrics,pending=a{b=~"("},done=c,stall=1s',
         "bad regex"),
    ],
)  # fmt: skip
def test_bad_stall_options_are_one_line_errors(token: str, message: str) -> None:
    done = run_cli(token)
    assert done.rc == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchprobe: error: "), done.stderr
    assert message in lines[0], lines[0]


def test_without_prometheus_client_stall_says_what_to_install(tmp_path: Path) -> None:
    # A sitecustomize that makes prometheus_client unimportable, as where it is
    # not installed (find_spec answers None for a None in sys.modules).
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['prometheus_client'] = None\n"
    )
    env = clean_env(PYTHONPATH=str(tmp_path))
    done = run_cli("vllm:stall=30s", env=env)
    assert done.rc == 1
    assert done.stderr.strip() == (
        "torchprobe: error: check 'vllm': stall= needs prometheus-client: "
        "pip install 'torchprobe[metrics]'"
    )


# --- the generic check -----------------------------------------------------------------


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge, Counter]]:
    registry = CollectorRegistry()
    pending = Gauge("nv_inference_pending_request_count", "p", ["model", "version"],
                    registry=registry)  # fmt: skip
    done = Counter("nv_inference_exec_count", "e", ["model", "version"], registry=registry)
    pending.labels("m", "1").set(3)
    pending.labels("m", "2").set(0)
    done.labels("m", "1")
    done.labels("m", "2")
    with http_server(lambda request: reply(200, generate_latest(registry))) as server:
        yield f"{server.url}/metrics", pending, done


def test_progress_with_label_matchers(env: dict[str, str], exporter: tuple[str, Gauge, Counter]
                                      ) -> None:  # fmt: skip
    url, _, done = exporter
    # Commas inside {} never start a new option: no escaping.
    pending = 'nv_inference_pending_request_count{model="m",version="1"}'
    done_ = 'nv_inference_exec_count{model="m",version="1"}'
    token = f"progress:url={url},pending={pending},done={done_},stall=1s"
    rc, out, _ = probe(env, token)
    assert rc == 0 and "first reading (3 nv_inference_pending_request_count)" in out, out
    done.labels("m", "2").inc(5)  # another version's progress is not this one's
    time.sleep(PAST_STALL)
    rc, out, _ = probe(env, token)
    assert rc == 1 and "stalled: 3 nv_inference_pending_request_count, no done counter" in out
    done.labels("m", "1").inc()
    rc, out, _ = probe(env, token)
    assert rc == 0 and "progressing" in out, out


def test_progress_against_a_monitored_server(env: dict[str, str]) -> None:
    """The in-process monitor's /metrics: requests in flight in guard() and
    the requests that completed, as the progress check reads them."""
    import importlib.util

    require(importlib.util.find_spec("flask") is not None, "flask is not installed")
    from flask import Flask
    from werkzeug.serving import make_server

    from torchprobe.integrations.flask import init_app
    from torchprobe.monitor import Monitor

    monitor = Monitor(checks=[], interval=60, status_dir=False)
    app = Flask("served")
    init_app(app, monitor, registry=CollectorRegistry())
    release = threading.Event()

    @app.route("/predict")
    def predict() -> str:
        release.wait(20)
        return "ok"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    token = (f"progress:url={base}/metrics,pending=torchprobe_requests_in_flight,"
             "done=torchprobe_requests_completed_total,stall=1s")  # fmt: skip
    try:
        clients = [threading.Thread(target=_get, args=(f"{base}/predict",)) for _ in range(2)]
        for client in clients:
            client.start()
        assert _until(lambda: monitor.state()["busy"]["in_flight"] == 2)
        probe(env, token)
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
        assert rc == 1 and "stalled: 2 torchprobe_requests_in_flight" in out, out
        release.set()
        for client in clients:
            client.join(10)
        rc, out, _ = probe(env, token)
        assert rc == 0 and "idle: nothing pending" in out, out
    finally:
        release.set()
        server.shutdown()
        monitor.stop()  # one Monitor per process: the next test makes its own


def _get(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        answer.read()


def _until(predicate: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_closed_listener_for_metrics_never_hangs(env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
        done = run_cli(f"progress:url={url},pending=a,done=b,stall=1s,timeout=1", env=env)
    assert done.rc == 1 and "timed out after 1s" in done.stdout
    assert done.elapsed < 1 + 5


def test_the_readmes_progress_and_stall_examples_are_valid() -> None:
    import shlex

    from docs_text import documentation

    text = documentation()
    commands = list(dict.fromkeys(re.findall(r"^torchprobe '(progress:[^']*)'$", text, re.M)))
    tokens = re.findall(r'"((?:vllm|triton|tgi|sglang|bentoml):[^"]*stall=[^"]*)"', text)
    tokens = list(dict.fromkeys(tokens))
    # At least as many as the README held before its examples moved to docs/.
    assert len(commands) >= 1 and len(tokens) >= 2, (commands, tokens)
    for token in [*commands, *tokens]:
        done = run_cli(*shlex.split(f"'{token}'"), "--dry-run")
        assert done.rc == 0, (token, done.stdout, done.stderr)


def test_ray_serve_reads_the_metrics_export_port(env: dict[str, str]) -> None:
    # Ray's metrics agent writes the Serve metrics with a ray_ prefix, as
    # prometheus_client does: the replicas' gauge and request counter.
    registry = CollectorRegistry()
    labels = ["deployment", "application", "replica"]
    where = ("Classifier", "classifier", "Classifier#abc")
    processing = Gauge("ray_serve_replica_processing_queries", "p", labels, registry=registry)
    queued = Gauge("ray_serve_deployment_queued_queries", "q", labels[:2], registry=registry)
    served = Counter("ray_serve_deployment_request_counter", "c", labels, registry=registry)
    processing.labels(*where).set(2)
    queued.labels(*where[:2]).set(5)
    served.labels(*where).inc(10)
    proxy = routes({"/-/healthz": reply(200, b"success")})
    with (
        http_server(proxy) as ray,
        http_server(lambda request: reply(200, generate_latest(registry))) as agent,
    ):
        token = f"ray:url={ray.url},mode=live,stall=1s,metrics-url={agent.url}/metrics"
        rc, out, _ = probe(env, token)
        assert rc == 0 and "first reading (2 requests processing, 5 queued)" in out, out
        served.labels(*where).inc()
        rc, out, _ = probe(env, token)
        assert rc == 0 and "progressing" in out, out
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)
    assert rc == 1 and "stalled: 2 requests processing, 5 queued, no request completed" in out


def test_a_memory_store_judges_as_the_file_store_does(tmp_path: Path) -> None:
    """The store behind stall= is an interface: a long-running process may keep
    the readings in memory; the verdicts are the same."""
    from torchprobe.checks.presets import VLLM as Preset
    from torchprobe.checks.stall import ServerMetrics
    from torchprobe.common.deadline import Deadline
    from torchprobe.common.progress_state import FileStore, MemoryStore
    from torchprobe.net.url import parse_url

    assert isinstance(Preset.metrics, ServerMetrics)
    what = Preset.metrics.watch
    stores = {"file": FileStore(str(tmp_path)), "memory": MemoryStore()}
    states: dict[str, list[str]] = {name: [] for name in stores}
    with ms.VLLM() as server:
        server.work.state = "wedged"
        url = parse_url(f"{server.url}/metrics")
        for _ in range(2):
            for name, store in stores.items():
                clock = Deadline.after(5)
                verdict = watch(what, url, clock=clock, stall=1, store=store, key="k")
                states[name].append(verdict.state)
            time.sleep(PAST_STALL)
    assert states["file"] == states["memory"] == ["first", "stalled"]


@pytest.mark.parametrize(
    "record",
    [
        "not json at all",
        '{"life": "LIFE", "record": {"at": "soon", "done": {"x": "y"}, "moved_at": null}}',
        '{"life": "LIFE", "record": {"at": 1e400, "done": [], "busy_since": true}}',
        '{"life": "LIFE", "record": []}',
    ],
)
def test_a_damaged_state_file_is_read_as_no_reading(env: dict[str, str], record: str) -> None:
    with ms.VLLM() as server:
        server.work.state = "wedged"
        token = f"vllm:url={server.url},stall=1s"
        probe(env, token)
        (path,) = Path(env["TORCHPROBE_STATE_DIR"]).iterdir()
        life = json.loads(path.read_text())["life"]
        path.write_text(record.replace("LIFE", life))
        rc, out, err = probe(env, token)
        assert rc == 0 and "first reading" in out, out + err
        time.sleep(PAST_STALL)
        rc, out, _ = probe(env, token)  # and the file is whole again
    assert rc == 1 and "stalled" in out, out


def test_a_metrics_app_mounted_with_a_redirect_is_followed(env: dict[str, str]) -> None:
    registry = CollectorRegistry()
    Gauge("queue", "q", registry=registry).set(0)
    Counter("served", "s", registry=registry).inc()
    answers = {
        "/metrics": reply(307, b"", headers=[("Location", "/metrics/")]),
        "/metrics/": reply(200, generate_latest(registry)),
    }
    with http_server(routes(answers)) as server:
        token = f"progress:url={server.url}/metrics,pending=queue,done=served,stall=1s"
        rc, out, _ = probe(env, token)
    assert rc == 0 and "first reading; progress is judged from the next run" in out, out


def test_a_memory_store_held_elsewhere_fails_at_the_deadline() -> None:
    """The sidecar's store: a round that cannot have a key by its deadline
    fails saying so, as a file held by another run does."""
    import threading

    from torchprobe.common.progress_state import MemoryStore, StateError

    store = MemoryStore()
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.hold("k"):
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(30)
        with pytest.raises(StateError, match="held by another round past the deadline"):
            with store.hold("k", until=time.monotonic() + 0.05):
                pass
    finally:
        release.set()
        thread.join()
    with store.hold("k", until=time.monotonic() + 5):
        store.put("k", {"ok": 1})
        assert store.get("k") == {"ok": 1}
