"""Profiles under stress, through the installed command: includes that double
at every level, cycles, errors that must name the right line, and what
--dry-run validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Run, run_cli

pytestmark = pytest.mark.usefixtures("plugins")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "torchprobe.toml"
    path.write_text(text)
    return path


def one_error(run: Run) -> str:
    assert run.rc == 1 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("torchprobe: error: "), run.stderr
    return run.stderr.strip()


def test_an_include_that_doubles_at_every_level_is_expanded_once(tmp_path: Path) -> None:
    # 40 levels, each including the next twice: 2**40 expansions if each
    # include were expanded where it appears.
    levels = 40
    tables = [f'[profiles.p{i}]\ninclude = ["p{i + 1}", "p{i + 1}"]\n' for i in range(levels)]
    tables.append(f'[profiles.p{levels}]\nchecks = ["ok:message=deep"]\n')
    config = write(tmp_path, "\n".join(tables))
    planned = run_cli("--config", str(config), "--profile", "p0", "--dry-run", "--format", "json")
    assert planned.rc == 0, planned.stderr
    assert [c["check"] for c in json.loads(planned.stdout)["checks"]] == ["ok"]
    ran = run_cli("--config", str(config), "--profile", "p0")
    assert ran.rc == 0 and ran.stdout.count("PASS  ok") == 1, ran


def test_a_profile_reached_through_two_paths_runs_its_checks_once(tmp_path: Path) -> None:
    config = write(tmp_path, """\
[profiles.top]
include = ["left", "right"]
checks = ["ok:message=top,name=top"]

[profiles.left]
include = ["shared"]
checks = ["ok:message=left,name=left"]

[profiles.right]
include = ["shared", "left"]
checks = ["ok:message=right,name=right"]

[profiles.shared]
checks = ["ok:message=shared,name=shared"]
""")  # fmt: skip
    run = run_cli("--config", str(config), "--profile", "top", "--dry-run", "--format", "json")
    assert run.rc == 0, run.stderr
    assert [c["name"] for c in json.loads(run.stdout)["checks"]] == [
        "shared", "left", "right", "top"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("chosen", "chain"),
    [("a", "a -> b -> a"), ("entry", "a -> b -> a"), ("self", "self -> self")],
)
def test_a_cycle_of_includes_is_named(tmp_path: Path, chosen: str, chain: str) -> None:
    config = write(tmp_path, """\
[profiles.entry]
include = ["a"]

[profiles.a]
include = ["b"]
checks = ["ok"]

[profiles.b]
include = ["a"]
checks = ["ok"]

[profiles.self]
include = ["self"]
checks = ["ok"]
""")  # fmt: skip
    line = one_error(run_cli("--config", str(config), "--profile", chosen))
    profile = chain.split(" ", 1)[0]
    assert line.endswith(f"profile {profile!r} includes itself: {chain}"), line


CONFIG_WITH_TWINS = """\
# The same keys in several profiles: an error must point at the right one.
[profiles.first]
timeout = "2s"
checks = [
    "http:url=http://127.0.0.1:1/",
    "tcp:address=127.0.0.1:1",
]

[profiles."second"]
timeout = "3s"  # fine
format = "json"
checks = [
    "http:url=http://127.0.0.1:1/",  # fine
    { check = "tcp", address = "127.0.0.1:1" }, "tcp:address=127.0.0.1:2",
    'http:url=http://127.0.0.1:1/,stauts=200',
    { check = "http", url = "http://127.0.0.1:1/", status = "2xx", contians = "ok" },
]

[profiles.third]
checks = ["tcp:address=127.0.0.1:1"]
timeout = "never"
"""


@pytest.mark.parametrize(
    ("profile", "needle"),
    [
        ("second", "profiles.second.checks[3] (line 15): check 'http': unknown option 'stauts'"),
        ("third", "profiles.third.timeout (line 21): 'never' is not a duration"),
    ],
)
def test_a_profile_error_names_the_line_it_is_on(tmp_path: Path, profile: str, needle: str) -> None:
    config = write(tmp_path, CONFIG_WITH_TWINS)
    line = one_error(run_cli("--config", str(config), "--profile", profile))
    assert f"{config}: {needle}" in line, line


def test_an_inline_table_error_names_its_line(tmp_path: Path) -> None:
    text = CONFIG_WITH_TWINS.replace("    'http:url=http://127.0.0.1:1/,stauts=200',\n", "")
    config = write(tmp_path, text)
    line = one_error(run_cli("--config", str(config), "--profile", "second"))
    assert "profiles.second.checks[3] (line 15): check 'http': unknown option 'contians'" in line


BROKEN_ELSEWHERE = """\
[profiles.ready]
include = ["base"]
checks = ["ok:message=ready"]

