"""Readiness is declared, not guessed: each check says whether its
configuration judges readiness, and --restart-after refuses those — built-in
checks, presets in their default mode=ready, http URLs read as the server
reads them, and plugins, which declare it in their own worker process.

Everything runs through the installed console script. Every run names its
target with --restart-pid (a `sleep` child) and keeps its count in a fresh
state directory, so nothing outside the test is ever signalled.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Run, alive, clean_env, run_cli, script

pytestmark = pytest.mark.usefixtures("plugins")


def restart_run(tmp_path: Path, target: subprocess.Popen[bytes], *checks: str,
                **env: str) -> Run:  # fmt: skip
    state = tmp_path / "state"
    environ = clean_env(TORCHPROBE_STATE_DIR=str(state), **env)
    done = run_cli("--restart-after", "3", "--restart-pid", str(target.pid), "--timeout", "5",
                   *checks, env=environ)  # fmt: skip
    assert "Traceback" not in done.stderr
    assert done.rc in (0, 1)
    return done


REFUSED = [
    # Presets in their default mode=ready.
    "vllm",
    "triton:model=m",
    "kserve",
    "torchserve:model=m",
    "torchserve",
    "tgi",
    "ollama:mode=ready",
    # A canary is one real inference: readiness, whatever else the check asks.
    "vllm:url=http://127.0.0.1:1,generate=true",
    "sglang:url=http://127.0.0.1:1,generate=true",
    "litserve:url=http://127.0.0.1:1,infer=[1]",
    "triton:url=http://127.0.0.1:1,model=m,infer={},stall=30s",
    # status-file's readiness mode.
    "status-file:mode=ready",
    "status-file:path=/run/x,mode=ready",
    # http URLs whose path ends in a readiness endpoint, as the server reads it.
    "http:url=http://127.0.0.1:1/%72eady",
    "http:url=http://127.0.0.1:1/READY",
    "http:url=http://127.0.0.1:8000/ready,timeout=2",
    "http:url=http://127.0.0.1:8000/v2/health/ready",
    "http:url=http://127.0.0.1:3000/readyz",
    "http:url=http://127.0.0.1/v2/models/m/ready?verbose=1",
    "http:url=http://127.0.0.1/readiness/",
    "http:url=http://127.0.0.1/api/%52eadiness%2f",
    # Plugins that declare it: a Check subclass, a function, a function of its options.
    "gate",
    "gate:mode=ready",
    "readyfunc",
    "modal:mode=ready",
]


@pytest.mark.parametrize("check", REFUSED)
def test_readiness_checks_are_refused_before_anything_runs(
    tmp_path: Path, target: subprocess.Popen[bytes], check: str
) -> None:
    done = restart_run(tmp_path, target, "tcp:address=127.0.0.1:1", check)
    assert done.rc == 1 and done.stdout == ""
    assert done.stderr.startswith("torchprobe: error: --restart-after: ")
    assert "checks readiness" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "state").exists(), "a usage error is never counted"
    assert alive(target.pid)


def test_the_refusal_names_the_default_and_the_liveness_form(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    done = restart_run(tmp_path, target, "vllm")
    assert "'vllm' (mode=ready is its default) checks readiness" in done.stderr
    assert "vllm:mode=live" in done.stderr


ACCEPTED = [
    "status-file:mode=live",
    "status-file",
    "vllm:mode=live",
    "triton:mode=live",
    # stall= is liveness: progress from the server's metrics, no inference sent.
    "vllm:url=http://127.0.0.1:1,mode=live,stall=60s",
    "bentoml:url=http://127.0.0.1:1,mode=live,stall=90s",
    "http:url=http://127.0.0.1:1/health",
    "http:url=http://127.0.0.1:1/v2/health/live",
    "http:url=http://127.0.0.1:1/already-done",
    "http:url=http://127.0.0.1:1/readymade/x",
    "http:url=http://127.0.0.1:1/health?ready=1",
    "tcp:address=127.0.0.1:1",
]


@pytest.mark.parametrize("check", ACCEPTED)
def test_liveness_checks_are_accepted_and_counted(
    tmp_path: Path, target: subprocess.Popen[bytes], check: str
) -> None:
    status = tmp_path / "status"  # status-file: an empty directory fails, as a dead server does
    status.mkdir()
    done = restart_run(tmp_path, target, check, TORCHPROBE_STATUS_DIR=str(status))
    assert done.rc == 1, done.stdout
    assert "error" not in done.stderr
    # Counted: the run reached the policy, which waits for a first pass.
    assert "restart: not armed until a run passes" in done.stderr
    assert alive(target.pid)


@pytest.mark.parametrize("check", ["gate:mode=live", "modal", "modal:mode=live", "ok"])
def test_a_plugin_that_declares_liveness_or_nothing_is_accepted(
    tmp_path: Path, target: subprocess.Popen[bytes], check: str
) -> None:
    done = restart_run(tmp_path, target, check)
    assert done.rc == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "state" / f"restart-{target.pid}.state").exists(), "counted: armed"


def test_a_plugin_whose_declaration_raises_is_refused(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    done = restart_run(tmp_path, target, "unsure")
    assert done.rc == 1 and done.stdout == ""
    assert "'unsure' cannot say whether it checks readiness" in done.stderr


def test_a_failed_run_whose_plugin_never_loaded_is_not_counted(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    done = restart_run(tmp_path, target, "importfail", "ok")
    assert done.rc == 1 and "plugin failed to load" in done.stdout
    assert "this run not counted: plugin check 'importfail' did not load" in done.stderr
    assert not (tmp_path / "state").exists()


def test_plugin_code_is_asked_in_its_worker_never_in_torchprobe(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    imported = tmp_path / "imported"  # the test plugins' module appends its importer's PID
    env = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path / "state"),
                    TORCHPROBE_TEST_IMPORT_LOG=str(imported))  # fmt: skip
    args = ["--restart-after", "3", "--restart-pid", str(target.pid), "modal:mode=ready"]
    probe = subprocess.Popen([str(script()), *args], stdout=subprocess.PIPE, text=True,
                             stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    _, stderr = probe.communicate(timeout=60)
    assert probe.returncode == 1 and "checks readiness" in stderr
    pids = {int(line) for line in imported.read_text().split()}
    assert pids and probe.pid not in pids, "asked in a worker process, not in torchprobe"


def test_dry_run_shows_what_each_check_judges() -> None:
    checks = ["vllm", "vllm:mode=live", "http:url=http://127.0.0.1:1/%72eady",
              "tcp:address=127.0.0.1:1", "gate"]  # fmt: skip
    done = run_cli("--dry-run", "--format", "json", *checks)
    assert done.rc == 0, done.stderr
    probes = [c["probes"] for c in json.loads(done.stdout)["checks"]]
    assert probes == ["readiness", "liveness", "readiness", "liveness", None]
    text = run_cli("--dry-run", "vllm", "gate").stdout
    assert "vllm (defaults); timeout 5s; runs in the torchprobe process; readiness" in text
    assert "declared by the plugin when it loads" in text
