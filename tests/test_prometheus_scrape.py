"""A real Prometheus scrapes torchprobe's two exporters, and the alert rules load.

Debian's ``prometheus`` runs on 127.0.0.1 with a storage directory of its own,
a 1 s scrape interval and examples/prometheus/torchprobe-rules.yml, scraping:

- job ``app``: the in-process monitor's /metrics of examples/flask_app under
  gunicorn (one worker, fault routes on);
- job ``node``: Debian's ``prometheus-node-exporter`` with only its textfile
  collector, reading the directory that ``torchprobe --prometheus-textfile``
  writes; torchprobe (the installed command, run by this test) probes a real
  http server;
- job ``torchprobe-serve`` (the job name examples/prometheus/torchprobe-rules.yml
  expects): the installed ``torchprobe serve`` sidecar probing the same http
  server every second.

The test drives both from healthy to unhealthy and back (the http server
stopped and started again; a sticky CUDA error raised through the app's fault
route, then the poisoned worker killed so that gunicorn starts a fresh one) and
reads every verdict back through Prometheus's HTTP API. Then every PromQL
expression of examples/grafana/torchprobe.json is evaluated against the series
that sequence left. Every wait polls up to a generous deadline: nothing
depends on how fast this machine is.

The app serves on the CPU, which has no GPU memory figures and no Xid events:
for the dashboard's GPU panels, a second textfile holds the torchprobe_gpu_*
families as torchprobe's own /metrics code renders them for a monitor state
with a GPU (``gpu_standin``).

Needs prometheus and prometheus-node-exporter (Debian packages), flask,
gunicorn and torch: skipped without them, a failure under CI=true.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, fake_nvml_env, require, run_cli, script, stop_group
from dashboard import expressions, load, substitute

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "examples" / "flask_app"
RULES = ROOT / "examples" / "prometheus" / "torchprobe-rules.yml"
PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
#: Every wait: far longer than any of them takes on a loaded machine.
DEADLINE = 60.0
# Everything here is on 127.0.0.1: no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.slow


def free_port() -> int:
    """A port nothing listens on now (for daemons that take no descriptor)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, data: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with _OPENER.open(urllib.request.Request(url, data=data), timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, predicate: Callable[[], Any], logs: Callable[[], str]) -> Any:
    """Poll ``predicate`` until it returns something true; that is returned."""
    end = time.monotonic() + DEADLINE
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            found = predicate()
            if found:
                return found
        except (OSError, ValueError, KeyError) as exc:
            last = exc  # not listening yet, or a worker restarting
        time.sleep(0.2)
    pytest.fail(f"not {what} within {DEADLINE:g}s (last error: {last!r})\n{logs()}")