[profiles.base]
checks = ["ok:message=base"]

[profiles.broken]
checks = ["htp:url=http://127.0.0.1:1/"]
"""


def test_dry_run_of_a_profile_validates_what_the_run_uses_and_nothing_else(tmp_path: Path) -> None:
    config = write(tmp_path, BROKEN_ELSEWHERE)
    ran = run_cli("--config", str(config), "--profile", "ready")
    assert ran.rc == 0, ran  # a real run ignores the broken profile...
    planned = run_cli("--config", str(config), "--profile", "ready", "--dry-run")
    assert planned.rc == 0, planned.stderr  # ...and so does its dry run
    assert "ok: ok message=base" in planned.stdout and "ok#2: ok message=ready" in planned.stdout
    broken = one_error(run_cli("--config", str(config), "--profile", "broken", "--dry-run"))
    assert "profiles.broken.checks[0] (line 9): unknown check 'htp'" in broken


def test_dry_run_of_a_profile_still_validates_its_includes(tmp_path: Path) -> None:
    broken_base = 'checks = ["tcp:adress=127.0.0.1:1"]'
    text = BROKEN_ELSEWHERE.replace('checks = ["ok:message=base"]', broken_base)
    config = write(tmp_path, text)
    for args in (["--dry-run"], []):
        line = one_error(run_cli("--config", str(config), "--profile", "ready", *args))
        assert "profiles.base.checks[0] (line 6): " in line, line


def test_dry_run_of_a_prometheus_profile_names_its_format(tmp_path: Path) -> None:
    # The profile's format is the run's: the dry run says so rather than refuse.
    config = write(tmp_path, '[profiles.m]\nchecks = ["ok"]\nformat = "prometheus"\n')
    planned = run_cli("--config", str(config), "--profile", "m", "--dry-run")
    assert planned.rc == 0, planned.stderr
    assert planned.stdout.startswith("checks from profile 'm'")
    assert "; format prometheus\n" in planned.stdout
    ran = run_cli("--config", str(config), "--profile", "m")
    assert ran.rc == 0 and "torchprobe_up 1" in ran.stdout


def test_dry_run_without_a_profile_lints_the_whole_file(tmp_path: Path) -> None:
    config = write(tmp_path, BROKEN_ELSEWHERE)
    line = one_error(run_cli("--config", str(config), "--dry-run", "ok"))
    assert "profiles.broken.checks[0] (line 9): unknown check 'htp'" in line


def test_inline_table_values_are_taken_as_written(tmp_path: Path) -> None:
    config = write(tmp_path, """\
[profiles.x]
checks = [
  { check = "http", url = "http://127.0.0.1:1/q?a=1,b=[2,c=3", contains = 'say "x,y=1' },
]
""")  # fmt: skip
    run = run_cli("--config", str(config), "--profile", "x", "--dry-run", "--format", "json")
    assert run.rc == 0, run.stderr
    options = json.loads(run.stdout)["checks"][0]["options"]
    assert options == {"url": "http://127.0.0.1:1/q?a=1,b=[2,c=3", "contains": 'say "x,y=1'}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("# x marks the spot\n[profiles.a]\nchecks = ['ok']\n\n[x]\ny = 1\n", "key 'x' (line 5)"),
        ("# the x\nx = 1\n", "unknown key 'x' (line 2)"),
        ("[profiles]\n# a = 1 would be wrong\na = 1\n", "profiles.a must be a table (line 3)"),
        ('[profiles.b]\nchecks = ["ok"]\n\n[profiles.a]\nchecks = ["ok"]\ntimout = 1\n',
         "profiles.a.timout (line 6): unknown key"),
    ],
)  # fmt: skip
def test_file_level_errors_name_the_line_not_the_first_mention(
    tmp_path: Path, text: str, needle: str
) -> None:
    config = write(tmp_path, text)
    line = one_error(run_cli("--config", str(config), "--profile", "a"))
    assert needle in line, line
