"""Hostile and mistaken input through the installed command: a misspelt option,
odd bytes, absurd durations, a binary config. Each is one line on stderr
naming the mistake and exit 1, before anything runs: never a pass, never a
traceback, never "internal error"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Run, clean_env, run_cli, script
from docs_text import documentation
from servers import http_server, reply

#: Every case here ends before a check starts; this bounds "at once" for a
#: loaded machine (an interpreter start and the command's imports).
QUICK = 10.0


def assert_usage_error(run: Run, *needles: str) -> str:
    assert run.rc == 1, run
    assert run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith("torchprobe: error: "), line
    assert "internal error" not in line and "Traceback" not in run.stderr
    for needle in needles:
        assert needle in line, line
    assert run.elapsed < QUICK
    return line


def run_bytes(*args: bytes, env: dict[str, str] | None = None) -> Run:
    """The command with argv as raw bytes (not necessarily UTF-8)."""
    done = subprocess.run(
        [os.fsencode(script()), *args], capture_output=True, timeout=60,
        env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Run(done.returncode, done.stdout.decode(errors="replace"),
               done.stderr.decode(errors="replace"), 0.0)  # fmt: skip


@pytest.fixture(scope="module")
def sick() -> object:
    """A server whose body says it is sick: a check with contains= must fail."""
    with http_server(reply(200, b"Sick")) as server:
        yield server


@pytest.mark.parametrize(
    ("option", "typo", "suggestion"),
    [("contains=Healthy", "contians=Healthy", "contains"), ("status=500", "stauts=500", "status")],
)
def test_a_misspelt_option_after_a_url_is_an_error_not_part_of_the_url(
    sick: object, option: str, typo: str, suggestion: str
) -> None:
    url = f"{sick.url}/ping?v=1"  # type: ignore[attr-defined]
    correct = run_cli(f"http:url={url},{option}")
    assert correct.rc == 1 and "FAIL  http" in correct.stdout  # the check itself fails
    asked = len(sick.requests)  # type: ignore[attr-defined]
    line = assert_usage_error(run_cli(f"http:url={url},{typo}"))
    key = typo.partition("=")[0]
    assert line == (
        f"torchprobe: error: check 'http': unknown option {key!r} "
        f"(did you mean {suggestion!r}?); write \\, for a literal comma"
    )
    assert len(sick.requests) == asked  # type: ignore[attr-defined]  # nothing ran


def test_a_misspelt_preset_option_does_not_become_part_of_the_model_name() -> None:
    line = assert_usage_error(run_cli("torchserve:model=tiny,infre=[1,2]"))
    assert "check 'torchserve': unknown option 'infre'" in line


def test_a_literal_comma_before_a_word_is_written_with_a_backslash(sick: object) -> None:
    url = f"{sick.url}/ping?a=1\\,b=2"  # type: ignore[attr-defined]
    run = run_cli(f"http:url={url},contains=Sick", "--format", "json")
    assert run.rc == 0, run
    assert sick.requests[-1].target == "/ping?a=1,b=2"  # type: ignore[attr-defined]


def test_json_lists_and_label_matchers_need_no_escaping() -> None:
    body = b'{"a":1,"b":[1,2,3,4]} m{model="x",version="1"}'
    with http_server(reply(200, body)) as server:
        for needle in ('{"a":1,"b":[1,2,3,4]}', 'm{model="x",version="1"}'):
            run = run_cli(f"http:url={server.url}/,contains={needle},status=200")
            assert run.rc == 0, run
        missing = run_cli(f'http:url={server.url}/,contains={{"a":1,"b":2}},status=200')
        assert missing.rc == 1 and "FAIL  http" in missing.stdout


def test_a_json_string_with_escaped_backslashes_needs_no_escaping() -> None:
    # JSON writes a backslash as \\: one that ends a string, or stands before
    # a comma, is still JSON's own escape, never the option syntax's.
    needle = json.dumps({"path": "C:\\data\\", "n": "a\\,b"}, separators=(",", ":"))
    with http_server(reply(200, needle.encode())) as server:
        run = run_cli(f"http:url={server.url}/,contains={needle},status=200", "--format", "json")
    assert run.rc == 0, run
    assert json.loads(run.stdout)["checks"][0]["options"]["contains"] == needle


def test_an_unclosed_bracket_that_hides_an_option_is_named() -> None:
    line = assert_usage_error(run_cli("http:url=http://127.0.0.1:1/?q=[x,contains=ok"))
    assert "'[' in option 'url' is never closed" in line and "',contains='" in line


def test_a_plugin_before_its_code_is_loaded_still_refuses_a_misspelt_key() -> None:
    # "ok" is a test plugin: planned here with no options known, checked in its worker.
    run = run_cli("ok:message=hi,bogus=1")
    assert run.rc == 1
    assert "unknown option 'bogus'" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


HUGE = "9" * 400


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", HUGE, "tcp:address=127.0.0.1:1"],
        [f"tcp:address=127.0.0.1:1,timeout={HUGE}"],
        [f"status-file:max-age={HUGE}s"],
        ["--wait", HUGE, "tcp:address=127.0.0.1:1"],
    ],
)
def test_a_400_digit_duration_is_a_usage_error(args: list[str]) -> None:
    line = assert_usage_error(run_cli(*args), "a duration is at most 86400s")
    assert HUGE not in line  # the message stays one short line


def test_a_huge_bad_value_gives_a_short_message() -> None:
    line = assert_usage_error(run_cli("http:url=" + "()" * 60000))
    assert line.startswith("torchprobe: error: check 'http': option 'url': ")
    assert len(line) < 500 and line.endswith(" characters)")


def test_a_duration_in_exponent_form_is_a_usage_error() -> None:
    assert_usage_error(run_cli("--timeout", "1e400", "tcp:address=127.0.0.1:1"), "not a duration")


def test_a_binary_config_file_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "torchprobe.toml"
    config.write_bytes(b"\xff\xfe\x00[profiles.x]\x00\x80")
    for args in (["--profile", "x"], ["--dry-run"]):
        line = assert_usage_error(run_cli("--config", str(config), *args))
        assert line.endswith("invalid TOML: not UTF-8 text (byte 1 is 0xff)")


@pytest.mark.parametrize(
    ("argument", "where"),
    [
        (b"tcp:address=\xff:1", "check 'tcp': option 'address'"),
        (b"http:url=http://127.0.0.1:1/\xfe", "check 'http': option 'url'"),
        (b"status-file:path=/tmp/\xc3", "check 'status-file': option 'path'"),
        (b"tensor:device=\xff", "check 'tensor': option 'device'"),
        (b"vllm:model=\x80", "check 'vllm': option 'model'"),
    ],
)
def test_bytes_that_are_not_utf8_in_argv_are_a_usage_error(argument: bytes, where: str) -> None:
    run = run_bytes(argument)
    assert run.rc == 1
    assert run.stdout == ""
    assert run.stderr.startswith(f"torchprobe: error: {where}: not UTF-8 text (byte 0x")
    assert run.stderr.count("\n") == 1


def test_a_non_utf8_check_name_is_a_usage_error() -> None:
    run = run_bytes(b"\xff")
    assert run.rc == 1 and run.stderr.startswith("torchprobe: error: ")
    assert run.stderr.count("\n") == 1


def test_a_non_utf8_environment_value_is_a_usage_error_that_shows_no_value() -> None:
    env = {**{k: v for k, v in os.environb.items() if not k.startswith(b"TORCHPROBE_")},
           b"PW": b"s3cr\xffet"}  # fmt: skip
    done = subprocess.run([os.fsencode(script()), b"tcp:address=${PW}"], capture_output=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        b"torchprobe: error: check 'tcp': option 'address': not UTF-8 text "
        b"(byte 0xff at character 5)\n"
    )


def test_a_closed_stdin_changes_nothing() -> None:
    done = subprocess.run([str(script()), "tcp:address=127.0.0.1:1"], capture_output=True,
                          text=True, env=clean_env(), stdin=subprocess.DEVNULL, timeout=60,
                          preexec_fn=lambda: os.close(0))  # fmt: skip
    assert done.returncode == 1
    assert "FAIL  tcp" in done.stdout and done.stderr == ""


def imports_of(*args: str) -> set[str]:
    """The modules the command imports for these arguments (python -X importtime)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "torchprobe", *args],
        capture_output=True, text=True, env=clean_env(), timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "torchprobe.cli.command" in imported  # the measurement saw the command's imports
    return imported


