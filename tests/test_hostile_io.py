"""Files that would hang a run or be written through: a lock held by another
process, FIFOs, symbolic links, devices and oversized files, wherever
torchprobe reads or writes one — through the installed command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Run, clean_env, run_cli
from servers import http_server, reply

#: Every run here must end within its --timeout plus this.
SLACK = 1.0


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that accepts: `tcp` passes on it, in the torchprobe process."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def probe(port: int, *args: str, timeout: float = 2, env: dict[str, str] | None = None) -> Run:
    result = run_cli("--timeout", str(timeout), *args, f"tcp:host=127.0.0.1,port={port}",
                     env=env)  # fmt: skip
    assert result.elapsed < timeout + SLACK, result
    assert "Traceback" not in result.stderr and result.rc in (0, 1), result
    return result


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Path]:
    """A log file another process holds an exclusive flock on, for a minute."""
    log = tmp_path / "probe.log"
    log.write_text("")
    code = textwrap.dedent(f"""
        import fcntl, sys, time
        fp = open({str(log)!r}, "a")
        fcntl.flock(fp, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield log
    finally:
        proc.kill()
        proc.wait()


# --- the log's lock ----------------------------------------------------------------


def test_a_log_locked_by_another_process_costs_the_line_not_the_deadline(
    holder: Path, listening: int
) -> None:
    result = probe(listening, "--log", str(holder))
    assert result.rc == 0, "the verdict stands"
    assert result.lines[0].startswith("PASS  tcp")
    assert result.stderr == (f"torchprobe: cannot write the log {holder}: locked by another run "
                             "past this run's deadline; this run's line is skipped\n")  # fmt: skip
    assert holder.read_text() == ""


def test_a_failing_run_with_a_locked_log_still_fails_in_time(holder: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = probe(port, "--log", str(holder), timeout=1.5)
    assert result.rc == 1 and "locked by another run" in result.stderr


def test_a_log_freed_within_the_deadline_gets_its_line(tmp_path: Path, listening: int) -> None:
    log = tmp_path / "probe.log"
    code = textwrap.dedent(f"""
        import fcntl, time
        fp = open({str(log)!r}, "a")
        fcntl.flock(fp, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(0.5)
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as held:
        assert held.stdout is not None and held.stdout.readline() == "locked\n"
        result = probe(listening, "--log", str(log), timeout=5)
    assert (result.rc, result.stderr) == (0, "")
    assert json.loads(log.read_text())["status"] == "healthy"


# --- files torchprobe writes: never a FIFO, never through a link ------------------


@pytest.mark.parametrize("flag", ["--log", "--prometheus-textfile"])
def test_a_fifo_with_no_reader_is_refused_at_once(
    flag: str, tmp_path: Path, listening: int
) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    result = probe(listening, flag, str(fifo))
    assert result.rc == 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith(f"{fifo}: not a regular file (a FIFO)\n"), result.stderr


def test_a_fifo_log_with_a_reader_is_refused_not_written(tmp_path: Path, listening: int) -> None:
    fifo = tmp_path / "probe.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = probe(listening, "--log", str(fifo))
        assert result.rc == 0 and "not a regular file (a FIFO)" in result.stderr
        # Written data would wait in the pipe; with no writer left, empty is EOF.
        assert os.read(reader, 100) == b""
    finally:
        os.close(reader)


@pytest.mark.parametrize("flag", ["--log", "--prometheus-textfile"])
def test_a_symbolic_link_is_never_written_through(
    flag: str, tmp_path: Path, listening: int
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "out"
    link.symlink_to(victim)
    result = probe(listening, flag, str(link))
    assert result.rc == 0
    assert result.stderr.endswith(f"{link}: not a regular file (a symbolic link)\n")
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim"]  # no temporary left


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    # The atomic writer's temporary is "<file>.<pid>.tmp"; the monitor's
    # process knows its own PID, so the link is planted exactly there.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    code = textwrap.dedent(f"""
        import json, os, time
        from torchprobe.monitor import Monitor
        final = os.path.join({str(tmp_path)!r}, f"{{os.getpid()}}.json")
        os.symlink({str(victim)!r}, f"{{final}}.{{os.getpid()}}.tmp")
        Monitor([], interval=0.1, status_dir={str(tmp_path)!r}).start()
        for _ in range(100):
            time.sleep(0.05)
            if os.path.exists(final):
                break
        with open(final) as fp:
            print(json.load(fp)["pid"] == os.getpid(), os.path.islink(final))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=clean_env())  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "True False\n"), done.stderr
    assert victim.read_text() == "precious\n"


def test_the_restart_state_as_a_fifo_is_a_note_not_a_hang(tmp_path: Path) -> None:
    target = subprocess.Popen(["sleep", "60"])
    try:
        os.mkfifo(tmp_path / f"restart-{target.pid}.state")
        env = clean_env(TORCHPROBE_STATE_DIR=str(tmp_path))
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        result = probe(port, "--restart-after", "1", "--restart-pid", str(target.pid), env=env)
        assert result.rc == 1
        assert "torchprobe: restart: cannot keep count in" in result.stderr
        assert "not a regular file (a FIFO); this run not counted" in result.stderr
        assert target.poll() is None, "never signalled on a count it could not keep"
    finally:
        target.kill()
        target.wait()


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_the_progress_state_as_a_fifo_or_a_link_fails_the_check_in_time(
    kind: str, tmp_path: Path
) -> None:
    metrics = b"# TYPE queue gauge\nqueue 1\n# TYPE done_total counter\ndone_total 5\n"
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    env = clean_env(TORCHPROBE_STATE_DIR=str(state))
    with http_server(reply(200, metrics)) as server:
        check = f"progress:url={server.url}/metrics,pending=queue,done=done_total,stall=1m"
        first = run_cli("--timeout", "2", check, env=env)
        assert first.rc == 0 and "first reading" in first.stdout, first
        (path,) = state.iterdir()  # progress-<hash>.state, kept between runs
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(victim)
        result = run_cli("--timeout", "2", check, env=env)
    assert result.elapsed < 2 + SLACK, result
    assert result.rc == 1 and "Traceback" not in result.stderr, result
    what = "a FIFO" if kind == "fifo" else "a symbolic link"
    assert f"cannot keep progress state in {path}: not a regular file ({what})" in result.stdout
    assert victim.read_text() == "precious\n"


def test_the_monitor_never_writes_its_status_file_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    code = textwrap.dedent(f"""
        import logging, os, time
        from torchprobe.monitor import Monitor
        logging.basicConfig(format="%(message)s")
        os.symlink({str(victim)!r}, os.path.join({str(tmp_path)!r}, f"{{os.getpid()}}.json"))
        Monitor([], interval=0.1, status_dir={str(tmp_path)!r}).start()
        time.sleep(1.5)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=clean_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cannot write the status file" in done.stderr, done.stderr
    assert "not a regular file (a symbolic link)" in done.stderr
    assert victim.read_text() == "precious\n"


# --- files torchprobe reads: links allowed, FIFOs and devices refused, capped ----


CONFIG = '[profiles.mine]\nchecks = ["tcp:host=127.0.0.1,port={port}"]\n'


def test_a_config_through_a_symbolic_link_is_read(tmp_path: Path, listening: int) -> None:
    # Kubernetes mounts a ConfigMap's keys as links into a hidden directory.
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "torchprobe.toml").write_text(CONFIG.format(port=listening))
    (tmp_path / "torchprobe.toml").symlink_to(tmp_path / "..data" / "torchprobe.toml")
    result = run_cli("--timeout", "2", "--profile", "mine", "--config",
                     str(tmp_path / "torchprobe.toml"))  # fmt: skip
    assert (result.rc, result.stderr) == (0, ""), result
    assert result.lines[0].startswith("PASS  tcp")


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_config_that_is_not_a_regular_file_is_one_line_at_once(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "torchprobe.toml"
    if kind == "fifo":
        os.mkfifo(path)
        what = "a FIFO"
    elif kind == "device":
        path = Path("/dev/zero")
        what = "a character device"
    else:
        path.mkdir()
        what = "a directory"
    result = run_cli("--timeout", "2", "--profile", "mine", "--config", str(path))
    assert result.elapsed < 2 + SLACK
    assert result.rc == 1
    assert result.stderr == f"torchprobe: error: {path}: cannot read: not a regular file ({what})\n"


def test_an_oversized_config_is_refused_by_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "torchprobe.toml"
    path.write_text("# padding\n" * 110_000)  # 1.1 MB of comments: valid TOML
    result = run_cli("--timeout", "2", "--profile", "mine", "--config", str(path))
    assert result.rc == 1
    assert result.stderr == (f"torchprobe: error: {path}: cannot read: larger than 1 MiB, "
                             "the most torchprobe reads of it\n")  # fmt: skip


def test_a_token_file_that_is_a_fifo_fails_the_check_in_time(tmp_path: Path) -> None:
    fifo = tmp_path / "key_file.json"
    os.mkfifo(fifo)
    result = run_cli("--timeout", "2", "--format", "json",
                     f"torchserve:url=http://127.0.0.1:9,token-file={fifo}")  # fmt: skip
    assert result.elapsed < 2 + SLACK
    assert result.rc == 1, result
    check = json.loads(result.stdout)["checks"][0]
    assert check["status"] == "fail"
    assert check["message"] == f"token-file {fifo}: cannot read it: not a regular file (a FIFO)"


def test_a_token_file_through_a_link_is_read(tmp_path: Path) -> None:
    # A Kubernetes Secret's keys are links too; the key read, the server is
    # then asked (and here refuses the connection), so the failure names it.
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"inference": {"key": "k1"}, "management": {"key": "k2"}}))
    link = tmp_path / "key_file.json"
    link.symlink_to(real)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = run_cli("--timeout", "2", "--format", "json",
                     f"torchserve:url=http://127.0.0.1:{port},token-file={link}")  # fmt: skip
    message = json.loads(result.stdout)["checks"][0]["message"]
    assert "token-file" not in message and "connection refused" in message, message


def test_a_status_file_that_is_a_fifo_is_reported_not_waited_for(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "123.json")
    result = run_cli("--timeout", "2", "--format", "json", "status-file",
                     env=clean_env(TORCHPROBE_STATUS_DIR=str(tmp_path)))  # fmt: skip
    assert result.elapsed < 2 + SLACK
    assert result.rc == 1
    message = json.loads(result.stdout)["checks"][0]["message"]
    assert "123.json: unreadable (not a regular file (a FIFO))" in message, message


def test_an_oversized_status_file_is_reported_by_its_cap(tmp_path: Path) -> None:
    (tmp_path / "123.json").write_text(" " * (256 * 1024 + 1))
    started = time.monotonic()
    result = run_cli("--timeout", "2", "--format", "json", "status-file",
                     env=clean_env(TORCHPROBE_STATUS_DIR=str(tmp_path)))  # fmt: skip
    assert time.monotonic() - started < 2 + SLACK
    message = json.loads(result.stdout)["checks"][0]["message"]
    assert "123.json: unreadable (larger than 256 KiB" in message, message


# --- stdout gone ------------------------------------------------------------------


def test_a_closed_stdout_is_one_line_and_exit_1_and_the_log_still_written(
    tmp_path: Path, listening: int
) -> None:
    from conftest import script

    log = tmp_path / "probe.log"
    started = time.monotonic()
    done = subprocess.run(
        ["sh", "-c", '"$0" "$@" >&-', str(script()), "--timeout", "2", "--log", str(log),
         f"tcp:host=127.0.0.1,port={listening}"],
        capture_output=True, text=True, timeout=30, env=clean_env(),
    )  # fmt: skip
    assert time.monotonic() - started < 2 + SLACK
    assert done.returncode == 1
    assert done.stderr == "torchprobe: error: stdout is closed: the report had nowhere to go\n"
    assert json.loads(log.read_text())["status"] == "healthy"  # never the log file's fd 1


def test_a_reader_gone_from_stdout_still_gets_the_log_line(tmp_path: Path, listening: int) -> None:
    from conftest import script

    log = tmp_path / "probe.log"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the report is written: EPIPE
    try:
        done = subprocess.run(
            [str(script()), "--timeout", "2", "--log", str(log),
             f"tcp:host=127.0.0.1,port={listening}"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=30, env=clean_env(),
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == "torchprobe: error: cannot write the report to stdout: Broken pipe\n"
    assert json.loads(log.read_text())["status"] == "healthy"


@pytest.mark.parametrize("flag", ["--help", "--version", "--list"])
def test_a_reader_gone_from_stdout_is_one_line_for_every_command(flag: str) -> None:
    from conftest import script

    proc = subprocess.Popen([str(script()), flag], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.count("\n") == 1 and err.startswith("torchprobe: error: ") and "pipe" in err, err


def test_a_status_file_path_that_is_a_fifo_is_refused_by_name(tmp_path: Path) -> None:
    fifo = tmp_path / "worker.json"
    os.mkfifo(fifo)
    result = run_cli("--timeout", "2", "--format", "json", f"status-file:path={fifo}")
    assert result.elapsed < 2 + SLACK
    assert result.rc == 1
    message = json.loads(result.stdout)["checks"][0]["message"]
    assert "worker.json: unreadable (not a regular file (a FIFO))" in message, message


@pytest.mark.parametrize("closed", ["<&-", "2>&-"])
def test_a_closed_stdin_or_stderr_changes_nothing(
    closed: str, tmp_path: Path, listening: int
) -> None:
    from conftest import script

    log = tmp_path / "probe.log"
    done = subprocess.run(
        ["sh", "-c", f'"$0" "$@" {closed}', str(script()), "--timeout", "2", "--log", str(log),
         f"tcp:host=127.0.0.1,port={listening}"],
        capture_output=True, text=True, timeout=30, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done
    assert done.stdout.startswith("PASS  tcp")
    assert json.loads(log.read_text())["status"] == "healthy"
