"""The ``nvml`` check against the fake NVML (tests/fakes/pynvml.py), which wraps the
real nvidia-ml-py and raises its real error classes; and once against the real
binding on this GPU-less machine."""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from torchprobe.base import CheckFailed, Outcome, Status, UsageError
from torchprobe.checks.nvml import NvmlCheck
from torchprobe.engine.spec import parse_occurrence

FAKES = Path(__file__).resolve().parents[1] / "fakes"
ENV = "TORCHPROBE_FAKE_NVML"
MIB = 1 << 20
TOTAL = 81559 * MIB  # the H100's total as NVML reports it
H100 = "NVIDIA H100 80GB HBM3"

Use = Callable[..., ModuleType]


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Iterator[Use]:
    """``use(scenario)``: import the fake pynvml for this scenario; undone afterwards."""
    monkeypatch.syspath_prepend(str(FAKES))
    saved = sys.modules.pop("pynvml", None)

    def load(scenario: dict[str, Any] | None = None) -> ModuleType:
        monkeypatch.setenv(ENV, json.dumps(scenario or {}))
        sys.modules.pop("pynvml", None)
        module = importlib.import_module("pynvml")
        assert Path(module.__file__ or "").parent == FAKES
        return module

    yield load
    sys.modules.pop("pynvml", None)
    if saved is not None:
        sys.modules["pynvml"] = saved


def probe(**options: Any) -> list[Outcome]:
    check = NvmlCheck(**options)
    check.setup()
    return list(check.run())


def one(use: Use, device: dict[str, Any] | None = None, **options: Any) -> Outcome:
    use({"devices": [device or {}]})
    (outcome,) = probe(**options)
    return outcome


def test_healthy_h100_passes_with_key_figures(use: Use) -> None:
    outcome = one(use)
    assert outcome.status is Status.PASS and outcome.target == "0"
    assert outcome.message == (
        f"{H100}: memory 0.0/79.6 GiB (0.0% ≤ 98%), 34°C (slowdown 89°C), ECC ok, remapped rows ok"
    )
    d = outcome.details
    assert d["memory_struct"] == "v2" and "excludes" in d["memory_figure"]
    assert (d["memory_total"], d["memory_used"], d["memory_reserved"]) == (TOTAL, 0, 480 * MIB)
    assert d["unsupported"] == ["retired_pages"]  # H100 remaps rows instead
    assert d["nvml_index"] == 0 and d["uuid"].startswith("GPU-") and d["name"] == H100
    assert (d["driver"], d["cuda_driver"], d["recovery_action"]) == ("580.159.04", "13.0", 0)
    assert d["temperature"] == 34 and d["slowdown_temperature"] == 89
    assert d["ecc_mode"] == "on" and d["ecc_uncorrected_volatile"] == 0
    json.dumps(d)


V2_MISSING = ["FUNCTION_NOT_FOUND", "NOT_SUPPORTED", "ARGUMENT_VERSION_MISMATCH"]


@pytest.mark.parametrize("why", V2_MISSING)
def test_without_v2_memory_falls_back_to_v1_and_says_so(use: Use, why: str) -> None:
    outcome = one(use, {"memory_v2": why})
    assert outcome.status is Status.PASS
    assert "memory 0.5/79.6 GiB (v1) (0.6% ≤ 98%)" in outcome.message
    d = outcome.details
    assert d["memory_struct"] == "v1" and "includes the driver's reservation" in d["memory_figure"]
    assert d["memory_used"] == 480 * MIB and d["memory_reserved"] is None


def test_threshold_uses_v2_used_which_excludes_the_reservation(use: Use) -> None:
    # 97.6% used by processes, plus the 480 MiB reservation: over 98% only by v1.
    device = {"memory": {"used": int(TOTAL * 0.976)}}
    assert one(use, device).status is Status.PASS
    assert one(use, {**device, "memory_v2": "FUNCTION_NOT_FOUND"}).status is Status.FAIL


def test_memory_over_the_threshold_fails_leading_with_memory(use: Use) -> None:
    device = {"memory": {"used": int(TOTAL * 0.994)}}
    outcome = one(use, device)
    assert outcome.status is Status.FAIL
    assert outcome.message.startswith(f"{H100}: memory 79.2/79.6 GiB (99.4% > 98%), 34°C")
    assert one(use, device, max_memory=99.5).status is Status.PASS


