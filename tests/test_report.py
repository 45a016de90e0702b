"""``torchprobe --report``: the installed command on this CPU-only machine (the
real torch, the real NVML binding without a driver), the fake NVML of
tests/fakes for the GPU cases, and every hint of :mod:`torchprobe.report.hints`
pinned down directly."""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, clean_env, fake_nvml_env, run_cli

from torchprobe.base import UsageError
from torchprobe.report import findings, hints, run_report
from torchprobe.report.hints import Problem
from torchprobe.report.render import render_report_text

NO_DRIVER = not os.path.exists("/dev/nvidiactl")

# The fake NVML lacks some readings the report takes (PCI, utilisation, power,
# clocks, persistence, retired pages, graphics processes, NVML version); without
# them the binding answers UNINITIALIZED. This sitecustomize adds them to the
# fake in every process of a run (the workers too), with an idle H100's readings
# (tests/fakes/pynvml.py) as defaults; a scenario overrides them per device like any other reading.
_READINGS = """
import os

if os.environ.get("TORCHPROBE_FAKE_NVML"):
    import types

    import pynvml as fake

    DEFAULTS = {"pci_bus_id": "00000000:19:00.0", "compute_capability": [9, 0],
                "utilization": {"gpu": 0, "memory": 0}, "power_usage": 121000,
                "power_limit": 700000, "clocks_event_reasons": 1, "persistence_mode": 1,
                "retired_pages": "NOT_SUPPORTED", "graphics_processes": []}

    def reading(fn, handle, key):
        return fake._reading({**DEFAULTS, **fake._device(fn, handle)}, key)

    def pci(handle):
        return types.SimpleNamespace(busId=reading("nvmlDeviceGetPciInfo", handle,
                                                   "pci_bus_id"))

    def utilization(handle):
        u = reading("nvmlDeviceGetUtilizationRates", handle, "utilization")
        return types.SimpleNamespace(gpu=u["gpu"], memory=u["memory"])

    def retired(handle, cause):
        pages = reading("nvmlDeviceGetRetiredPages", handle, "retired_pages")
        return pages[str(cause)] if isinstance(pages, dict) else pages

    def graphics(handle):
        listed = reading("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics_processes")
        return [fake.real.nvmlFriendlyObject({"pid": p["pid"],
                                              "usedGpuMemory": p.get("used_memory")})
                for p in listed]

    fake.nvmlDeviceGetPciInfo = fake.nvmlDeviceGetPciInfo_v3 = pci
    fake.nvmlDeviceGetUtilizationRates = utilization
    fake.nvmlDeviceGetRetiredPages = retired
    fake.nvmlDeviceGetGraphicsRunningProcesses = graphics
    for name, key in [("CudaComputeCapability", "compute_capability"),
                      ("PowerUsage", "power_usage"), ("EnforcedPowerLimit", "power_limit"),
                      ("CurrentClocksEventReasons", "clocks_event_reasons"),
                      ("CurrentClocksThrottleReasons", "clocks_event_reasons"),
                      ("PersistenceMode", "persistence_mode")]:
        fn = "nvmlDeviceGet" + name
        setattr(fake, fn, lambda handle, fn=fn, key=key: reading(fn, handle, key))
    fake.nvmlSystemGetNVMLVersion = lambda: "13.580.159.04"
"""


@pytest.fixture(scope="module")
def readings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("fake-readings")
    (where / "sitecustomize.py").write_text(textwrap.dedent(_READINGS))
    return where


def fake_env(readings_dir: Path, **scenario: Any) -> dict[str, str]:
    env = fake_nvml_env(json.dumps(scenario))
    env["PYTHONPATH"] = os.pathsep.join([str(readings_dir), env["PYTHONPATH"]])
    return env


