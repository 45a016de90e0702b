"""Profiles, --dry-run, --wait, --log and --prometheus-textfile, through the
installed command."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import clean_env, run_cli

pytestmark = pytest.mark.usefixtures("plugins")

CONFIG = """\
[profiles.base]
checks = ["ok:message=from base"]
timeout = "3s"

[profiles.ready]
include = ["base"]
checks = [
  'echo:text=a\\,b',
  { check = "http", url = "http://127.0.0.1:1/x,y", header = ["A: 1", "B: ${SECRET}"] },
]
format = "json"

[profiles.live]
checks = ["ok:message=user live"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "torchprobe.toml"
    path.write_text(CONFIG)
    return path


def test_built_in_profiles_work_without_a_config_file(tmp_path: Path) -> None:
    result = run_cli("--profile", "live", "--dry-run", "--format", "json",
                     env=clean_env(TORCHPROBE_CONFIG=""))  # fmt: skip
    assert result.rc == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [c["check"] for c in plan["checks"]] == ["nvml", "status-file"]
    assert plan["source"] == "profile 'live' (built-in)"
    startup = json.loads(run_cli("--profile", "startup", "--dry-run", "--format", "json").stdout)
    assert [c["check"] for c in startup["checks"]] == ["cuda", "tensor", "nvml"]
    assert startup["timeout"] == 60.0


def test_a_profile_from_the_file_with_include_inline_tables_and_settings(config: Path) -> None:
    env = clean_env(SECRET="hunter2hunter2")
    result = run_cli("--config", str(config), "--profile", "ready", env=env)
    data = json.loads(result.stdout)  # the profile's format
    assert [c["name"] for c in data["checks"]] == ["ok", "echo", "http"]
    assert data["checks"][0]["message"] == "from base"
    assert data["checks"][1]["message"] == "a,b"
    assert data["checks"][2]["options"]["header"] == ["A: ***", "***"]  # ${VAR}: all of it
    assert "hunter2hunter2" not in result.stdout + result.stderr
    assert data["checks"][2]["options"]["url"] == "http://127.0.0.1:1/x,y"


def test_a_users_profile_replaces_the_built_in_one_of_the_same_name(config: Path) -> None:
    result = run_cli("--profile", "live", env=clean_env(TORCHPROBE_CONFIG=str(config)))
    assert result.rc == 0 and "user live" in result.stdout


def test_the_config_file_is_found_in_the_working_directory(config: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import script

    done = subprocess.run([str(script()), "--profile", "live"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "user live" in done.stdout, done.stdout + done.stderr
    assert sys.executable


def test_a_stray_config_file_never_changes_a_plain_run(config: Path, tmp_path: Path) -> None:
    import subprocess

    from conftest import script

    config.write_text("this is not TOML [[[")
    done = subprocess.run([str(script()), "ok"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_single_values_flag_beats_environment_beats_profile(config: Path) -> None:
    env = clean_env(TORCHPROBE_CONFIG=str(config), SECRET="s3cr3t-value")
    assert json.loads(run_cli("--profile", "ready", "--dry-run", env=env).stdout)["timeout"] == 3
    env["TORCHPROBE_TIMEOUT"] = "7"
    assert json.loads(run_cli("--profile", "ready", "--dry-run", env=env).stdout)["timeout"] == 7
    result = run_cli("--profile", "ready", "--dry-run", "--timeout", "9", "--format", "text",
                     env=env)  # fmt: skip
    assert "run timeout 9s; format text" in result.stdout


def test_checks_come_from_one_source_never_a_merge(config: Path) -> None:
    env = clean_env(TORCHPROBE_CONFIG=str(config), TORCHPROBE_CHECKS="fails")
    # An image's TORCHPROBE_CHECKS cannot change --profile.
    assert "user live" in run_cli("--profile", "live", env=env).stdout
    both = run_cli("--profile", "live", "ok", env=env)
    assert both.rc == 1 and "two sources of checks" in both.stderr
    # TORCHPROBE_PROFILE yields to CHECK arguments, and wins over TORCHPROBE_CHECKS.
    env["TORCHPROBE_PROFILE"] = "live"
    assert run_cli("echo:text=args", env=env).stdout.startswith("PASS  echo  args")
    assert "user live" in run_cli(env=env).stdout


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[profiles.x]\nchecks = ["htp"]\n', "profiles.x.checks[0] (line 2): unknown check 'htp'"),
        ('[profiles.x]\nchecks = ["ok"]\ntimout = 3\n', "profiles.x.timout (line 3): unknown key"),
        ('[profiles.x]\nchecks = "ok"\n', "profiles.x.checks (line 2): must be a list"),
        ('[profiles.x]\nchecks = ["ok"]\ntimeout = "soon"\n', "profiles.x.timeout (line 3)"),
        ('[profiles.x]\nchecks = [{url = "u"}]\n', 'needs check = "NAME"'),
        ("x = 1\n", "unknown key 'x' (line 1)"),
        ("[profiles.x\n", "invalid TOML"),
        ('[profiles.x]\ninclude = ["x"]\nchecks = ["ok"]\n', "includes itself"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line_naming_file_key_and_line(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("--config", str(path), "--profile", "x")
    assert result.rc == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr
    assert needle in result.stderr, result.stderr


def test_a_missing_config_named_explicitly_is_an_error(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "none.toml"), "--profile", "live")
    assert result.rc == 1 and "does not exist" in result.stderr
    result = run_cli("--profile", "live", env=clean_env(TORCHPROBE_CONFIG="/no/such.toml"))
    assert result.rc == 1 and "TORCHPROBE_CONFIG" in result.stderr


def _listen_later(port_holder: list[int], delay: float) -> threading.Thread:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port_holder.append(probe.getsockname()[1])
    probe.close()

    def serve() -> None:
        time.sleep(delay)
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port_holder[0]))
            server.listen()
            time.sleep(3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_wait_keeps_trying_quietly_until_the_service_is_up() -> None:
    port: list[int] = []
    _listen_later(port, 1.5)
    result = run_cli("--wait", "20s", f"tcp:address=127.0.0.1:{port[0]}")
    assert result.rc == 0, result.stdout
    assert len(result.lines) == 2 and result.lines[0].startswith("PASS  tcp")
    assert "after" in result.lines[-1] and "rounds" in result.lines[-1]
    assert result.elapsed < 10


def test_wait_gives_up_on_time_with_the_last_rounds_report() -> None:
    result = run_cli("--wait", "2s", "--timeout", "1", "--format", "json", "fails")
    data = json.loads(result.stdout)
    assert result.rc == 1 and data["rounds"] >= 2
    assert 1.5 < result.elapsed < 3.0


def test_wait_never_overruns_even_when_a_check_hangs() -> None:
    result = run_cli("--wait", "3s", "--timeout", "2", "gilhang:seconds=60")
    assert result.rc == 1 and result.elapsed < 3.6, result.elapsed


def test_wait_names_the_budget_that_ran_out() -> None:
    # --wait 2s with a 5 s round: the wait's end, not the round's, is the deadline.
    result = run_cli("--wait", "2s", "--timeout", "5", "gilhang:seconds=60", "importhang")
    assert result.rc == 1 and result.elapsed < 3.6, result.elapsed
    assert "FAIL  gilhang     timed out: the --wait time (2s) ran out " in result.stdout
    assert "FAIL  importhang  not finished: the --wait time (2s) ran out while" in result.stdout
    assert "the run's deadline" not in result.stdout
    # Without --wait, the run's own deadline.
    plain = run_cli("--timeout", "1", "gilhang:seconds=60")
    assert "timed out: the run's deadline (1s) passed" in plain.stdout


def test_wait_stops_at_once_on_a_usage_error() -> None:
    result = run_cli("--wait", "30s", "nosuch")
    assert result.rc == 1 and result.elapsed < 5 and "unknown check" in result.stderr


def test_log_appends_one_json_line_per_run_and_rotates(tmp_path: Path) -> None:
    log = tmp_path / "probe.log"
    for _ in range(3):
        run_cli("--log", str(log), "ok", "fails")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["status"] == "unhealthy"
    assert [c["status"] for c in lines[0]["checks"]] == ["pass", "fail"]
    log.write_bytes(b"x" * (1024 * 1024))  # full: the next run rotates
    run_cli("--log", str(log), "ok")
    assert (tmp_path / "probe.log.1").stat().st_size == 1024 * 1024
    assert json.loads(log.read_text())["status"] == "healthy"


def test_overlapping_runs_lose_no_log_line(tmp_path: Path) -> None:
    import concurrent.futures

    log = tmp_path / "probe.log"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: run_cli("--log", str(log), "ok"), range(12)))
    assert len(log.read_text().splitlines()) == 12


def test_prometheus_textfile_is_written_besides_the_chosen_output(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    path = tmp_path / "torchprobe.prom"
    result = run_cli("--prometheus-textfile", str(path), "ok", "fails")
    assert result.lines[0].startswith("PASS  ok")  # the text report as usual
    families = {f.name: f for f in parser.text_string_to_metric_families(path.read_text())}
    assert families["torchprobe_up"].samples[0].value == 0
    assert [p.name for p in tmp_path.iterdir()] == ["torchprobe.prom"]


@pytest.mark.parametrize("flag", ["--log", "--prometheus-textfile"])
def test_a_write_failure_never_changes_a_passing_runs_verdict(flag: str, tmp_path: Path) -> None:
    result = run_cli(flag, str(tmp_path / "missing" / "file"), "ok")
    assert result.rc == 0
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr
    assert os.path.exists(tmp_path) and not (tmp_path / "missing").exists()