@pytest.mark.parametrize(
    ("error", "text"),
    [("GPU_IS_LOST", "lost (NVML_ERROR_GPU_IS_LOST)"), ("RESET_REQUIRED", "needs a reset")],
)
def test_a_lost_or_wedged_gpu_fails_only_its_own_line(use: Use, error: str, text: str) -> None:
    use({"devices": [{}, {"error": error}, {}]})
    first, broken, third = probe()
    assert [o.target for o in (first, broken, third)] == ["0", "1", "2"]
    assert first.status is third.status is Status.PASS
    assert broken.status is Status.FAIL and broken.message.startswith(f"GPU 1: {text}")
    assert broken.details["nvml_error"] == f"NVML_ERROR_{error}"


@pytest.mark.parametrize(
    "function",
    ["nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature", "nvmlDeviceGetFieldValues"],
)
def test_gpu_lost_in_the_middle_of_the_readings_fails_the_line(use: Use, function: str) -> None:
    outcome = one(use, {"errors": {function: "GPU_IS_LOST"}})
    assert outcome.status is Status.FAIL
    assert outcome.message.startswith(f"{H100}: lost (NVML_ERROR_GPU_IS_LOST)")


def test_an_unknown_error_on_one_reading_fails_but_the_others_still_report(use: Use) -> None:
    outcome = one(use, {"errors": {"nvmlDeviceGetTemperature": "UNKNOWN"}})
    assert outcome.status is Status.FAIL
    assert outcome.message.startswith(
        f"{H100}: temperature: NVML error: Unknown Error (NVML_ERROR_UNKNOWN), memory 0.0/79.6"
    )
    assert "ECC ok, remapped rows ok" in outcome.message


@pytest.mark.parametrize(
    ("device", "unsupported"),
    [
        ({"temperature": "NOT_SUPPORTED"}, "temperature"),
        ({"slowdown": "NOT_SUPPORTED"}, "slowdown_temperature"),
        ({"ecc_mode": "NOT_SUPPORTED"}, "ecc"),
        ({"ecc_uncorrected_volatile": "NOT_SUPPORTED"}, "ecc_uncorrected"),
        ({"remapped_rows": "NOT_SUPPORTED"}, "remapped_rows"),
        ({"errors": {"nvmlDeviceGetRemappedRows": "FUNCTION_NOT_FOUND"}}, "remapped_rows"),
        ({"recovery_action": "NOT_SUPPORTED"}, "recovery_action"),
        ({"recovery_action": "INVALID_ARGUMENT"}, "recovery_action"),  # driver predates it
        ({"errors": {"nvmlDeviceGetFieldValues": "NOT_SUPPORTED"}}, "recovery_action"),
        ({"memory": "NOT_SUPPORTED"}, "memory"),
    ],
)
def test_a_reading_the_gpu_lacks_is_skipped_and_listed(
    use: Use, device: dict[str, Any], unsupported: str
) -> None:
    outcome = one(use, device)
    assert outcome.status is Status.PASS, outcome
    assert sorted(outcome.details["unsupported"]) == sorted([unsupported, "retired_pages"])


def test_without_a_slowdown_threshold_the_temperature_is_only_reported(use: Use) -> None:
    outcome = one(use, {"slowdown": "NOT_SUPPORTED", "temperature": 120})
    assert outcome.status is Status.PASS and ", 120°C, " in outcome.message


@pytest.mark.parametrize(
    ("temperature", "options", "status", "text"),
    [
        (88, {}, Status.PASS, "88°C (slowdown 89°C)"),
        (89, {}, Status.FAIL, "89°C (at or above slowdown 89°C)"),
        (80, {"max_temperature": 75.0}, Status.FAIL, "80°C (> 75°C)"),
        (80, {"max_temperature": 85.0}, Status.PASS, "80°C (≤ 85°C)"),
    ],
)
def test_temperature_against_slowdown_or_max_temperature(
    use: Use, temperature: int, options: dict[str, Any], status: Status, text: str
) -> None:
    outcome = one(use, {"temperature": temperature}, **options)
    assert outcome.status is status and text in outcome.message


@pytest.mark.parametrize(
    ("device", "status", "text"),
    [
        ({"ecc_uncorrected_volatile": 3}, Status.FAIL, ": 3 uncorrectable ECC errors, memory"),
        ({"ecc_corrected_volatile": 7}, Status.PASS, "ECC ok"),
        ({"ecc_mode": 0, "ecc_uncorrected_volatile": 3}, Status.PASS, "ECC off"),
    ],
)
def test_volatile_uncorrectable_ecc_errors_fail(
    use: Use, device: dict[str, Any], status: Status, text: str
) -> None:
    outcome = one(use, device)
    assert outcome.status is status and text in outcome.message


