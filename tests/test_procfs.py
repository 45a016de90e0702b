"""The one reader of /proc: the stat parser takes any name a process can give
itself (spaces, parentheses, a ``)``), and the readers see real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchprobe.common import procfs
from torchprobe.common.procfs import Stat, parse_stat

#: What prctl(PR_SET_NAME) accepts is any bytes but NUL; these make it hard.
HARD = st.text(alphabet=st.sampled_from(" ()) (x)\t\n)9 Z"), max_size=16)
NAMES = st.one_of(HARD, st.text(st.characters(blacklist_characters="\0"), max_size=64))
STATES = st.sampled_from("RSDZXTtIWPK")
NUMBERS = st.integers(min_value=0, max_value=2**63 - 1)


def stat_line(pid: int, comm: str, state: str, ppid: int, start: int) -> str:
    """A line as the kernel writes it (proc(5)): 52 fields, start time the 22nd."""
    rest = [state, str(ppid)] + [str(n) for n in range(5, 22)] + [str(start)]
    rest += [str(n) for n in range(23, 53)]
    return f"{pid} ({comm}) {' '.join(rest)}\n"


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 2**22), NAMES, STATES, NUMBERS, NUMBERS)
def test_any_name_parses_to_the_fields_after_the_last_parenthesis(
    pid: int, comm: str, state: str, ppid: int, start: int
) -> None:
    parsed = parse_stat(stat_line(pid, comm, state, ppid, start))
    assert parsed == Stat(comm, state, ppid, start)
    assert parsed.ended is (state in "ZX")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_a_line_that_is_not_a_stat_line_is_none_never_an_error(line: str) -> None:
    parsed = parse_stat(line)
    assert parsed is None or isinstance(parsed, Stat)


@pytest.mark.parametrize(
    "line",
    ["", "1 (init S 0 1", "1 (x) S", "1 (x) S notanumber " + "0 " * 30, "no parenthesis " * 5],
)
def test_truncated_or_garbled_lines_are_none(line: str) -> None:
    assert parse_stat(line) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs (Linux)")
def test_a_process_named_with_spaces_and_parentheses_is_read_right() -> None:
    name = "a) b (c) )"  # 10 bytes: under TASK_COMM_LEN, so the kernel keeps it whole
    code = (
        "import ctypes, sys, time\n"
        f"ctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)\n"  # PR_SET_NAME
        "sys.stdout.write('named\\n'); sys.stdout.flush(); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"named\n"
        found = procfs.stat(child.pid)
        assert found is not None and found.comm == name
        assert found.ppid == os.getpid() and found.state in "RS" and not found.ended
        assert procfs.comm(child.pid) == name
        life = procfs.process_life(child.pid)
        assert life == f"{procfs.boot_id()}:{found.start_time}"
        assert child.pid in procfs.pids()
    finally:
        child.kill()
        child.wait()
    assert procfs.stat(child.pid) is None and procfs.process_life(child.pid) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs (Linux)")
def test_a_zombie_has_no_life() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(500):  # until it has exited; it stays a zombie until waited for
        found = procfs.stat(child.pid)
        if found is not None and found.ended:
            break
        time.sleep(0.01)
    try:
        assert procfs.process_life(child.pid) is None
    finally:
        child.wait()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs (Linux)")
def test_the_environment_is_read_whole_one_entry_each() -> None:
    big = "y" * 100_000  # beyond any 64 KiB read: the mark after it is still found
    env = dict(os.environ, TORCHPROBE_BIG=big, TORCHPROBE_MARKED="yes")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        # Between fork and exec the child's environment reads empty: wait for the exec.
        until = time.monotonic() + 30
        entries = procfs.environ(child.pid)
        while entries == [b""] and time.monotonic() < until:
            time.sleep(0.01)
            entries = procfs.environ(child.pid)
        assert entries is not None
        assert f"TORCHPROBE_BIG={big}".encode() in entries and b"TORCHPROBE_MARKED=yes" in entries
    finally:
        child.kill()
        child.wait()
    assert procfs.environ(child.pid) is None


def test_reads_are_cut_at_their_cap_and_missing_files_are_none(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 10_000)
    assert procfs.read_text(str(path), 100) == "x" * 100
    assert procfs.read_text(str(tmp_path / "missing")) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert procfs.read_text(str(fifo)) is None  # refused at once, never waited on
    assert procfs.pids(str(tmp_path / "missing")) == []
