"""The real checks on a real GPU. Skipped wherever CUDA is not available
(CI has no GPU); run on a machine with an NVIDIA GPU and record the outcome
in docs/gpu-validation.md."""

from __future__ import annotations

import json

import pytest
from conftest import clean_env, run_cli

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda_device() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: GPU tests run only where one is visible")


def test_the_default_set_passes_on_a_healthy_gpu() -> None:
    result = run_cli("--format", "json", "--timeout", "60", env=clean_env(), timeout=120)
    data = json.loads(result.stdout)
    assert result.rc == 0, result.stdout
    assert {c["check"] for c in data["checks"]} == {"cuda", "tensor", "nvml"}
    cuda = next(c for c in data["checks"] if c["check"] == "cuda")
    assert cuda["details"]["devices"][0]["name"]
    assert cuda["details"]["cuda"]


def test_tensor_on_cuda_reports_its_footprint() -> None:
    result = run_cli("--format", "json", "tensor:device=cuda:0", "--timeout", "60", timeout=120)
    assert result.rc == 0, result.stdout
    details = json.loads(result.stdout)["checks"][0]["details"]
    assert details["value"] == 30.0
    assert details["memory_total"] > details["memory_free"] > 0


@pytest.mark.parametrize(("dtype", "itemsize"), [("float16", 2), ("bfloat16", 2), ("float32", 4)])
def test_verify_matmul_on_cuda_passes_and_reports_time_and_memory(dtype: str, itemsize: int
                                                                  ) -> None:  # fmt: skip
    result = run_cli("--format", "json", f"tensor:device=cuda:0,verify=matmul,dtype={dtype}",
                     "--timeout", "60", timeout=120)  # fmt: skip
    assert result.rc == 0, result.stdout
    details = json.loads(result.stdout)["checks"][0]["details"]
    assert details["size"] == 1024
    assert 0 <= details["error"] <= details["tolerance"]
    assert details["seconds"] > 0
    # A, B and C live on the device while the product runs.
    assert details["memory_extra"] >= 3 * 1024 * 1024 * itemsize


def test_verify_matmul_on_cuda_defaults_to_float16_and_allows_tf32_when_asked() -> None:
    result = run_cli("--format", "json", "tensor:device=cuda:0,verify=matmul",
                     "tensor:device=cuda:0,verify=matmul,dtype=float32,tf32=true",
                     "--timeout", "60", timeout=120)  # fmt: skip
    assert result.rc == 0, result.stdout
    first, second = (c["details"] for c in json.loads(result.stdout)["checks"])
    assert first["dtype"] == "float16" and first["tf32"] is False
    assert second["dtype"] == "float32" and second["tf32"] is True
    assert second["error"] <= second["tolerance"]


def test_verify_matmul_catches_a_wrong_product_on_cuda() -> None:
    from importlib.metadata import entry_points

    from conftest import require

    require("wrongmatmul" in {e.name for e in entry_points(group="torchprobe.checks")},
            "test plugins not installed")  # fmt: skip
    result = run_cli("wrongmatmul:device=cuda:0,verify=matmul", "--timeout", "60", timeout=120)
    assert result.rc == 1
    assert "max relative error" in result.stdout and "exceeds the tolerance" in result.stdout


def test_cuda_min_devices_above_the_count_fails() -> None:
    result = run_cli("cuda:min-devices=999", "--timeout", "60", timeout=120)
    assert result.rc == 1
    assert "at least 999 required" in result.stdout


def test_nvml_reads_every_gpu_without_torch() -> None:
    result = run_cli("--format", "json", "nvml", timeout=60)
    assert result.rc == 0, result.stdout
    checks = json.loads(result.stdout)["checks"]
    assert checks and all(c["details"]["uuid"].startswith("GPU-") for c in checks)


def test_nvml_and_tensor_address_the_same_gpu_by_uuid() -> None:
    result = run_cli("--format", "json", "cuda", "--timeout", "60", timeout=120)
    uuid = json.loads(result.stdout)["checks"][0]["details"]["devices"][0].get("uuid")
    if not uuid:
        pytest.skip("this torch does not report device UUIDs")
    nvml = run_cli("--format", "json", f"nvml:device={uuid}", timeout=60)
    assert nvml.rc == 0, nvml.stdout
    assert json.loads(nvml.stdout)["checks"][0]["details"]["uuid"] == uuid


def test_a_gil_holding_hang_next_to_gpu_checks_is_killed_on_time() -> None:
    from importlib.metadata import entry_points

    from conftest import require

    require("gilhang" in {e.name for e in entry_points(group="torchprobe.checks")},
            "test plugins not installed")  # fmt: skip
    result = run_cli("tensor:device=cuda:0", "gilhang:seconds=60,timeout=2", "--timeout", "30",
                     timeout=60)  # fmt: skip
    assert "timed out after 2s" in result.stdout
    assert result.elapsed < 29


