"""Critical GPU events (Xid) in the in-process monitor.

The monitor's Xid watch runs in real serving processes (tests/monitor_worker.py
and the uvicorn app of tests/integrations) against the fake NVML of tests/fakes,
whose event sets behave like the real binding's; a test appends an event to the
file the fake reads and looks at what a user sees: the status file, the
installed ``status-file`` check, ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import FAKES, TESTS, Run, clean_env, fake_nvml_env, require, run_cli

from torchprobe.gpu import xid
from torchprobe.monitor import Monitor

pytestmark = pytest.mark.usefixtures("plugins")

UUID0 = "GPU-5e1f0000-0a1b-4c2d-8e3f-000000000000"  # the fake's first GPU
UUID1 = "GPU-5e1f0001-0a1b-4c2d-8e3f-000000000001"
CRITICAL_79 = f"Xid 79 (GPU has fallen off the bus) on {UUID0} at "


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    status: Path
    events: Path

    @property
    def path(self) -> Path:
        return self.status / f"{self.proc.pid}.json"

    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.path.read_text()))

    def until(self, test: Callable[[dict[str, Any]], object], seconds: float = 15) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            try:
                doc = self.doc()
            except (FileNotFoundError, ValueError):
                doc = {}
            if doc and test(doc):
                return doc
            assert time.monotonic() < deadline, f"never came: {doc}"
            time.sleep(0.05)

    def inject(self, **event: object) -> None:
        with self.events.open("a") as f:
            f.write(json.dumps(event) + "\n")  # one write: the fake reads whole lines

    def probe(self, *options: str) -> Run:
        spec = ",".join([f"path={self.status}", *options])
        return run_cli("--format", "json", f"status-file:{spec}", env=clean_env())


@dataclass
class Launcher:
    tmp: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def __call__(self, *flags: str, scenario: dict[str, Any] | None = None,
                 watching: bool = True, **env: str) -> Worker:  # fmt: skip
        events = self.tmp / "events.jsonl"
        events.touch()
        scene = self.tmp / "scenario.json"
        scene.write_text(json.dumps({"events": str(events), **(scenario or {})}))
        status = self.tmp / "status"
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "monitor_worker.py"), str(status), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=fake_nvml_env(str(scene), **env),
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        worker = Worker(proc, status, events)
        if watching:  # an event set hears only of what happens after it exists
            worker.until(lambda d: d["xid"]["state"] == "watching" and d["last_round"])
        return worker


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    for proc in launcher.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def verdict(result: Run) -> dict[str, Any]:
    check = json.loads(result.stdout)["checks"][0]
    assert result.rc == (0 if check["status"] == "pass" else 1)
    return dict(check)


# -- through a serving process and the status-file check ---------------------------------


def test_a_critical_xid_makes_the_worker_not_live_for_good(start: Launcher) -> None:
    worker = start("--device", "cuda:0")
    doc = worker.doc()
    assert doc["live"] and doc["xid"]["gpus"] == [UUID0] and doc["xid"]["counts"] == []
    assert verdict(worker.probe())["status"] == "pass"

    worker.inject(device=0, xid=79)
    doc = worker.until(lambda d: not d["live"])
    (reason,) = doc["reasons"]["live"]
    assert reason.startswith(CRITICAL_79) and reason.endswith(" UTC: drain the node")
    assert doc["xid"]["counts"] == [{"gpu": UUID0, "xid": "79", "count": 1}]
    (event,) = doc["xid"]["events"]
    assert event["class"] == "needs node drain" and event["critical"] is True
    check = verdict(worker.probe())
    assert check["status"] == "fail"
    assert f"pid {worker.proc.pid} not live: {CRITICAL_79}" in check["message"]
    # Nothing the app does makes it live again: the GPU is gone.
    time.sleep(1)
    assert not worker.doc()["live"]
    assert verdict(worker.probe())["status"] == "fail"


def test_the_same_xid_again_is_counted_in_one_reason(start: Launcher) -> None:
    worker = start("--device", "cuda:0")
    worker.inject(device=0, xid=48)
    worker.inject(device=0, xid=48)
    doc = worker.until(lambda d: d["xid"]["counts"] and d["xid"]["counts"][0]["count"] == 2)
    (reason,) = doc["reasons"]["live"]
    assert reason.startswith(f"Xid 48 (Double Bit ECC Error) on {UUID0} (2 times, last) at ")
    assert reason.endswith("reset the GPU (nvidia-smi -r) or reboot the node")


@pytest.mark.parametrize("number", [13, 31, 43, 45, 68, 109])
def test_an_application_xid_is_counted_and_the_worker_stays_live(
    start: Launcher, number: int
) -> None:
    worker = start("--device", "cuda:0")
    worker.inject(device=0, xid=number)
    doc = worker.until(lambda d: d["xid"]["counts"])
    assert doc["live"] and doc["reasons"]["live"] == []
    assert doc["xid"]["counts"] == [{"gpu": UUID0, "xid": str(number), "count": 1}]
    assert doc["xid"]["events"][0]["class"] == "application error"
    assert verdict(worker.probe())["status"] == "pass"


@pytest.mark.parametrize(
    ("flags", "number", "live"),
    [(("--xid-ignore", "79"), 79, True), (("--xid-fatal", "13"), 13, False),
     (("--xid-fatal", "13", "--xid-ignore", "13"), 13, True)],
)  # fmt: skip
def test_xid_ignore_and_xid_fatal_override_the_policy(
    start: Launcher, flags: tuple[str, ...], number: int, live: bool
) -> None:
    worker = start("--device", "cuda:0", *flags)
    worker.inject(device=0, xid=number)
    doc = worker.until(lambda d: d["xid"]["counts"])
    time.sleep(0.3)  # a verdict that would change has changed by the next write
    doc = worker.doc()
    assert doc["live"] is live and doc["xid"]["events"][0]["critical"] is not live
    assert verdict(worker.probe())["status"] == ("pass" if live else "fail")


def test_double_bit_ecc_is_critical_and_single_bit_is_only_counted(start: Launcher) -> None:
    worker = start("--device", "cuda:0")
    worker.inject(device=0, type="single_bit_ecc")
    doc = worker.until(lambda d: d["xid"]["counts"])
    assert doc["live"]
    assert doc["xid"]["counts"] == [{"gpu": UUID0, "xid": "single_bit_ecc", "count": 1}]
    worker.inject(device=0, type="double_bit_ecc")
    doc = worker.until(lambda d: not d["live"])
    assert doc["reasons"]["live"][0].startswith(f"double-bit ECC error on {UUID0} at ")
    assert "pid" in verdict(worker.probe())["message"]


def test_a_gpu_lost_during_the_wait_makes_the_worker_not_live(start: Launcher) -> None:
    worker = start("--device", "cuda:0")
    worker.inject(error="GPU_IS_LOST")
    doc = worker.until(lambda d: not d["live"])
    assert doc["reasons"]["live"][0].startswith(f"GPU lost (NVML_ERROR_GPU_IS_LOST) on {UUID0}")
    assert doc["xid"]["state"] == "failed"
    assert doc["xid"]["note"] == "the GPU was lost during the wait"
    assert "GPU lost" in verdict(worker.probe())["message"]


@pytest.mark.parametrize(
    ("scenario", "env", "note"),
    [
        ({"devices": [{"event_types": "NOT_SUPPORTED"}]}, {},
         "0: event sets not supported (a MIG slice, or this GPU)"),
        ({"devices": [{"event_types": 0x1}]}, {}, f"{UUID0}: no Xid events on this GPU"),
        ({"errors": {"nvmlDeviceRegisterEvents": "NO_PERMISSION"}}, {},
         "0: no permission for event sets"),
        ({"devices": [{"mig_devices": [{}]}]},
         {"CUDA_VISIBLE_DEVICES": "MIG-5e1f0000-0a1b-4c2d-8e3f-000000000000"},
         "MIG-5e1f0000-0a1b-4c2d-8e3f-000000000000: event sets not supported "
         "(a MIG slice, or this GPU)"),
        ({"init_error": "DRIVER_NOT_LOADED"}, {},
         "NVML did not start: NVML_ERROR_DRIVER_NOT_LOADED"),
    ],
)  # fmt: skip
def test_without_event_sets_the_status_document_says_so_and_the_worker_stays_live(
    start: Launcher, scenario: dict[str, Any], env: dict[str, str], note: str
) -> None:
    worker = start("--device", "cuda:0", scenario=scenario, watching=False, **env)
    doc = worker.until(lambda d: d["xid"]["state"] == "unsupported" and d["last_round"])
    assert doc["xid"]["note"] == note
    assert doc["live"] and doc["reasons"]["live"] == []
    assert verdict(worker.probe())["status"] == "pass"


def test_the_watch_follows_cuda_visible_devices_by_uuid(start: Launcher) -> None:
    # NVML ignores CUDA_VISIBLE_DEVICES: the app's cuda:0 is NVML's GPU 1 here.
    worker = start("--device", "cuda:0", scenario={"devices": [{}, {}]},
                   CUDA_VISIBLE_DEVICES=UUID1)  # fmt: skip
    assert worker.doc()["xid"]["gpus"] == [UUID1]
    worker.inject(device=0, xid=79)  # another container's GPU
    worker.inject(device=1, xid=31)
    doc = worker.until(lambda d: d["xid"]["counts"])
    assert doc["live"] and doc["xid"]["counts"] == [{"gpu": UUID1, "xid": "31", "count": 1}]


@pytest.mark.parametrize(("device", "visible"), [("cuda:1", UUID0), ("cuda:0", "")])
def test_a_device_cuda_visible_devices_hides_watches_no_gpu(
    start: Launcher, device: str, visible: str
) -> None:
    # The app's device is not among CUDA_VISIBLE_DEVICES: no GPU of NVML's is
    # this process's, so none is watched (another container's Xid is not ours).
    worker = start("--device", device, scenario={"devices": [{}, {}]}, watching=False,
                   CUDA_VISIBLE_DEVICES=visible)  # fmt: skip
    doc = worker.until(lambda d: d["xid"]["state"] == "unsupported" and d["last_round"])
    assert doc["xid"]["gpus"] == []
    assert doc["xid"]["note"] == (f"{device} is not among CUDA_VISIBLE_DEVICES={visible!r}: "
                                  "no GPU to watch")  # fmt: skip
    worker.inject(device=0, xid=79)
    worker.inject(device=1, xid=79)
    time.sleep(0.5)
    doc = worker.doc()
    assert doc["live"] and doc["xid"]["counts"] == []


def test_a_restarted_process_starts_clean(start: Launcher) -> None:
    first = start("--device", "cuda:0")
    first.inject(device=0, xid=79)
    first.until(lambda d: not d["live"])
    first.proc.kill()
    first.proc.wait()
    second = start("--device", "cuda:0")
    time.sleep(0.5)
    doc = second.doc()
    assert doc["live"] and doc["xid"]["counts"] == []


def test_a_cpu_monitor_starts_no_watch(start: Launcher) -> None:
    worker = start(watching=False)  # no device; torch not loaded by the app
    doc = worker.until(lambda d: d["last_round"])
    worker.inject(device=0, xid=79)
    time.sleep(0.5)
    doc = worker.doc()
    assert doc["xid"]["state"] == "off" and doc["xid"]["gpus"] == []
    assert doc["live"] and doc["xid"]["counts"] == []


def test_xid_false_starts_no_watch_on_a_cuda_monitor(start: Launcher) -> None:
    worker = start("--device", "cuda:0", "--no-xid", watching=False)
    worker.until(lambda d: d["last_round"])
    worker.inject(device=0, xid=79)
    time.sleep(0.5)
    doc = worker.doc()
    assert doc["xid"]["state"] == "off" and doc["live"] and doc["xid"]["counts"] == []


def test_importing_the_monitor_loads_no_nvml() -> None:
    code = "import sys, torchprobe.monitor; print(sorted(m for m in sys.modules if 'nvml' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=fake_nvml_env("{}"), timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_bad_xid_numbers_fail_when_the_monitor_is_made() -> None:
    for bad in (["79"], [-1], [True]):
        with pytest.raises(ValueError, match="an Xid is a non-negative whole number"):
            Monitor(["ok"], status_dir=False, xid_fatal=bad)  # type: ignore[arg-type]


# -- /health and /metrics of a served app --------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize(
    ("server", "extra"),
    # The ASGI app through prometheus_client's registry; the Flask app with the
    # exposition written by hand, as where prometheus_client is not installed.
    [("uvicorn", {}), ("gunicorn", {"TP_NO_PROMETHEUS": "1"})],
)
def test_health_and_metrics_of_a_served_app_name_the_xid(
    tmp_path: Path, server: str, extra: dict[str, str]
) -> None:
    needs = ("starlette", "uvicorn") if server == "uvicorn" else ("flask", "gunicorn")
    missing = [m for m in (*needs, "prometheus_client") if importlib.util.find_spec(m) is None]
    require(not missing, f"not installed: {missing}")
    from integrations.apps.serving import Served, gunicorn, uvicorn
    from prometheus_client.parser import text_string_to_metric_families

    events = tmp_path / "events.jsonl"
    events.touch()
    scenario = json.dumps({"events": str(events)})
    env = fake_nvml_env(scenario, TP_INTERVAL="0.25", TP_MAX_BUSY="5",
                        TP_STATUS_DIR=str(tmp_path / "status"), TP_DEVICE="cuda:0",
                        **extra)  # fmt: skip
    command = uvicorn("tp_asgi_app") if server == "uvicorn" else gunicorn("tp_flask_app")
    served = Served(command, env, tmp_path / "server.log")
    try:
        served.start().wait_up()
        deadline = time.monotonic() + 20
        while served.get("/health").json["xid"]["state"] != "watching":
            assert time.monotonic() < deadline, served.tail()
            time.sleep(0.05)
        assert served.get("/health").status == 200
        with events.open("a") as f:
            f.write(json.dumps({"device": 0, "xid": 79}) + "\n")
        reply = served.until("/health", 503)
        assert reply.json["status"] == "unhealthy"
        assert reply.json["reasons"][0].startswith(CRITICAL_79)
        text = served.get("/metrics").text
        found = {f.name: f for f in text_string_to_metric_families(text)}
        family = found["torchprobe_gpu_xid_events"]
        assert family.type == "counter"
        samples = [(s.name, s.labels, s.value) for s in family.samples if s.name.endswith("_total")]
        assert samples == [("torchprobe_gpu_xid_events_total", {"gpu": UUID0, "xid": "79"}, 1.0)]
        assert "# TYPE torchprobe_gpu_xid_events_total counter" in text
    finally:
        served.close()


def test_another_workers_damaged_xid_field_never_breaks_the_metrics() -> None:
    """/metrics with aggregate=True renders other workers' status files: a
    damaged ``xid`` there is left out, and the text still parses strictly."""
    from prometheus_client.parser import text_string_to_metric_families

    from torchprobe.integrations.metrics import families, render_metrics_text

    base = {"pid": 7, "live": True, "ready": True, "updated": time.time()}
    states = [
        {**base, "xid": {"counts": [{"gpu": 'GPU-"\n', "xid": "79", "count": 2}, "junk",
                                    {"gpu": "g", "xid": "1", "count": "many"},
                                    {"gpu": "g", "xid": "2", "count": True}]}},
        {**base, "pid": 8, "xid": ["not", "a", "dict"]},
        {**base, "pid": 9, "xid": {"counts": {"not": "a list"}}},
    ]  # fmt: skip
    text = render_metrics_text(families(states, by_pid=True))
    found = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [(s.labels, s.value) for s in found["torchprobe_gpu_xid_events"].samples]
    assert samples == [({"pid": "7", "gpu": 'GPU-"\n', "xid": "79"}, 2.0)]


# -- the fake binding behaves like the real one -------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    events = tmp_path / "events.jsonl"
    events.touch()
    scenario = {"events": str(events), "devices": [{}, {"mig_devices": [{}]}]}
    monkeypatch.setenv("TORCHPROBE_FAKE_NVML", json.dumps(scenario))
    monkeypatch.syspath_prepend(str(FAKES))
    saved = sys.modules.pop("pynvml", None)
    module = importlib.import_module("pynvml")
    module.nvmlInit()
    module.events_path = events  # type: ignore[attr-defined]
    yield module
    module.nvmlShutdown()
    sys.modules.pop("pynvml", None)
    if saved is not None:
        sys.modules["pynvml"] = saved


def test_the_fake_event_set_waits_then_times_out_like_nvml(fake: ModuleType) -> None:
    events = fake.nvmlEventSetCreate()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    supported = fake.nvmlDeviceGetSupportedEventTypes(handle)
    assert supported & fake.nvmlEventTypeXidCriticalError
    fake.nvmlDeviceRegisterEvents(handle, fake.nvmlEventTypeXidCriticalError, events)
    started = time.monotonic()
    with pytest.raises(fake.NVMLError_Timeout) as caught:
        fake.nvmlEventSetWait_v2(events, 200)
    assert caught.value.value == fake.NVML_ERROR_TIMEOUT == 10
    assert time.monotonic() - started >= 0.2
    with fake.events_path.open("a") as f:
        f.write('{"device": 0, "xid": 94}\n{"device": 0, "type": "single_bit_ecc"}\n')
    data = fake.nvmlEventSetWait_v2(events, 1000)
    assert data.eventType == fake.nvmlEventTypeXidCriticalError and data.eventData == 94
    assert fake.nvmlDeviceGetUUID(data.device) == UUID0
    assert (data.gpuInstanceId, data.computeInstanceId) == (0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(fake.NVMLError_Timeout):  # SBE was not registered: not delivered
        fake.nvmlEventSetWait_v2(events, 100)
    fake.nvmlEventSetFree(events)


def test_the_fake_refuses_mig_handles_and_reports_a_lost_gpu(fake: ModuleType) -> None:
    events = fake.nvmlEventSetCreate()
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(fake.nvmlDeviceGetHandleByIndex(1), 0)
    with pytest.raises(fake.NVMLError_NotSupported):
        fake.nvmlDeviceRegisterEvents(mig, fake.nvmlEventTypeXidCriticalError, events)
    handle = fake.nvmlDeviceGetHandleByIndex(1)
    fake.nvmlDeviceRegisterEvents(handle, fake.nvmlEventTypeXidCriticalError, events)
    with fake.events_path.open("a") as f:
        f.write('{"error": "GPU_IS_LOST"}\n')
    with pytest.raises(fake.NVMLError_GpuIsLost):
        fake.nvmlEventSetWait_v2(events, 1000)


# -- the policy table ---------------------------------------------------------------------


def test_the_policy_follows_its_sources_and_its_documented_choices() -> None:
    # The device plugin's application errors never make a process not live.
    for number in (13, 31, 43, 45, 68, 109):
        assert xid.rule(number).kind == xid.APPLICATION and not xid.rule(number).critical
    assert xid.rule(79).kind == xid.DRAIN and xid.rule(79).action == "drain the node"
    assert xid.rule(48).kind == xid.RESET and xid.rule(95).kind == xid.RESET
    assert {xid.rule(n).kind for n in (119, 120, 74, 64)} == {xid.DRAIN}
    assert xid.rule(94).kind == xid.APPLICATION  # contained: only the process that touched it
    assert xid.rule(63).name == "ECC page retirement or row remapping recording event"
    # AWS's fatal list is fatal here, 109 apart (see the module).
    aws = (46, 48, 54, 62, 63, 64, 74, 79, 95, 110, 119, 120, 136, 140, 142, 143, 151, 155,
           156, 158)  # fmt: skip
    assert [n for n in aws if not xid.rule(n).critical] == []
    # AWS's own entries by the catalog bucket it gives each.
    assert {xid.rule(n).kind for n in (136, 155, 156, 158)} == {xid.RESET}
    assert {xid.rule(n).kind for n in (54, 142, 151)} == {xid.DRAIN}
    assert xid.describe(158) == "Xid 158 (GPU Fatal Timeout)" and xid.describe(136) == "Xid 136"
    # GPUd's reboot-suggesting warnings that no other list has stay informational.
    assert {xid.rule(n).kind for n in (*range(144, 151), 163, 173)} == {xid.INFO}
    assert xid.rule(4242).kind == xid.INFO and xid.describe(4242) == "Xid 4242"
    assert xid.describe(79) == "Xid 79 (GPU has fallen off the bus)"
    policy = xid.Policy(ignore=[79], fatal=[13, 79])
    assert policy.judge(79)[1] is False and policy.judge(13)[1] is True
    assert policy.judge(48)[1] is True and policy.judge(31)[1] is False
