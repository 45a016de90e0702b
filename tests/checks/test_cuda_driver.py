"""``cuda:backend=driver`` through the installed command against a fake
``libcuda.so.1`` (tests/fakes/libcuda.c), compiled here with gcc and found by
the real dynamic loader through LD_LIBRARY_PATH: real dlopen, real ctypes
calls, the real CUresult numbers of cuda.h."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKES, clean_env, require, run_cli

from torchprobe.checks.curesult import CURESULT

# The calls of one device's probe, in order, then its releases, newest first.
SEQUENCE = [
    "cuDeviceGet", "cuDeviceGetName", "cuDeviceGetUuid_v2", "cuDeviceGetUuid",
    "cuDevicePrimaryCtxRetain",
    "cuCtxPushCurrent_v2", "cuMemAlloc_v2", "cuMemGetInfo_v2", "cuMemcpyHtoD_v2",
    "cuModuleLoadData", "cuModuleGetFunction", "cuLaunchKernel", "cuCtxSynchronize",
    "cuMemcpyDtoH_v2",
    "cuModuleUnload", "cuMemFree_v2", "cuCtxPopCurrent_v2", "cuDevicePrimaryCtxRelease_v2",
]  # fmt: skip


def build(where: Path, *defines: str) -> Path:
    """Compile the fake into ``where``/libcuda.so.1."""
    gcc = shutil.which("gcc")
    require(gcc is not None, "gcc is not installed: the fake libcuda.so.1 cannot be built")
    assert gcc is not None
    subprocess.run([gcc, "-Wall", "-Werror", "-shared", "-fPIC", *defines, "-o",
                    str(where / "libcuda.so.1"), str(FAKES / "libcuda.c")],
                   check=True, timeout=120)  # fmt: skip
    return where


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("libcuda"))


def probe(libdir: Path, *args: str, **env: str) -> tuple[int, list[dict[str, Any]], str]:
    result = run_cli("--format", "json", "--timeout", "30", *(args or ("cuda:backend=driver",)),
                     env=clean_env(LD_LIBRARY_PATH=str(libdir), **env))  # fmt: skip
    assert result.rc in (0, 1), result.stderr
    data = json.loads(result.stdout)
    return result.rc, data["checks"], result.stderr


def calls(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()]


def test_one_device_passes_and_every_resource_is_released(libdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    rc, checks, _ = probe(libdir, FAKE_CUDA_LOG=str(log))
    assert rc == 0, checks
    (check,) = checks
    assert check["name"] == "cuda[cuda:0]" and check["status"] == "pass"
    assert "Fake GPU 0" in check["message"] and "verified" in check["message"]
    assert "CUDA 12.8 driver" in check["message"]
    device = check["details"]["device"]
    assert device["uuid"] == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert device["verified"] is True
    assert device["memory_total"] == 80 << 30 and 0 < device["memory_free"] < 80 << 30
    made = calls(log)
    assert made[:3] == ["cuInit", "cuDriverGetVersion", "cuDeviceGetCount"]
    assert made[3:] == SEQUENCE


def test_a_mig_slice_is_named_by_its_own_uuid(libdir: Path) -> None:
    rc, (check,), _ = probe(libdir, FAKE_CUDA_MIG="1")
    assert rc == 0
    assert check["details"]["device"]["uuid"] == "MIG-00010203-0405-0607-0809-0a0b0c0d0ef0"


def test_two_devices_pass_one_line_each(libdir: Path) -> None:
    rc, checks, _ = probe(libdir, FAKE_CUDA_DEVICES="2")
    assert rc == 0
    assert [c["name"] for c in checks] == ["cuda[cuda:0]", "cuda[cuda:1]"]
    assert [c["details"]["device"]["name"] for c in checks] == ["Fake GPU 0", "Fake GPU 1"]


@pytest.mark.parametrize(("call", "code"), [
    ("cuInit", 999), ("cuInit", 803), ("cuInit", 802), ("cuInit", 34), ("cuInit", 804),
    ("cuDeviceGetCount", 3), ("cuDeviceGet", 101), ("cuDeviceGetName", 1),
    ("cuDeviceGetUuid_v2", 4), ("cuDevicePrimaryCtxRetain", 46),
    ("cuDevicePrimaryCtxRetain", 2), ("cuCtxPushCurrent_v2", 201), ("cuMemAlloc_v2", 2),
    ("cuMemGetInfo_v2", 999), ("cuMemcpyHtoD_v2", 700), ("cuModuleLoadData", 218),
    ("cuModuleLoadData", 222),
    ("cuModuleLoadData", 209), ("cuModuleLoadData", 200), ("cuModuleGetFunction", 500),
    ("cuLaunchKernel", 701), ("cuLaunchKernel", 400), ("cuCtxSynchronize", 719),
    ("cuCtxSynchronize", 702), ("cuCtxSynchronize", 710), ("cuCtxSynchronize", 304),
    ("cuMemcpyDtoH_v2", 700), ("cuMemFree_v2", 801), ("cuModuleUnload", 999),
])  # fmt: skip
def test_each_failing_call_names_its_curesult(libdir: Path, tmp_path: Path, call: str,
                                              code: int) -> None:  # fmt: skip
    log = tmp_path / "calls"
    rc, checks, stderr = probe(libdir, FAKE_CUDA_FAIL=f"{call}:{code}", FAKE_CUDA_LOG=str(log))
    assert rc == 1, checks
    (check,) = checks
    name, meaning = CURESULT[code]
    assert check["status"] == "fail"
    assert f"{call} failed: {name} ({code}): {meaning}" in check["message"]
    assert "Traceback" not in stderr
    made = calls(log)
    # Whatever failed, what was taken is given back.
    if "cuDevicePrimaryCtxRetain" in made and call != "cuDevicePrimaryCtxRetain":
        assert made.count("cuDevicePrimaryCtxRelease_v2") == 1, made
    if "cuMemAlloc_v2" in made and call != "cuMemAlloc_v2":
        assert "cuMemFree_v2" in made, made


def test_failures_carry_what_to_do(libdir: Path) -> None:
    for spec, words in (
        ("cuMemAlloc_v2:2", "the GPU is full"),
        ("cuCtxSynchronize:719", "reset the GPU"),
        ("cuInit:803", "reboot after a driver upgrade"),
        ("cuInit:999", "restart the container"),
        ("cuDeviceGet:101", "CUDA_VISIBLE_DEVICES"),
    ):
        _, (check,), _ = probe(libdir, FAKE_CUDA_FAIL=spec)
        assert words in check["message"], (spec, check["message"])


def test_one_bad_device_is_one_failing_line(libdir: Path) -> None:
    rc, checks, _ = probe(libdir, FAKE_CUDA_DEVICES="3", FAKE_CUDA_FAIL="cuMemAlloc_v2:2@1")
    assert rc == 1
    assert [c["status"] for c in checks] == ["pass", "fail", "pass"]
    assert checks[1]["name"] == "cuda[cuda:1]"
    assert "cuda:1 (Fake GPU 1, GPU-1011" in checks[1]["message"]
    assert "CUDA_ERROR_OUT_OF_MEMORY (2)" in checks[1]["message"]


def test_a_driver_before_cuda_11_is_called_by_its_first_names(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    rc, (check,), _ = probe(build(tmp_path, "-DFAKE_OLD_DRIVER"), FAKE_CUDA_LOG=str(log))
    assert rc == 0, check
    assert check["details"]["device"]["uuid"] == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    made = calls(log)
    assert made[-1] == "cuDevicePrimaryCtxRelease" and "cuDeviceGetUuid_v2" not in made


def test_a_library_without_an_entry_point_fails_in_one_line(tmp_path: Path) -> None:
    rc, (check,), stderr = probe(build(tmp_path, "-DFAKE_NO_LAUNCH"))
    assert rc == 1
    assert check["message"].startswith("libcuda.so.1 lacks a driver API entry point (")
    assert "cuLaunchKernel" in check["message"] and "Traceback" not in stderr


def test_a_wrong_result_fails_as_garbage(libdir: Path) -> None:
    rc, (check,), _ = probe(libdir, FAKE_CUDA_WRONG="1")
    assert rc == 1
    assert "computes garbage" in check["message"]
    assert check["details"]["device"]["verified"] is False


def test_no_device(libdir: Path) -> None:
    rc, (check,), _ = probe(libdir, FAKE_CUDA_DEVICES="0")
    assert rc == 1
    assert "cuInit failed: CUDA_ERROR_NO_DEVICE (100)" in check["message"]
    assert "CUDA_VISIBLE_DEVICES" in check["message"]
    rc, (check,), _ = probe(libdir, "cuda:backend=driver,min-devices=0", FAKE_CUDA_DEVICES="0")
    assert rc == 0 and check["message"].startswith("no devices (min-devices=0")


def test_fewer_devices_than_required(libdir: Path) -> None:
    rc, (check,), _ = probe(libdir, "cuda:backend=driver,min-devices=3", FAKE_CUDA_DEVICES="2")
    assert rc == 1
    assert check["message"].startswith("2 CUDA device(s) visible to the driver, at least 3")


def test_codes_the_table_lacks_are_named_by_the_driver(libdir: Path) -> None:
    _, (check,), _ = probe(libdir, FAKE_CUDA_FAIL="cuInit:12345")
    assert (
        "CUDA_ERROR_FROM_THE_FUTURE (12345): a code only a newer driver knows" in check["message"]
    )
    _, (check,), _ = probe(libdir, FAKE_CUDA_FAIL="cuInit:77")
    assert "cuInit failed: CUresult 77 (77)" in check["message"]


@pytest.mark.torch
def test_a_hung_synchronize_is_killed_at_the_checks_timeout(libdir: Path) -> None:
    result = run_cli("--format", "json", "--timeout", "30", "cuda:backend=driver,timeout=2",
                     "tensor:device=cpu",
                     env=clean_env(LD_LIBRARY_PATH=str(libdir), FAKE_CUDA_HANG="1"))  # fmt: skip
    assert result.rc == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cuda"]["message"].startswith("timed out after 2s"), checks["cuda"]
    # tensor runs in the torch worker, which the hung driver call does not hold up.
    assert checks["tensor[cpu]"]["status"] == "pass"
    assert result.elapsed < 30


def test_no_libcuda_here(tmp_path: Path) -> None:
    try:
        ctypes.CDLL("libcuda.so.1")
        found = True
    except OSError:
        found = False
    require(not found, "this machine has a libcuda.so.1: 'no libcuda' cannot be shown here")
    result = run_cli("cuda:backend=driver", env=clean_env(LD_LIBRARY_PATH=str(tmp_path)))
    assert result.rc == 1
    assert "libcuda.so.1 does not load" in result.stdout
    assert "no NVIDIA driver is visible here" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_bad_backend_is_a_usage_error() -> None:
    result = run_cli("cuda:backend=cudart")
    assert result.rc == 1
    assert result.stderr.startswith("torchprobe: error: check 'cuda': option 'backend'")
    assert result.stdout == ""


HEAVY = ("torch", "pynvml", "numpy", "grpc", "prometheus_client")


def test_neither_process_imports_anything_heavy(libdir: Path, tmp_path: Path) -> None:
    # The worker: stand-ins for the heavy packages that record an import.
    shadows = tmp_path / "shadows"
    imported = tmp_path / "imported"
    for name in HEAVY:
        (shadows / name).mkdir(parents=True)
        (shadows / name / "__init__.py").write_text(
            f"with open({str(imported)!r}, 'a') as fp:\n    fp.write({name!r} + '\\n')\n"
            f"raise ImportError('{name} must not be imported here')\n"
        )
    # The command itself: its own imports, as python -X importtime lists them.
    result = run_cli(
        "cuda:backend=driver",
        env=clean_env(
            LD_LIBRARY_PATH=str(libdir), PYTHONPATH=str(shadows), PYTHONPROFILEIMPORTTIME="1"
        ),
    )
    assert result.rc == 0, result.stdout + result.stderr
    listed = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
              if line.startswith("import time:")}  # fmt: skip
    assert "torchprobe" in listed
    assert not listed & set(HEAVY)
    assert not imported.exists(), imported.read_text()


def _real_gpus() -> int:
    """Devices the real driver sees here (0 without libcuda or a GPU)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int()
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@pytest.mark.gpu
def test_the_real_driver_runs_the_kernel_on_every_gpu() -> None:
    count = _real_gpus()
    if count == 0:
        pytest.skip("no NVIDIA driver with a visible GPU here: the real kernel needs one")
    result = run_cli("--format", "json", "--timeout", "60", "cuda:backend=driver", timeout=120)
    assert result.rc == 0, result.stdout
    checks = json.loads(result.stdout)["checks"]
    assert len(checks) == count
    for check in checks:
        device = check["details"]["device"]
        assert device["verified"] is True and device["uuid"].startswith("GPU-")
        assert "verified in" in check["message"]