def _serve(tmp_path, fault: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from conftest import TESTS

    proc = subprocess.Popen([sys.executable, str(TESTS / "gpu_server.py"), str(tmp_path), fault],
                            stdout=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    lines = []
    assert proc.stdout is not None
    while not lines or not lines[-1].startswith("live"):
        line = proc.stdout.readline()
        assert line, f"the server ended: {lines}"
        lines.append(line.strip())
    return proc, lines


def test_a_device_side_assert_is_seen_by_the_servers_monitor_not_by_a_fresh_probe(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    import time

    proc, lines = _serve(tmp_path, "assert")
    try:
        assert lines[1] == "error AcceleratorError 710" or lines[1].startswith("error RuntimeError")
        assert lines[2].startswith("after: ") and lines[2] != "after: cuda works"
        assert lines[3] == "live False"
        time.sleep(1.0)
        status = run_cli(f"status-file:path={tmp_path}", timeout=60)
        assert status.rc == 1 and "sticky CUDA error 710" in status.stdout, status.stdout
        fresh = run_cli("cuda", "tensor", "--timeout", "60", timeout=120)
        assert fresh.rc == 0, fresh.stdout  # why the in-process monitor exists
    finally:
        proc.kill()
        proc.wait()


def test_out_of_memory_in_the_server_is_not_sticky(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    proc, lines = _serve(tmp_path, "oom")
    try:
        assert lines[1].startswith("error OutOfMemoryError"), lines
        assert lines[2] == "after: cuda works" and lines[3] == "live True"
        time.sleep(1.0)
        status = run_cli(f"status-file:path={tmp_path}", timeout=60)
        assert status.rc == 0, status.stdout
    finally:
        proc.kill()
        proc.wait()


def test_a_nearly_full_gpu_fails_the_tensor_probe_fast_and_says_out_of_memory() -> None:
    import subprocess
    import sys
    import time

    hog = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, torch\n"
         "free, total = torch.cuda.mem_get_info(0)\n"
         "block = torch.empty(free - 150 * 2**20, dtype=torch.uint8, device='cuda:0')\n"
         "print('holding', flush=True)\n"
         "time.sleep(300)\n"],
        stdout=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "holding"
        started = time.monotonic()
        result = run_cli("--format", "json", "tensor:device=cuda:0", "nvml:max-memory=90",
                         "--timeout", "60", timeout=120)  # fmt: skip
        elapsed = time.monotonic() - started
        print(result.stdout)
        checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
        assert result.rc == 1 and elapsed < 30
        assert checks["tensor"]["status"] == "fail"
        assert "out of memory" in checks["tensor"]["message"], checks["tensor"]["message"]
        nvml = checks["nvml"]["details"]
        if nvml.get("memory_percent", 0) >= 90:  # where NVML sees the hog's memory
            assert checks["nvml"]["status"] == "fail"
    finally:
        hog.kill()
        hog.wait()


def _gpu_used_bytes() -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    finally:
        pynvml.nvmlShutdown()


def test_a_check_hung_in_a_cuda_kernel_is_killed_on_time_and_frees_the_gpu() -> None:
    import time

    from conftest import require

    require("cudaspin" in run_cli("--list").stdout, "test plugins not installed")
    before = _gpu_used_bytes()
    result = run_cli("cudaspin:seconds=600,timeout=3", "nvml", "--timeout", "30", timeout=60)
    assert result.rc == 1
    assert "cudaspin" in result.stdout and "timed out after 3s" in result.stdout, result.stdout
    assert result.elapsed < 15, result.elapsed
    time.sleep(1.0)
    assert _gpu_used_bytes() - before < 64 * 2**20  # the worker's context is gone


def test_the_monitors_xid_watch_registers_on_the_real_gpu_and_a_clean_run_stays_live(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    import subprocess
    import sys
    import time
    from pathlib import Path

    worker = Path(__file__).parent / "monitor_worker.py"
    proc = subprocess.Popen(
        [sys.executable, str(worker), str(tmp_path), "--device", "cuda:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        path = tmp_path / f"{proc.pid}.json"
        deadline = time.monotonic() + 30
        doc: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            doc = json.loads(path.read_text()) if path.exists() else {}
            if doc.get("xid", {}).get("state") not in (None, "off", "starting"):
                break
            time.sleep(0.1)
        xid = doc["xid"]
        assert xid["state"] == "watching", xid  # an unprivileged process holds the event set
        assert xid["gpus"][0].startswith("GPU-") and xid["counts"] == [], xid
        time.sleep(2)  # a few waits of 0.5 s, with no Xid on a healthy GPU
        assert json.loads(path.read_text())["live"] is True
        status = run_cli(f"status-file:path={tmp_path}", timeout=60)
        assert status.rc == 0, status.stdout
    finally:
        proc.kill()
        proc.wait()


def test_the_sidecars_xid_watch_process_registers_on_every_real_gpu() -> None:
    # The serve sidecar's watch, in its process of its own (torchprobe.serve.xid).
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "torchprobe.serve.xid"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=clean_env())  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = json.loads(proc.stdout.readline())
        assert first["state"] == "watching", first
        assert first["gpus"] and all(g.startswith("GPU-") for g in first["gpus"]), first
        proc.stdin.close()  # the sidecar ended
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
