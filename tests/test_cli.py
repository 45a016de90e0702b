"""The command as a user meets it: exit codes, errors, formats, environment."""

from __future__ import annotations

import json
import os

import pytest
from conftest import clean_env, run_cli
from servers import http_server, reply

pytestmark = pytest.mark.usefixtures("plugins")


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["--list"]])
def test_help_version_and_list_exit_0(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip()


def test_version_prints_the_version() -> None:
    import torchprobe

    assert run_cli("--version").stdout.strip() == f"torchprobe {torchprobe.__version__}"


def test_list_shows_builtins_and_plugins_with_options_and_defaults() -> None:
    out = run_cli("--list").stdout
    for name in ("cuda", "tensor", "nvml", "http", "tcp", "ok", "rich"):
        assert f"\n{name}  —" in "\n" + out
    assert "max-memory=" in out and "default 98" in out
    assert "items=  (integer, default 2)" in out


def test_list_shows_defaults_as_a_user_writes_them() -> None:
    """Each default in --list is a value the option accepts as written: booleans
    as ``true``/``false``, whole numbers without ``.0``, durations with a unit."""
    import re

    out = run_cli("--list").stdout
    assert "max-memory=  (number, default 98)" in out
    assert "insecure=  (true|false, default false)" in out
    assert "connect-timeout=  (duration, default 2s)" in out
    assert "by=  (number, default 0.01)" in out
    assert not re.findall(r"default (?:True|False|-?\d+\.0\b)", out)
    assert not re.findall(r"\(duration, default [\d.]+\)", out)


def test_list_json_keeps_defaults_typed() -> None:
    data = json.loads(run_cli("--list", "--format", "json").stdout)
    options = {(c["name"], o["key"]): o for c in data["checks"] for o in c["options"]}
    assert options["nvml", "max-memory"]["default"] == 98
    assert options["http", "insecure"]["default"] is False
    assert options["grpc", "connect-timeout"]["default"] == 2
    assert options["grpc", "connect-timeout"]["type"] == "duration"


def test_list_json_is_for_tools() -> None:
    data = json.loads(run_cli("--list", "--format", "json").stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["http"]["source"] == "built-in"
    assert {o["key"] for o in checks["http"]["options"]} >= {"url", "status", "header"}
    assert checks["importfail"]["error"].startswith("plugin failed to load")
    assert checks["ok"]["options"][0]["key"] == "message"
    assert {o["key"] for o in data["universal_options"]} == {"name", "timeout"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "No such option"),
        (["nosuchcheck"], "unknown check 'nosuchcheck'"),
        (["ok:bogus=1"], "check 'ok': unknown option 'bogus'"),
        (["rich:items=x"], "check 'rich': option 'items': 'x' is not an integer"),
        (["echo"], "check 'echo': option 'text' is required"),
        (["tensor:timeout=soon"], "option 'timeout'"),
        (["--timeout", "0", "ok"], "--timeout"),
        (["--timeout", "fast", "ok"], "not a duration"),
        (["--format", "xml", "ok"], "--format"),
        (["ok:message=${UNSET_VARIABLE_X}"], "environment variable 'UNSET_VARIABLE_X' is not set"),
        (["ok:name=a", "fails:name=a"], "name='a' is given to more than one check"),
        (["tcp"], "tcp"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.rc == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("torchprobe: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "flag"), [(["--list"], "--list"), (["--dry-run", "ok"], "--dry-run")]
)
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_prometheus_asked_of_an_output_that_has_none_is_one_usage_error(
    args: list[str], flag: str, how: str
) -> None:
    # These printed text instead, as if the format had been honoured.
    if how == "flag":
        result = run_cli("--format", "prometheus", *args)
    else:
        result = run_cli(*args, env=clean_env(TORCHPROBE_FORMAT="prometheus"))
    assert result.rc == 1 and result.stdout == ""
    assert result.stderr == f"torchprobe: error: {flag} supports --format text or json\n"
    assert run_cli("--format", "json", *args).rc == 0


def test_exit_0_when_nothing_failed_and_something_passed() -> None:
    assert run_cli("ok").rc == 0
    assert run_cli("ok", "fails").rc == 1


def test_all_skipped_is_not_healthy() -> None:
    result = run_cli("--format", "json", "rich:items=2,skip=true")
    data = json.loads(result.stdout)
    assert data["counts"] == {"passed": 0, "failed": 0, "skipped": 2}
    assert result.rc == 1 and data["healthy"] is False
    assert "UNHEALTHY (no check passed)" in run_cli("rich:skip=true").stdout


def test_checks_come_from_TORCHPROBE_CHECKS_split_like_a_shell() -> None:
    env = clean_env(TORCHPROBE_CHECKS="ok:message='hello world' echo:text=x")
    result = run_cli(env=env)
    assert result.rc == 0, result.stdout + result.stderr
    assert "hello world" in result.stdout and "echo" in result.stdout


def test_arguments_win_over_TORCHPROBE_CHECKS() -> None:
    env = clean_env(TORCHPROBE_CHECKS="fails")
    assert run_cli("ok", env=env).rc == 0


def test_unbalanced_quote_in_TORCHPROBE_CHECKS_is_a_usage_error() -> None:
    result = run_cli(env=clean_env(TORCHPROBE_CHECKS="ok:message='x"))
    assert result.rc == 1
    assert result.stderr.startswith("torchprobe: error: TORCHPROBE_CHECKS:")


def test_options_come_from_the_environment() -> None:
    env = clean_env(TORCHPROBE_FORMAT="json", TORCHPROBE_QUIET="1", TORCHPROBE_TIMEOUT="1")
    result = run_cli("ok", "gilhang:seconds=20", env=env)
    assert result.rc == 1
    data = json.loads(result.stdout)
    assert result.elapsed < 3
    assert data["counts"] == {"passed": 1, "failed": 1, "skipped": 0}


@pytest.mark.torch
@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this host has an NVIDIA GPU")
def test_default_set_on_a_machine_without_gpu_fails_and_says_why() -> None:
    result = run_cli(env=clean_env(), timeout=120)
    assert result.rc == 1
    assert "CPU-only build" in result.stdout
    names = [line.split()[1] for line in result.lines[:-1]]
    assert names[0] == "cuda" and names[1].startswith("tensor") and names[2].startswith("nvml")


def test_quiet_prints_only_failures_and_the_summary() -> None:
    result = run_cli("-q", "ok", "fails", "echo:text=x")
    assert [line.split()[0] for line in result.lines] == ["FAIL", "UNHEALTHY:"]


def test_verbose_shows_details_and_the_traceback() -> None:
    quiet = run_cli("fails:reason=kaput")
    verbose = run_cli("-v", "fails:reason=kaput")
    assert "Traceback" not in quiet.stdout + quiet.stderr
    assert "| Traceback (most recent call last):" in verbose.stdout
    assert "RuntimeError: kaput" in verbose.stdout
    assert "reason: kaput" in verbose.stdout


def test_json_report_has_the_documented_shape() -> None:
    result = run_cli("--format", "json", "ok", "rich:items=2,fail-item=1,name=r", "fails")
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    assert data["status"] == "unhealthy" and data["exit_code"] == 1 == result.rc
    assert data["counts"] == {"passed": 2, "failed": 2, "skipped": 0}
    rich = [c for c in data["checks"] if c["check"] == "rich"]
    assert [c["name"] for c in rich] == ["r[0]", "r[1]"]
    assert rich[1]["details"] == {"item": 1}
    assert rich[0]["options"] == {"items": "2", "fail-item": "1", "name": "r"}
    assert all(isinstance(c["duration"], float) for c in data["checks"])


def test_prometheus_output_parses_with_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    result = run_cli("--format", "prometheus", "ok", "fails", "rich:items=2,name=r")
    families = {f.name: f for f in parser.text_string_to_metric_families(result.stdout)}
    up = {s.labels["name"]: s.value for s in families["torchprobe_check_up"].samples}
    assert up == {"ok": 1, "fails": 0, "r[0]": 1, "r[1]": 1}
    assert families["torchprobe_up"].samples[0].value == 0
    assert "version" in families["torchprobe_info"].samples[0].labels
    for family in families.values():
        for sample in family.samples:
            assert "instance" not in sample.labels and "job" not in sample.labels
    assert {s.labels["check"] for s in families["torchprobe_check_duration_seconds"].samples} == {
        "ok",
        "fails",
        "rich",
    }


def test_repeated_checks_get_distinct_names() -> None:
    data = json.loads(run_cli("--format", "json", "ok", "ok", "ok:name=third").stdout)
    assert [c["name"] for c in data["checks"]] == ["ok", "ok#2", "third"]


def test_text_output_never_exceeds_4096_bytes_and_keeps_the_summary() -> None:
    many = [f"fails:reason={'x' * 3000}{i}" for i in range(60)] + ["ok"] * 20
    for flags in ([], ["-v"]):
        result = run_cli(*flags, *many, "--timeout", "30", timeout=120)
        assert result.rc == 1
        assert len(result.stdout.encode()) <= 4096
        assert result.lines[-1].startswith("UNHEALTHY: 20 passed, 60 failed")


def test_secrets_from_the_environment_never_appear_in_any_output() -> None:
    env = clean_env(SECRET_TOKEN="tok-very-secret-123")
    for fmt in ("text", "json", "prometheus"):
        result = run_cli("-v", "--format", fmt, "echo:text=${SECRET_TOKEN}",
                         "fails:reason=${SECRET_TOKEN}", env=env)  # fmt: skip
        assert "tok-very-secret-123" not in result.stdout + result.stderr
    assert "***" in run_cli("echo:text=${SECRET_TOKEN}", env=env).stdout


def test_a_secret_option_of_a_plugin_is_redacted() -> None:
    result = run_cli("--format", "json", "rich:items=1,token=hunter2hunter2")
    assert "hunter2hunter2" not in result.stdout
    assert json.loads(result.stdout)["checks"][0]["options"]["token"] == "***"


def test_stdout_carries_only_the_report_even_when_a_plugin_prints() -> None:
    result = run_cli("--format", "json", "noisy", "ok")
    data = json.loads(result.stdout)
    assert data["healthy"] is True


def test_http_check_and_help_import_neither_torch_nor_pynvml() -> None:
    with http_server(reply(200, b"ok")) as server:
        for expected_rc, args in (
            (0, ["--help"]),
            (0, [f"http:url={server.url}/"]),
            (0, ["tcp:address=" + server.address]),
            (0, [f"triton:url={server.url}/,mode=live"]),
            (1, [f"http:url={server.url}/", "status-file:path=/nonexistent", "--format", "json"]),
        ):
            result = _importtime(*args)
            assert result.rc == expected_rc, result.stdout + result.stderr
            imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                        if line.startswith("import time:")}  # fmt: skip
            heavy = {m for m in imported
                     if m.split(".")[0] in ("torch", "pynvml", "numpy", "grpc")}  # fmt: skip
            assert not heavy, heavy


def _importtime(*args: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    import time

    from conftest import Run

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "torchprobe", *args],
                          capture_output=True, text=True, env=clean_env(), timeout=60)  # fmt: skip
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def test_a_plugins_repeatable_option_is_repeated() -> None:
    result = run_cli("--format", "json", "rich:tag=a,tag=b,items=1")
    assert result.rc == 0, result.stderr
    check = json.loads(result.stdout)["checks"][0]
    assert check["message"] == "item 0 [a, b]"
    assert check["options"]["tag"] == ["a", "b"]