HEAVY = {"torch", "pynvml", "grpc", "prometheus_client"}


@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ("gpu", "'gpu' is not a torch device type (did you mean 'cuda'?)"),
        ("cpu|nonsense", "'nonsense' is not a torch device type"),
        ("cuda:01", "TYPE or TYPE:N, N a number without leading zeros"),
        ("cuda:128", "torch device indexes go up to 127"),
    ],
)
def test_a_bad_tensor_device_is_refused_before_torch_is_imported(device: str, needle: str) -> None:
    run = run_cli(f"tensor:device={device}")
    assert_usage_error(run, "check 'tensor': option 'device'", needle)
    assert not imports_of(f"tensor:device={device}") & HEAVY


@pytest.mark.parametrize(
    ("argument", "needle"),
    [
        ("nvml:device=x", "check 'nvml': option 'device'"),
        ("cuda:min-devices=-1", "check 'cuda': option 'min-devices'"),
        ("cuda:backend=cudart", "check 'cuda': option 'backend'"),
        ("grpc:address=127.0.0.1:1,ca-file=/x", "check 'grpc': ca-file= needs tls=true"),
        ("status-file:mode=bogus", "check 'status-file': option 'mode'"),
    ],
)
def test_every_built_in_option_is_refused_before_a_heavy_import(argument: str, needle: str) -> None:
    assert_usage_error(run_cli(argument), needle)
    assert not imports_of(argument) & HEAVY


def test_the_readmes_option_syntax_examples_are_valid() -> None:
    """The examples of the CHECK syntax section (docs/cli.md), wherever it lives."""
    text = documentation()
    heading = re.search(r"^#+ Checks and their options$", text, re.M)
    assert heading, "no 'Checks and their options' section in README.md or docs/"
    section = text[heading.start() : text.index("**Which checks run**", heading.start())]
    spans = [s.strip("'") for s in re.findall(r"`([^`\n]+)`", section)]
    whole = list(
        dict.fromkeys(s for s in spans if re.match(r"(http|tensor):\w+=", s) and "..." not in s)
    )
    options = list(
        dict.fromkeys(s for s in spans if re.fullmatch(r"(url|contains|status|header)=.+", s))
    )
    # As many distinct examples as the section held when it moved out of the README.
    assert len(whole) >= 2 and len(options) >= 8, (whole, options)
    tokens = [*whole, *(f"http:url=http://127.0.0.1:1/,{o}" for o in options if o[:4] != "url=")]
    tokens += [f"http:{o}" for o in options if o.startswith("url=")]
    run = run_cli("--dry-run", "--format", "json", *tokens)
    assert run.rc == 0, run.stderr
    assert len(json.loads(run.stdout)["checks"]) == len(tokens)
