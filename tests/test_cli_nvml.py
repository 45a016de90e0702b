"""``torchprobe nvml`` as a user runs it: the installed command, a worker
process, and the fake NVML of tests/fakes (the real binding where it counts)."""

from __future__ import annotations

import json

import pytest
from conftest import clean_env, fake_nvml_env, run_cli

H100 = {"name": "NVIDIA H100 80GB HBM3"}


def scenario(**top: object) -> str:
    return json.dumps(top)


def test_two_gpus_one_lost_gives_one_failing_line_and_exit_1() -> None:
    env = fake_nvml_env(scenario(devices=[H100, dict(H100, error="GPU_IS_LOST")]))
    result = run_cli("nvml", env=env)
    assert result.rc == 1
    assert result.lines[0].startswith("PASS  nvml[0]  NVIDIA H100 80GB HBM3: memory")
    assert result.lines[1].startswith("FAIL  nvml[1]")
    assert "lost" in result.lines[1].lower()
    assert result.lines[-1].startswith("UNHEALTHY: 1 passed, 1 failed")


def test_a_healthy_gpu_passes_with_figures_in_json() -> None:
    result = run_cli("--format", "json", "nvml:max-memory=90", env=fake_nvml_env(scenario()))
    assert result.rc == 0, result.stdout + result.stderr
    check = json.loads(result.stdout)["checks"][0]
    assert check["options"] == {"max-memory": "90"}
    assert check["details"]["memory_struct"] == "v2"
    assert check["details"]["uuid"].startswith("GPU-")


def test_a_hung_nvml_call_is_killed_at_the_checks_timeout() -> None:
    env = fake_nvml_env(scenario(devices=[dict(H100, hang={"nvmlDeviceGetMemoryInfo": 60})]))
    result = run_cli("nvml:timeout=1", "--timeout", "10", env=env)
    assert result.rc == 1
    assert result.elapsed < 3, result.elapsed
    assert "timed out after 1s (its worker process was killed)" in result.stdout


def test_a_hung_nvml_init_cannot_hold_the_run_past_its_deadline() -> None:
    env = fake_nvml_env(scenario(hang={"nvmlInit": 60}))
    result = run_cli("nvml", "--timeout", "1500ms", env=env)
    assert result.rc == 1
    assert result.elapsed < 2.2, result.elapsed


def test_driver_not_loaded_is_one_line_that_says_so() -> None:
    result = run_cli("nvml", env=fake_nvml_env(scenario(init_error="DRIVER_NOT_LOADED")))
    assert result.rc == 1
    assert "driver" in result.lines[0].lower() and result.lines[0].startswith("FAIL  nvml")
    assert "Traceback" not in result.stdout + result.stderr


def test_without_a_driver_the_real_binding_fails_with_a_clear_line() -> None:
    import os

    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has an NVIDIA driver")
    result = run_cli("nvml", env=clean_env())
    assert result.rc == 1
    assert "NVML library not found (libnvidia-ml.so.1)" in result.lines[0]


def test_a_bad_device_option_is_a_usage_error_before_anything_runs() -> None:
    result = run_cli("nvml:device=cuda:0", env=fake_nvml_env(scenario()))
    assert result.rc == 1 and result.stdout == ""
    assert result.stderr.startswith("torchprobe: error: check 'nvml': option 'device':")


def test_unknown_error_at_start_says_restart_the_container() -> None:
    # What a container sees once the host ran `systemctl daemon-reload`.
    result = run_cli("nvml", env=fake_nvml_env(scenario(init_error="UNKNOWN")))
    assert result.rc == 1
    assert result.lines[0].startswith("FAIL  nvml")
    assert "NVML_ERROR_UNKNOWN" in result.lines[0]
    assert "restart the container" in result.lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_error_on_a_gpu_says_restart_the_container() -> None:
    env = fake_nvml_env(scenario(devices=[dict(H100, error="UNKNOWN")]))
    result = run_cli("--format", "json", "nvml", env=env)
    assert result.rc == 1
    check = json.loads(result.stdout)["checks"][0]
    assert check["status"] == "fail" and check["details"]["nvml_error"] == "NVML_ERROR_UNKNOWN"
    assert "restart the container" in check["message"]


def test_another_start_error_does_not_say_restart_the_container() -> None:
    result = run_cli("nvml", env=fake_nvml_env(scenario(init_error="NO_PERMISSION")))
    assert result.rc == 1 and "restart the container" not in result.stdout