class Daemon:
    """A subprocess with its output in a log file, stopped with its process group."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.log = log
        with open(log, "wb") as fp:
            self.proc = subprocess.Popen(argv, stdout=fp, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, pass_fds=pass_fds,
                                         start_new_session=True)  # fmt: skip

    def tail(self) -> str:
        return f"--- {self.log.name} ---\n{self.log.read_text(errors='replace')[-3000:]}"

    def stop(self) -> None:
        stop_group(self.proc)


class Backend:
    """The http server torchprobe's http check targets, stopped and started
    again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Ok)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Prometheus:
    def __init__(self, address: str, daemon: Daemon) -> None:
        self.address = address
        self.daemon = daemon

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = get(f"http://{self.address}/api/v1/{path}{query}")
        document = json.loads(body)
        assert status == 200 and document["status"] == "success", (status, document)
        return document["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_at(self, expr: str, when: float) -> list[tuple[dict[str, str], float]]:
        """``expr`` evaluated at the Unix time ``when``: a vector, or a scalar as one sample."""
        data = self.api("query", query=expr, time=f"{when:.3f}")
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def range(self, expr: str, start: float, end: float) -> list[float]:
        """The one series of ``expr`` as stored, a value per second from start to end."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step="1")  # fmt: skip
        (series,) = data["result"]
        return [float(v) for _, v in series["values"]]

    def value(self, expr: str) -> float | None:
        """The value of the one series ``expr`` selects; None while there is none."""
        found = self.query(expr)
        assert len(found) <= 1, f"{expr}: more than one series: {found}"
        return found[0][1] if found else None


def needs(module: str, package: str) -> None:
    require(importlib.util.find_spec(module) is not None,
            f"{package} is not installed (pip install {package})")  # fmt: skip


def gpu_standin() -> str:
    """The torchprobe_gpu_* families of torchprobe's /metrics for a state with
    a GPU (the fields torchprobe/integrations/metrics.py reads) and one Xid 43
    event (an application's fault: not critical, so no alert fires)."""
    from torchprobe.integrations.metrics import families, render_metrics_text

    state = {"gpu": {"device": "cuda:0", "name": "stand-in", "memory_used": 1 << 30,
                     "memory_total": 80 << 30},
             "xid": {"counts": [{"gpu": 0, "xid": 43, "count": 1}]}}  # fmt: skip
    return render_metrics_text(f for f in families([state], False)
                               if f.name.startswith("torchprobe_gpu_"))  # fmt: skip


SIDECAR_LIVE = 'torchprobe_up{job="torchprobe-serve",probe="live"}'
SIDECAR_ROUNDS = 'torchprobe_serve_rounds_total{job="torchprobe-serve",probe="live"}'

#: The verdicts the sequence drives, and each one's healthy value.
SEQUENCE = (
    ('torchprobe_up{job="node"}', 1),
    ('torchprobe_check_up{job="node",check="http",name="http"}', 1),
    ('torchprobe_live{job="app"}', 1),
    ('torchprobe_sticky_error{job="app"}', 0),
    (SIDECAR_LIVE, 1),
    ('torchprobe_up{job="torchprobe-serve",probe="ready"}', 1),
)

#: The job of each target: the two exporters and the sidecar.
JOBS = {"app", "node", "torchprobe-serve"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One Prometheus for the module: the sequence test drives it, the
    dashboard test reads what that left."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    require(os.access(PROMETHEUS, os.X_OK), "prometheus is not installed (Debian package)")
    require(os.access(NODE_EXPORTER, os.X_OK),
            "prometheus-node-exporter is not installed (Debian package)")  # fmt: skip
    needs("flask", "flask")
    needs("gunicorn", "gunicorn")
    needs("torch", "torch==2.13.0")
    needs("prometheus_client", "prometheus-client")
    started: list[Daemon] = []
    backend = Backend()
    try:
        model = tmp_path / "model.pt"
        done = subprocess.run([sys.executable, str(APP_DIR / "make_model.py"), str(model)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr

        # The app, as tests/examples/test_examples.py serves it: the test binds
        # the socket and hands gunicorn its descriptor.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        app = f"127.0.0.1:{listener.getsockname()[1]}"
        env = clean_env(MODEL_PATH=str(model), DEVICE="cpu", MONITOR_INTERVAL="0.5",
                        TORCHPROBE_STATUS_DIR=str(tmp_path / "status"), WEB_CONCURRENCY="1",
                        TORCHPROBE_EXAMPLE_FAULTS="1", GUNICORN_CMD_ARGS="--graceful-timeout 1",
                        PYTHONWARNINGS="ignore")  # fmt: skip
        fd = listener.fileno()
        started.append(Daemon(
            [sys.executable, "-m", "gunicorn", "-c", str(APP_DIR / "gunicorn.conf.py"),
             "--chdir", str(APP_DIR), "-b", f"fd://{fd}", "app:app"],
            tmp_path / "gunicorn.log", env=env, pass_fds=(fd,)))  # fmt: skip
        listener.close()

        textfiles = tmp_path / "textfile"
        textfiles.mkdir()
        (textfiles / "gpu-standin.prom").write_text(gpu_standin())
        node = f"127.0.0.1:{free_port()}"
        started.append(Daemon(
            [NODE_EXPORTER, f"--web.listen-address={node}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={textfiles}"],
            tmp_path / "node-exporter.log"))  # fmt: skip

        sidecar = f"127.0.0.1:{free_port()}"
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "app", "static_configs": [{"targets": [app]}]},
                {"job_name": "node", "static_configs": [{"targets": [node]}]},
                {"job_name": "torchprobe-serve", "static_configs": [{"targets": [sidecar]}]},
            ],
        }))  # fmt: skip
        address = f"127.0.0.1:{free_port()}"
        prometheus = Prometheus(address, Daemon(
            [PROMETHEUS, f"--config.file={config}", f"--web.listen-address={address}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            tmp_path / "prometheus.log"))  # fmt: skip
        started.append(prometheus.daemon)
        backend.start()
        # The sidecar's Xid watch hears the fake NVML of tests/fakes: one GPU
        # whose event set delivers what the test appends to this file.
        events = tmp_path / "gpu-events.jsonl"
        events.touch()
        gpu = fake_nvml_env(json.dumps({"events": str(events)}))
        started.append(Daemon(
            [str(script()), "serve", "--live", f"http:url=http://127.0.0.1:{backend.port}/",
             "--ready", f"tcp:host=127.0.0.1,port={backend.port}", "--interval", "1s",
             "--listen", sidecar],
            tmp_path / "serve.log", env=gpu))  # fmt: skip

        def logs() -> str:
            return "\n".join(d.tail() for d in started)

        for daemon in started:
            assert daemon.proc.poll() is None, logs()
        yield {"prometheus": prometheus, "app": app, "backend": backend, "sidecar": sidecar,
               "textfile": textfiles / "torchprobe.prom", "logs": logs,
               "events": events}  # fmt: skip
    finally:
        backend.stop()
        for daemon in reversed(started):
            daemon.stop()


def test_prometheus_scrapes_the_textfile_the_monitor_and_the_sidecar_through_a_fault_and_back(
    stack: dict[str, Any],
) -> None:
    drive(stack)


def drive(stack: dict[str, Any]) -> None:
    """Healthy, unhealthy, healthy again, each verdict read back through
    Prometheus; once per module (the dashboard test needs what it leaves)."""
    if stack.get("driven"):
        return
    prom: Prometheus = stack["prometheus"]
    backend: Backend = stack["backend"]
    logs: Callable[[], str] = stack["logs"]
    url = f"http://127.0.0.1:{backend.port}/"

    def probe() -> int:
        done = run_cli("--prometheus-textfile", str(stack["textfile"]), f"http:url={url}")
        assert done.rc in (0, 1), done.stdout + done.stderr
        return done.rc

    def until(expr: str, expected: float, *, run: bool = False) -> None:
        def reached() -> bool:
            if run:
                probe()
            return prom.value(expr) == expected

        wait_for(f"{expr} == {expected:g}", reached, logs)

    # Healthy: the probe passes, the app's worker has loaded its model.
    assert probe() == 0
    until('torchprobe_up{job="node"}', 1)
    until('torchprobe_check_up{job="node",check="http",name="http"}', 1)
    until('torchprobe_live{job="app"}', 1)
    until('torchprobe_ready{job="app"}', 1)
    until('torchprobe_sticky_error{job="app"}', 0)
    until(SIDECAR_LIVE, 1)
    until('torchprobe_up{job="torchprobe-serve",probe="ready"}', 1)
    rounds = wait_for("the sidecar's rounds counted", lambda: prom.value(SIDECAR_ROUNDS), logs)

    targets = wait_for("every target scraped and up", lambda: _all_up(prom), logs)
    assert {t["labels"]["job"] for t in targets} == JOBS

    # Each family once per target: one series, or one per status.
    for name in ("torchprobe_up", "torchprobe_info", "torchprobe_run_duration_seconds",
                 "torchprobe_check_up", "torchprobe_check_duration_seconds"):  # fmt: skip
        assert len(prom.query(f'{name}{{job="node"}}')) == 1, name
    statuses = prom.query('torchprobe_check_status{job="node"}')
    assert sorted((m["status"], v) for m, v in statuses) == [
        ("fail", 0), ("pass", 1), ("skip", 0)
    ]  # fmt: skip
    for name in ("torchprobe_live", "torchprobe_ready", "torchprobe_sticky_error",
                 "torchprobe_state_age_seconds", "torchprobe_requests_in_flight",
                 "torchprobe_info", "torchprobe_check_up"):  # fmt: skip
        assert len(prom.query(f'{name}{{job="app"}}')) == 1, name
    (info, _), = prom.query('torchprobe_info{job="node"}')  # fmt: skip
    assert set(info) == {"__name__", "instance", "job", "version"}, info
    assert prom.value('node_textfile_scrape_error{job="node"}') == 0
    # TorchprobeTextfileStale's selector finds the file as this node_exporter names it.
    (stale,) = re.findall(r"node_textfile_mtime_seconds\{[^}]*\}", RULES.read_text())
    assert [m["job"] for m, _ in prom.query(stale)] == ["node"], stale

    # Unhealthy: the http server is gone; a sticky CUDA error in the worker.
    began = time.time()  # every verdict healthy, as Prometheus has it
    backend.stop()
    until('torchprobe_up{job="node"}', 0, run=True)
    until('torchprobe_check_up{job="node",check="http",name="http"}', 0)
    until('torchprobe_check_status{job="node",name="http",status="fail"}', 1)
    status, body = get(f"http://{stack['app']}/faults/sticky-cuda-error", data=b"")
    assert status == 500, body
    poisoned = json.loads(body)["pid"]
    until('torchprobe_sticky_error{job="app"}', 1)
    until('torchprobe_live{job="app"}', 0)
    until(SIDECAR_LIVE, 0)
    until('torchprobe_up{job="torchprobe-serve",probe="ready"}', 0)
    until('torchprobe_check_up{job="torchprobe-serve",probe="live",check="http"}', 0)
    # every verdict is unhealthy now: the dashboard test evaluates its queries here too
    stack["unhealthy_at"] = time.time()

    # Healthy again: the server is back; a fresh worker replaces the poisoned one.
    backend.start()
    until('torchprobe_up{job="node"}', 1, run=True)
    until('torchprobe_check_up{job="node",check="http",name="http"}', 1)
    os.kill(poisoned, signal.SIGKILL)
    until('torchprobe_sticky_error{job="app"}', 0)
    until('torchprobe_live{job="app"}', 1)
    until('torchprobe_ready{job="app"}', 1)
    until(SIDECAR_LIVE, 1)
    until('torchprobe_up{job="torchprobe-serve",probe="ready"}', 1)

    def more() -> bool:
        return (prom.value(SIDECAR_ROUNDS) or 0) > rounds

    wait_for("the sidecar's rounds counted on", more, logs)

    # the replaced worker's scrapes may have failed: the later ones must not
    wait_for("every target up again", lambda: _all_up(prom), logs)
    assert len(prom.query('torchprobe_up{job="node"}')) == 1
    assert len(prom.query(SIDECAR_LIVE)) == 1
    assert len(prom.query('torchprobe_live{job="app"}')) == 1
    # Prometheus's own counters: no scrape carried a series twice or out of order.
    _, own = get(f"http://{prom.address}/metrics")
    counters = ("prometheus_target_scrapes_sample_duplicate_timestamp_total",
                "prometheus_target_scrapes_sample_out_of_order_total",
                "prometheus_target_scrapes_sample_out_of_bounds_total")  # fmt: skip
    found = dict(line.split() for line in own.decode().splitlines() if line.startswith(counters))
    assert sorted(found) == sorted(counters), found
    assert all(float(v) == 0 for v in found.values()), found

    # The alert rules load and evaluate against real series without an error.
    groups = prom.api("rules")["groups"]
    evaluated = [r for g in groups for r in g["rules"]]
    assert len(evaluated) >= 8, groups
    for rule in evaluated:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    # The sidecar's two alerts: quiet while it runs and is scraped (Absent is
    # pending only until the first scrape of its job).
    sidecar_rules = ("TorchprobeSidecarAbsent", "TorchprobeSidecarRoundsStopped")

    def quiet() -> bool:
        found = {r["name"]: r["state"] for g in prom.api("rules")["groups"] for r in g["rules"]
                 if r["name"] in sidecar_rules}  # fmt: skip
        assert sorted(found) == sorted(sidecar_rules), found
        assert "firing" not in found.values(), found
        return set(found.values()) == {"inactive"}

    wait_for("the sidecar's alerts inactive", quiet, logs)
    firing = [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] in sidecar_rules]
    assert firing == [], firing

    # The sequence as Prometheus stored it, scrape by scrape: each verdict went
    # healthy, unhealthy, healthy again, in that order and nothing else.
    # A range is evaluated every second from its start: ending it 1.5 s from
    # now puts its last point after the last recovery seen above.
    time.sleep(1.5)
    ended = time.time()
    for expr, healthy in SEQUENCE:
        values = prom.range(expr, began, ended)
        changes = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
        assert changes == [healthy, 1 - healthy, healthy], (expr, values)
        print(f"{expr}: {' '.join(f'{v:g}' for v in values)}")

    # A critical Xid on the sidecar's GPU: counted, /live fails, the alert fires.
    assert prom.value('torchprobe_serve_xid_watch_state{job="torchprobe-serve",'
                      'state="watching"}') == 1  # fmt: skip
    with stack["events"].open("a") as f:
        f.write(json.dumps({"device": 0, "xid": 79}) + "\n")  # one write: whole lines
    until('torchprobe_gpu_xid_events_total{job="torchprobe-serve",xid="79"}', 1)
    # /live fails from now on; torchprobe_up stays the rounds' own verdict.
    status, body = get(f"http://{stack['sidecar']}/live")
    assert status == 503 and b"Xid 79" in body, body

    def fires() -> bool:
        return any(a["labels"]["alertname"] == "TorchprobeCriticalXid"
                   and a["labels"]["job"] == "torchprobe-serve" and a["state"] == "firing"
                   for a in prom.api("alerts")["alerts"])  # fmt: skip

    wait_for("TorchprobeCriticalXid firing for the sidecar", fires, logs)
    stack["driven"] = True


def test_every_query_of_the_grafana_dashboard_finds_series(stack: dict[str, Any]) -> None:
    """Each PromQL expression of examples/grafana/torchprobe.json (panel
    targets, nested rows, the selectors of label_values variables), its
    variables substituted as "All" sends them, evaluates without an error at
    the unhealthy moment and now, and finds a series at one of them: a panel
    that is empty in both names a series or label nobody writes."""
    drive(stack)
    prom: Prometheus = stack["prometheus"]
    values = {"job": "torchprobe-serve", "instance": stack["sidecar"], "pod": ""}
    found = expressions(load())
    assert len(found) >= 15, found
    empty = []
    for where, expr in found:
        query = substitute(expr, values)
        at = [prom.query_at(query, when) for when in (stack["unhealthy_at"], time.time())]
        if not any(at):
            empty.append(f"{where}: {query}")
    assert empty == [], "\n".join(empty)


def _all_up(prom: Prometheus) -> list[dict[str, Any]] | None:
    """The active targets, when every one was scraped, is up and has no error."""
    targets = prom.api("targets", state="active")["activeTargets"]
    healthy = all(t["health"] == "up" and t["lastError"] == "" for t in targets)
    if len(targets) == len(JOBS) and healthy:
        return list(targets)
    return None