@pytest.mark.parametrize(
    ("rows", "status", "text"),
    [
        ([0, 0, 1, 0], Status.FAIL, "row remapping pending (reset the GPU to apply it)"),
        ([0, 1, 0, 1], Status.FAIL, "row remapping failed"),
        ([5, 0, 0, 0], Status.PASS, "remapped rows ok"),
    ],
)
def test_row_remapping_failure_or_pending_fails(
    use: Use, rows: list[int], status: Status, text: str
) -> None:
    outcome = one(use, {"remapped_rows": rows})
    assert outcome.status is status and text in outcome.message
    assert outcome.details["remapped_corrected"] == rows[0]


@pytest.mark.parametrize(("pending", "status"), [(1, Status.FAIL), (0, Status.PASS)])
def test_retired_pages_pending_fails_on_older_gpus(use: Use, pending: int, status: Status) -> None:
    outcome = one(use, {"name": "Tesla V100-SXM2-16GB", "retired_pending": pending})
    assert outcome.status is status
    assert ("retired pages pending" if pending else "retired pages ok") in outcome.message
    assert outcome.details["retired_pages_pending"] is bool(pending)


@pytest.mark.parametrize(
    ("action", "text"),
    [(1, "gpu reset"), (2, "node reboot"), (4, "drain and reset")],
)
def test_a_recovery_action_fails_and_is_named(use: Use, action: int, text: str) -> None:
    outcome = one(use, {"recovery_action": action})
    assert outcome.status is Status.FAIL
    assert f"the driver asks for recovery: {text} (NVML_GPU_RECOVERY_ACTION_" in outcome.message
    assert outcome.details["recovery_action"] == action


def test_devices_are_selected_by_index_and_uuid_one_line_each(use: Use) -> None:
    uuid = "GPU-aaaaaaaa-0000-4000-8000-000000000002"
    use({"devices": [{}, {}, {"uuid": uuid, "name": "NVIDIA A100-SXM4-40GB"}]})
    outcomes = probe(device=["1", uuid])
    assert [o.target for o in outcomes] == ["1", uuid]
    assert [o.details["nvml_index"] for o in outcomes] == [1, 2]
    assert outcomes[1].message.startswith("NVIDIA A100-SXM4-40GB: ")


def test_a_mig_device_reports_its_memory_and_its_parent_gpus_health(use: Use) -> None:
    mig = "MIG-bbbbbbbb-0000-4000-8000-000000000000"
    slice_ = {"uuid": mig, "name": f"{H100} MIG 3g.40gb", "memory": {"total": 40 << 30}}
    use({"devices": [{}, {"mig_devices": [slice_], "remapped_rows": [0, 0, 1, 0]}]})
    (outcome,) = probe(device=[mig])
    assert outcome.target == mig and outcome.status is Status.FAIL
    assert outcome.message.startswith(f"{H100} MIG 3g.40gb: row remapping pending")
    assert "memory 0.0/40.0 GiB" in outcome.message
    d = outcome.details
    assert d["uuid"] == mig and d["nvml_index"] == 1 and d["parent_uuid"].startswith("GPU-")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("3", "no GPU with index 3 (2 GPUs visible to NVML)"),
        ("GPU-00000000-dead-beef-0000-000000000000", "no GPU with UUID GPU-00000000-dead"),
        ("MIG-00000000-dead-beef-0000-000000000000", "no MIG device with UUID MIG-0000"),
    ],
)
def test_an_unknown_device_fails_its_line_with_a_clear_message(
    use: Use, device: str, message: str
) -> None:
    use({"devices": [{}, {}]})
    good, bad = probe(device=["0", device])
    assert good.status is Status.PASS
    assert bad.status is Status.FAIL and bad.target == device and bad.message.startswith(message)


def test_no_gpu_at_all_fails(use: Use) -> None:
    use({"devices": []})
    with pytest.raises(CheckFailed, match="^no NVIDIA GPU found"):
        probe()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("LIBRARY_NOT_FOUND", "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver"),
        ("DRIVER_NOT_LOADED", "NVIDIA driver not loaded"),
        ("NO_PERMISSION", "NVML: no permission"),
        ("LIB_RM_VERSION_MISMATCH", "NVML library and kernel driver versions differ"),
        ("UNKNOWN", "NVML failed to start: NVML_ERROR_UNKNOWN: in a container this means it lost"),
    ],
)
def test_nvml_that_cannot_start_fails_with_what_it_means(
    use: Use, error: str, message: str
) -> None:
    use({"init_error": error})
    with pytest.raises(CheckFailed) as caught:
        probe()
    assert caught.value.message.startswith(message)
    assert caught.value.details["nvml_error"] == f"NVML_ERROR_{error}"