def report(*args: str, env: dict[str, str] | None = None) -> tuple[Run, dict[str, Any]]:
    result = run_cli("--report", "--format", "json", *args, env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return result, json.loads(result.stdout)


def as_text(document: dict[str, Any]) -> str:
    """The text rendering of a JSON report: the same readings, without a second run."""
    out = io.StringIO()
    problems = [Problem(**p) for p in document["problems"]]
    render_report_text(document, problems, out)
    return out.getvalue()


def hints_of(document: dict[str, Any]) -> list[str]:
    return [p["hint"] for p in document["problems"]]


def whats(document: dict[str, Any]) -> str:
    return "\n".join(p["what"] for p in document["problems"])


# -- this machine, for real ------------------------------------------------------
@pytest.mark.torch
@pytest.mark.skipif(not NO_DRIVER, reason="this host has an NVIDIA driver")
def test_on_this_cpu_machine_the_text_report_names_all_three_problems_and_exits_0() -> None:
    result = run_cli("--report", "-v", env=clean_env())
    assert result.rc == 0, result.stderr
    out = result.stdout
    for title in (
        "container",
        "environment",
        "device nodes",
        "NVIDIA libraries",
        "torch",
        "torch CUDA runtime",
        "NVML",
        "GPU processes",
    ):
        assert f"== {title} ==" in out
    assert "== problems (3) ==" in out
    assert "is a CPU build" in out and "install a CUDA build of torch" in out
    assert "no /dev/nvidia* device nodes" in out and "--gpus all" in out
    assert "NVML not found (libnvidia-ml.so.1)" in out
    assert "user-space libraries are not mounted" in out
    assert len(out) > 4096 or out.count("\n") > 40  # a human's report: not capped for Docker


@pytest.mark.torch
@pytest.mark.skipif(not NO_DRIVER, reason="this host has an NVIDIA driver")
def test_json_is_one_document_with_schema_version_sections_and_problems() -> None:
    _, document = report(env=clean_env(CUDA_VISIBLE_DEVICES="0", CUDA_MODULE_LOADING="LAZY"))
    assert document["schema_version"] == 1
    sections = document["sections"]
    assert sections["torch"]["build"] == "CPU-only" and sections["torch"]["cudnn"] is None
    assert sections["torch_cuda"]["cuda_available"] is False
    assert sections["nvml"]["error"] == "NVML_ERROR_LIBRARY_NOT_FOUND"
    assert sections["libraries"]["libnvidia-ml.so.1"]["loaded"] is False
    assert sections["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert sections["environment"]["NVIDIA_DRIVER_CAPABILITIES"] is None
    assert sections["device_nodes"]["gpus"] == []
    assert sections["gpus"] == [] and sections["processes"]["status"] == "not run"
    assert sections["cuda_compatibility"]["verdict"] == "unknown"
    assert all(set(p) == {"what", "hint"} for p in document["problems"])
    assert len(document["problems"]) == 3


def test_prometheus_format_is_refused_with_one_line() -> None:
    result = run_cli("--report", "--format", "prometheus", env=clean_env())
    assert result.rc == 1 and result.stdout == ""
    assert "--report supports --format text or json" in result.stderr
    with pytest.raises(UsageError):
        run_report("prometheus", 30, False, io.StringIO())


# -- GPUs, through the fake NVML ---------------------------------------------------
def test_a_healthy_h100_shows_every_reading_and_no_gpu_problem(readings_dir: Path) -> None:
    env = fake_env(
        readings_dir, devices=[{"processes": [{"pid": os.getpid(), "used_memory": 744488960}]}]
    )
    _, document = report(env=env)
    sections = document["sections"]
    assert sections["nvml"]["driver"] == "580.159.04"
    assert sections["nvml"]["cuda_driver"] == "13.0" and sections["nvml"]["device_count"] == 1
    (gpu,) = sections["gpus"]
    assert gpu["status"] == "ok" and gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["uuid"].startswith("GPU-") and gpu["bus_id"] == "00000000:19:00.0"
    assert gpu["memory"]["struct"] == "v2" and gpu["memory"]["reserved"] == 503316480
    assert gpu["utilization"] == {"gpu": 0, "memory": 0}
    assert gpu["temperature"] == {
        "current": 34,
        "slowdown": 89,
        "shutdown": 95,
        "gpu_max": 87,
        "memory_max": 95,
    }
    assert gpu["power"] == {"draw_w": 121.0, "limit_w": 700.0}
    assert gpu["clocks_event_reasons"] == {"mask": "0x1", "names": ["gpu idle"]}
    assert gpu["ecc"]["mode"] == "on" and gpu["ecc"]["uncorrected_volatile"] == 0
    assert gpu["retired_pages"] == "not supported"  # an H100 remaps rows instead
    assert gpu["remapped_rows"] == {
        "corrected": 0,
        "uncorrected": 0,
        "pending": False,
        "failure": False,
    }
    assert gpu["mig_mode"] == "disabled" and gpu["persistence_mode"] == "enabled"
    assert gpu["recovery_action"] == "none" and gpu["compute_capability"] == "9.0"
    (held,) = sections["processes"]["gpus"][0]["processes"]
    assert held["pid"] == os.getpid() and held["used_memory"] == 744488960
    assert held["name"] and held["type"] == "compute"  # /proc/PID/comm: visible here
    assert "GPU 0" not in whats(document)
    assert "NVML" not in whats(document)


def test_a_driver_older_than_torchs_cuda_gives_the_driver_hint(readings_dir: Path) -> None:
    _, document = report(env=fake_env(readings_dir, cuda_driver=12020))
    sections = document["sections"]
    assert sections["nvml"]["cuda_driver"] == "12.2"
    # torch here is a CPU build: give the report's own readings a CUDA 12.8 torch.
    sections["torch"].update(cuda="12.8", build="CUDA 12.8")
    found = findings.problems(sections)
    assert (
        Problem(
            "driver supports CUDA 12.2 but torch was built for 12.8: kernels that need PTX JIT "
            "or newer driver features will fail",
            "install a driver that supports CUDA 12.8 (R570 or newer), or a torch build for "
            "CUDA ≤ 12.2 (pip install torch --index-url https://download.pytorch.org/whl/cuXYZ)",
        )
        in found
    )
    assert not any("is a CPU build" in p.what for p in found)


def test_a_hung_nvml_reading_marks_that_gpu_timed_out_and_the_rest_still_comes(
    readings_dir: Path,
) -> None:
    env = fake_env(readings_dir, devices=[{"hang": {"nvmlDeviceGetTemperature": 60}}, {}])
    result, document = report("--timeout", "12", env=env)
    assert result.elapsed < 12, result.elapsed
    gpus = document["sections"]["gpus"]
    assert gpus[0]["status"] == "timed out"
    assert "its worker process was killed" in gpus[0]["message"]
    assert gpus[1]["status"] == "ok" and gpus[1]["temperature"]["current"] == 34
    assert document["sections"]["processes"]["status"] == "ok"
    assert document["sections"]["torch"]["status"] == "ok"
    assert any(
        "GPU 0: timed out" in p["what"] and "driver call hung" in p["hint"]
        for p in document["problems"]
    )
    assert "== GPU 0 ==\n  TIMED OUT: timed out after 2s" in as_text(document)


def test_a_hung_nvml_init_cannot_hold_the_report_past_its_deadline(readings_dir: Path) -> None:
    result, document = report("--timeout", "8", env=fake_env(readings_dir, hang={"nvmlInit": 60}))
    assert result.elapsed < 8.5, result.elapsed
    sections = document["sections"]
    assert sections["nvml"]["status"] == "timed out"
    assert sections["torch"]["status"] == "ok" and sections["libraries"]["status"] == "ok"
    assert "NVML: timed out" in whats(document)


def test_a_lost_gpu_and_readings_a_gpu_lacks_cost_only_themselves(readings_dir: Path) -> None:
    lacking = {"temperature": None, "slowdown": None, "clocks_event_reasons": "NOT_SUPPORTED",
               "errors": {"nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
                          "nvmlDeviceGetEccMode": "NOT_SUPPORTED",
                          "nvmlDeviceGetMigMode": "FUNCTION_NOT_FOUND"},
               "remapped_rows": "NOT_SUPPORTED", "memory_v2": "FUNCTION_NOT_FOUND"}  # fmt: skip
    env = fake_env(readings_dir, devices=[lacking, {"error": "GPU_IS_LOST"}])
    _, document = report(env=env)
    gpu, lost = document["sections"]["gpus"]
    # Every reading the GPU lacks says so, and none of them is a problem.
    assert gpu["status"] == "ok" and "lost" not in gpu
    assert gpu["temperature"]["current"] == "not supported"
    assert gpu["temperature"]["slowdown"] == "not supported"
    assert gpu["power"] == {"draw_w": "not supported", "limit_w": 700.0}
    assert gpu["clocks_event_reasons"] == "not supported"
    assert gpu["ecc"] == {"mode": "not supported"}
    assert gpu["remapped_rows"] == "not supported" and gpu["mig_mode"] == "not supported"
    assert gpu["memory"]["struct"] == "v1"  # a driver older than the v2 struct
    assert "GPU 0" not in whats(document)
    assert "temperature           current not supported" in as_text(document)
    # The lost GPU is one section, with its hint.
    assert lost["lost"] == "NVML_ERROR_GPU_IS_LOST"
    assert document["sections"]["processes"]["gpus"][1] == {
        "index": 1,
        "lost": "NVML_ERROR_GPU_IS_LOST",
    }
    assert "GPU 1 is lost (NVML_ERROR_GPU_IS_LOST)" in whats(document)
    assert any("nvidia-smi -r" in hint for hint in hints_of(document))


def test_run_report_writes_to_its_file_and_nvml_errors_at_start_give_their_hint(
    readings_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, as the CLI calls it; the workers inherit this environment.
    for key, value in fake_env(readings_dir, init_error="DRIVER_NOT_LOADED").items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    assert run_report("json", 30, False, out) == 0
    document = json.loads(out.getvalue())
    assert document["sections"]["nvml"]["error"] == "NVML_ERROR_DRIVER_NOT_LOADED"
    assert "NVIDIA driver not loaded" in whats(document)
    assert document["sections"]["gpus"] == []


def test_unknown_error_at_nvml_start_gives_the_restart_the_container_hint(
    readings_dir: Path,
) -> None:
    # NVML inside a container after the host's `systemctl daemon-reload`.
    result, document = report(env=fake_env(readings_dir, init_error="UNKNOWN"))
    assert document["sections"]["nvml"]["error"] == "NVML_ERROR_UNKNOWN"
    assert "NVML answers Unknown Error" in whats(document)
    assert any("restart the container" in hint for hint in hints_of(document))
    text = run_cli("--report", env=fake_env(readings_dir, init_error="UNKNOWN"))
    assert text.rc == 0 and "restart the container" in text.stdout


def test_unknown_error_on_one_gpu_gives_the_restart_the_container_hint(
    readings_dir: Path,
) -> None:
    _, document = report(env=fake_env(readings_dir, devices=[{}, {"error": "UNKNOWN"}]))
    assert "GPU 1: NVML answers Unknown Error" in whats(document)
    assert "GPU 0" not in whats(document)
    assert any("restart the container" in hint for hint in hints_of(document))


# -- the hints, directly ------------------------------------------------------------
@pytest.mark.parametrize(
    ("torch_cuda", "driver", "verdict"),
    [
        ("12.8", "12.8", "ok"),
        ("12.1", 12020, "ok"),
        ("12.8", "12.2", "minor"),
        ("13.0", 12080, "major"),
        (None, "12.2", "unknown"),
        ("12.8", None, "unknown"),
        ("12.8", "error: NVML_ERROR_UNKNOWN", "unknown"),
    ],
)
def test_cuda_verdict(torch_cuda: str | None, driver: Any, verdict: str) -> None:
    assert hints.cuda_verdict(torch_cuda, driver) == verdict


def test_driver_cuda_hint_says_which_driver_to_install() -> None:
    minor = hints.driver_cuda("12.8", "12.2")
    assert minor is not None and minor.what.startswith(
        "driver supports CUDA 12.2 but torch was built for 12.8"
    )
    major = hints.driver_cuda("13.0", 12080)
    assert major is not None and "cannot use the GPU" in major.what
    assert "R580 or newer" in major.hint and "CUDA 12.x" in major.hint
    assert hints.driver_cuda("12.4", "12.8") is None and hints.driver_cuda(None, "12.8") is None


def test_torch_build_hints() -> None:
    cpu = hints.torch_build({"torch": "2.13.0+cpu", "cuda": None, "hip": None})
    assert cpu == Problem(
        "torch 2.13.0+cpu is a CPU build: it cannot use any GPU",
        "install a CUDA build of torch (pip install torch --index-url "
        "https://download.pytorch.org/whl/cu128, with the CUDA version your driver supports)",
    )
    assert hints.torch_build({"torch": "2.8.0", "cuda": "12.8"}) is None
    assert hints.torch_build({"torch": "2.8.0", "hip": "6.4"}) is None
    broken = hints.torch_build({"import_error": "ImportError: libcudnn.so.9"})
    assert broken is not None and "does not import" in broken.what


def test_torch_runtime_hints() -> None:
    build = {"torch": "2.8.0", "cuda": "12.8", "build": "CUDA 12.8"}
    old = {
        "cuda_available": False,
        "device_count": 0,
        "warnings": ["CUDA initialization: The NVIDIA driver on your system is too old"],
    }
    (problem,) = hints.torch_runtime(old, build)
    assert "too old" in problem.what and "upgrade the NVIDIA driver" in problem.hint
    blackwell = {
        "cuda_available": True,
        "device_count": 1,
        "arch_list": ["sm_80", "sm_90"],
        "devices": [{"index": 0, "name": "B200", "capability": "10.0"}],
    }
    (problem,) = hints.torch_runtime(blackwell, build)
    assert "not among torch's compiled architectures" in problem.what
    blackwell["arch_list"] = ["sm_80", "sm_90", "compute_90"]  # PTX the driver can JIT
    assert hints.torch_runtime(blackwell, build) == []
    assert hints.torch_runtime(old, {"torch": "2.8.0+cpu"}) == []  # torch_build says it


@pytest.mark.parametrize(
    ("nodes", "in_container", "expected"),
    [
        (
            {"gpus": [], "missing": ["/dev/nvidiactl", "/dev/nvidia-uvm"]},
            True,
            "the container was started without GPU access",
        ),
        (
            {"gpus": [], "missing": ["/dev/nvidiactl", "/dev/nvidia-uvm"]},
            False,
            "the NVIDIA kernel driver is not loaded",
        ),
        (
            {"gpus": ["/dev/nvidia0"], "missing": ["/dev/nvidia-uvm"]},
            True,
            "device node missing: /dev/nvidia-uvm",
        ),
        (
            {"gpus": ["/dev/nvidia0"], "missing": [], "inaccessible": ["/dev/nvidia0"]},
            False,
            "no read/write access to /dev/nvidia0",
        ),
    ],
)
def test_device_node_hints(nodes: dict[str, Any], in_container: bool, expected: str) -> None:
    (problem,) = hints.device_nodes(nodes, in_container)
    assert expected in problem.what and problem.hint
    assert hints.device_nodes({"gpus": ["/dev/nvidia0"], "missing": []}, True) == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("NVML_ERROR_LIBRARY_NOT_FOUND", "user-space libraries are not mounted"),
        ("NVML_ERROR_DRIVER_NOT_LOADED", "driver not loaded"),
        ("NVML_ERROR_NO_PERMISSION", "no permission"),
        ("NVML_ERROR_LIB_RM_VERSION_MISMATCH", "versions differ"),
        ("not installed", "nvidia-ml-py"),
        ("NVML_ERROR_UNKNOWN", "NVML answers Unknown Error"),
    ],
)
def test_nvml_start_hints(error: str, expected: str) -> None:
    problem = hints.nvml_start(error)
    assert problem is not None and expected in problem.what and problem.hint
    assert hints.nvml_start(None) is None


def test_gpu_lost_hints() -> None:
    lost = hints.gpu_lost("GPU 1", "NVML_ERROR_GPU_IS_LOST")
    assert lost is not None and "Xid 79" in lost.hint
    reset = hints.gpu_lost("GPU 1", "NVML_ERROR_RESET_REQUIRED")
    assert reset is not None and "needs a reset" in reset.what
    container = hints.gpu_lost("GPU 1", "NVML_ERROR_UNKNOWN")
    assert container is not None and container.hint.startswith("restart the container")
    assert hints.gpu_lost("GPU 1", "NVML_ERROR_TIMEOUT") is None


def test_gpu_health_hints() -> None:
    healthy = {
        "temperature": {"current": 34, "slowdown": 89},
        "clocks_event_reasons": {"mask": "0x1", "names": ["gpu idle"]},
        "ecc": {"mode": "on", "uncorrected_volatile": 0},
        "remapped_rows": {"pending": False, "failure": False},
        "retired_pages": "not supported",
        "recovery_action": "none",
        "memory": {"total": 85520809984, "free": 85017493504},
    }
    assert hints.gpu_health("GPU 0", healthy) == []
    sick = {
        "temperature": {"current": 91, "slowdown": 89},
        "clocks_event_reasons": {"mask": "0x48", "names": hints.clock_reasons(0x48)},
        "ecc": {"mode": "on", "uncorrected_volatile": 2},
        "remapped_rows": {"pending": True, "failure": True},
        "recovery_action": "gpu reset",
        "memory": {"total": 85520809984, "free": 130 << 20},
    }
    found = "\n".join(p.what for p in hints.gpu_health("GPU 0", sick))
    for expected in (
        "at or above its slowdown threshold 89°C",
        "hw slowdown, hw thermal",
        "2 uncorrectable ECC",
        "row remapping failed",
        "repair",
        "gpu reset",
        "0.13 GiB free",
    ):
        assert expected in found
    unsupported = {key: "not supported" for key in healthy}
    assert hints.gpu_health("GPU 0", unsupported) == []


def test_clock_reasons_decode_every_bit() -> None:
    assert hints.clock_reasons(0) == []
    assert hints.clock_reasons(0x1) == ["gpu idle"]
    assert hints.clock_reasons(0x84) == ["sw power cap", "hw power brake slowdown"]
    assert hints.clock_reasons(0x1000) == ["unknown 0x1000"]


def test_libraries_visibility_and_not_read_hints() -> None:
    missing = {"libcuda.so.1": {"loaded": False, "error": "not found"}}
    (problem,) = hints.libraries(missing, None)
    assert "NVIDIA_DRIVER_CAPABILITIES" in problem.hint
    assert hints.libraries(missing, "NVML_ERROR_LIBRARY_NOT_FOUND") == []  # one cause, one hint
    (hidden,) = hints.visibility({"CUDA_VISIBLE_DEVICES": ""}, 8, 0)
    assert "CUDA_VISIBLE_DEVICES=''" in hidden.what
    assert (
        hints.visibility({}, 8, 0) == []
        and hints.visibility({"CUDA_VISIBLE_DEVICES": "0"}, 8, 1) == []
    )
    hung = hints.not_read("NVML", "timed out", "timed out after 2s")
    assert "hung" in hung.hint
    assert "-v" in hints.not_read("torch", "failed", "crashed").hint