def _ptxas() -> str | None:
    """NVIDIA's PTX assembler: on PATH, or from the nvidia-cuda-nvcc wheel."""
    found = shutil.which("ptxas")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = (spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        for candidate in sorted(Path(root).glob("cu*/bin/ptxas")):
            return str(candidate)
    return None


@pytest.mark.parametrize("gpu", ["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"])
def test_the_kernel_assembles_for_every_gpu_generation(tmp_path: Path, gpu: str) -> None:
    # What the driver's JIT does with the probe's PTX, offline: Turing to Blackwell.
    from torchprobe.checks.cudadriver import PTX

    ptxas = _ptxas()
    require(ptxas is not None, "no ptxas (pip install nvidia-cuda-nvcc==13.5.37)")
    assert ptxas is not None
    good, bad = tmp_path / "probe.ptx", tmp_path / "broken.ptx"
    good.write_bytes(PTX)
    # The same kernel with one operand missing: the assembler must refuse it.
    bad.write_bytes(PTX.replace(b"mul.lo.u32 %r7, %r6, 3;", b"mul.lo.u32 %r7, %r6;"))
    for source, expected_rc in ((good, 0), (bad, 255)):
        command = [ptxas, "--gpu-name", gpu, "-o", str(tmp_path / "out.cubin"), str(source)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == expected_rc, (source.name, done.stderr)