@pytest.mark.parametrize(
    "scenario", [{}, {"devices": []}, {"devices": [{"error": "GPU_IS_LOST"}]}], ids=str
)
def test_nvml_is_shut_down_whatever_happens(use: Use, scenario: dict[str, Any]) -> None:
    fake = use(scenario)
    try:
        probe()
    except CheckFailed:
        pass
    assert fake._state["init"] == 0


def test_the_real_binding_on_a_machine_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("a real NVIDIA driver is installed here")
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != FAKES])
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    try:
        assert "site-packages" in (importlib.import_module("pynvml").__file__ or "")
        with pytest.raises(CheckFailed) as caught:
            probe()
    finally:
        sys.modules.pop("pynvml", None)
    assert caught.value.message == (
        "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver is visible here "
        "— in a container, run with the NVIDIA container toolkit (--gpus)"
    )


def test_without_nvidia_ml_py_the_check_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes ``import pynvml`` fail
    with pytest.raises(CheckFailed, match=r"^nvidia-ml-py is not installed \(pip install"):
        probe()


def test_options_are_validated_before_anything_runs() -> None:
    declared = {o.key: o for o in NvmlCheck.options}
    ok = parse_occurrence("nvml:device=0|GPU-1|MIG-2,max-memory=90", declared, {})
    assert ok.values == {"device": ["0", "GPU-1", "MIG-2"], "max_memory": 90.0}
    for bad in ("nvml:device=cuda:0", "nvml:max-memory=101", "nvml:device=0||1"):
        with pytest.raises(UsageError):
            parse_occurrence(bad, declared, {})
    assert NvmlCheck().max_memory == 98.0 and NvmlCheck.timeout == 5.0
    assert NvmlCheck.worker == "nvml"


# -- the fake itself: it must behave like nvidia-ml-py --------------------------------


def test_fake_errors_are_the_real_classes_with_the_real_values(use: Use) -> None:
    fake = use({"devices": [{"error": "GPU_IS_LOST"}]})
    real = fake.real
    assert real.__file__ != fake.__file__ and Path(real.__file__).name == "pynvml.py"
    with pytest.raises(real.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()  # before nvmlInit, as the real binding answers
    fake.nvmlInit()
    try:
        with pytest.raises(real.NVMLError) as caught:
            fake.nvmlDeviceGetHandleByIndex(0)
        assert isinstance(caught.value, real.NVMLError_GpuIsLost)
        assert caught.value.value == real.NVML_ERROR_GPU_IS_LOST == 15
        assert fake.NVMLError_GpuIsLost is real.NVMLError_GpuIsLost
        assert str(caught.value) == "GPU is lost"
        with pytest.raises(real.NVMLError_InvalidArgument):
            fake.nvmlDeviceGetHandleByIndex(1)
        with pytest.raises(real.NVMLError_NotFound):
            fake.nvmlDeviceGetHandleByUUID("GPU-none")
    finally:
        fake.nvmlShutdown()
    assert fake.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION == real.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    assert fake.c_nvmlMemory_v2_t is real.c_nvmlMemory_v2_t


def test_fake_hang_holds_the_gil_like_a_stuck_driver(use: Use) -> None:
    fake = use({"hang": {"nvmlDeviceGetCount": 0.4}})
    fake.nvmlInit()
    try:
        worker = threading.Thread(target=fake.nvmlDeviceGetCount)
        start = time.monotonic()
        worker.start()
        worker.join(0.05)  # cannot return while the sleeping call holds the GIL
        assert time.monotonic() - start >= 0.3
        worker.join()
    finally:
        fake.nvmlShutdown()


def test_fake_defers_to_the_real_binding_without_a_scenario(
    use: Use, monkeypatch: pytest.MonkeyPatch
) -> None:
    use()  # leaves tests/fakes first on sys.path
    monkeypatch.delenv(ENV)
    sys.modules.pop("pynvml", None)
    module = importlib.import_module("pynvml")
    assert "site-packages" in (module.__file__ or "") and not hasattr(module, "real")


def test_fake_works_through_pythonpath_in_a_fresh_interpreter(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"devices": [{}, {"error": "RESET_REQUIRED"}]}))
    code = (
        "import sys\n"
        "from torchprobe.checks.nvml import NvmlCheck\n"
        "assert 'pynvml' not in sys.modules, 'imported at module level'\n"
        "for o in NvmlCheck().run(): print(o.status.value, o.message)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(FAKES), ENV: str(scenario)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"pass {H100}: memory")
    assert lines[1].startswith("fail GPU 1: needs a reset (NVML_ERROR_RESET_REQUIRED)")
