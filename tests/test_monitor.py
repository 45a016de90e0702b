"""The in-process monitor, in this test process: its answers, its errors, its
status file. (Its view from outside, through status-file, is tested in
tests/checks/test_status_file.py with real serving processes.)"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from torchprobe.base import UsageError
from torchprobe.monitor import Monitor

pytestmark = pytest.mark.usefixtures("plugins")


class AcceleratorError(RuntimeError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.error_code = code


def wait_for(condition: Callable[[], object], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Monitor]]:
    made: list[Monitor] = []

    def factory(checks: list[str] | None = ["ok"], **kwargs: object) -> Monitor:  # noqa: B006
        kwargs.setdefault("interval", 0.2)
        kwargs.setdefault("status_dir", tmp_path / "status")
        monitor = Monitor(checks, **kwargs)  # type: ignore[arg-type]
        made.append(monitor)
        return monitor

    yield factory
    for monitor in made:
        monitor.stop()


def test_ready_only_after_the_app_says_its_model_is_loaded(make: Callable[..., Monitor]) -> None:
    m = make()
    assert m.live() and not m.ready()
    assert "monitor.loaded()" in m.ready().reasons[0]
    m.loading()
    assert m.live() and m.ready().reasons == ["model loading for 0s"]
    m.loaded()
    assert m.ready().ok and m.ready().reasons == []


def test_a_soft_load_failure_makes_it_neither_ready_nor_live(make: Callable[..., Monitor]) -> None:
    m = make()
    m.loading()
    m.load_failed(OSError("model.pt: invalid load key, '\\x00'"))
    assert not m.live() and not m.ready()
    assert m.live().reasons == [
        "model failed to load: OSError: model.pt: invalid load key, '\\x00'"
    ]


@pytest.mark.parametrize(
    "exc",
    [AcceleratorError("CUDA error: device-side assert triggered", 710),
     RuntimeError("CUDA error: an illegal memory access was encountered")],
)  # fmt: skip
def test_a_sticky_cuda_error_in_a_request_makes_the_process_not_live_for_good(
    make: Callable[..., Monitor], exc: Exception
) -> None:
    m = make()
    m.loaded()
    with pytest.raises(type(exc)), m.guard():
        raise exc
    assert not m.live() and not m.ready()
    assert m.live().reasons[0].startswith("sticky CUDA error 7")
    m.loaded()  # nothing the app says brings a poisoned context back
    assert not m.live()


@pytest.mark.parametrize(
    "exc",
    [AcceleratorError("CUDA error: out of memory", 2), RuntimeError("CUDA error: out of memory"),
     ValueError("bad input")],
)  # fmt: skip
def test_out_of_memory_and_ordinary_errors_are_not_sticky(
    make: Callable[..., Monitor], exc: Exception
) -> None:
    m = make()
    with pytest.raises(type(exc)), m.guard():
        raise exc
    assert m.live()
    assert m.record_error(exc) is False


def test_guarded_decorates_plain_and_async_functions(make: Callable[..., Monitor]) -> None:
    m = make()

    @m.guarded
    def predict(x: int) -> int:
        return x + 1

    @m.guarded
    async def apredict() -> None:
        raise AcceleratorError("CUDA error: unspecified launch failure", 719)

    assert predict(1) == 2
    with pytest.raises(AcceleratorError):
        asyncio.run(apredict())
    assert not m.live()
    assert m.state()["sticky"]["code"] == 719


def test_a_request_stuck_longer_than_max_busy_makes_it_not_live(
    make: Callable[..., Monitor],
) -> None:
    m = make(max_busy=0.3)
    lock = threading.Lock()
    lock.acquire()

    def handler() -> None:
        with m.guard(), lock:  # deadlocked on a lock, as a stuck handler is
            pass

    thread = threading.Thread(target=handler, daemon=True)
    thread.start()
    wait_for(lambda: not m.live())
    assert "a request in flight for" in m.live().reasons[0]
    assert m.state()["busy"]["in_flight"] == 1
    lock.release()
    thread.join()
    assert m.live()


def test_completed_requests_count_returns_and_raises_but_not_cancelled_ones(
    make: Callable[..., Monitor],
) -> None:
    m = make()
    with m.guard():
        busy = m.state()["busy"]
        assert (busy["in_flight"], busy["completed"]) == (1, 0)
    with pytest.raises(ValueError), m.guard():
        raise ValueError("a bad request")
    probe = m.guard()
    probe.__enter__()
    probe.cancel()  # an adapter's own endpoint, recognised once under way
    busy = m.state()["busy"]
    assert (busy["in_flight"], busy["completed"]) == (0, 2)


def test_a_blocked_event_loop_makes_it_not_live(make: Callable[..., Monitor]) -> None:
    m = make(max_busy=0.3)
    seen: list[bool] = []

    async def main() -> None:
        m.track_loop()
        await asyncio.sleep(0.6)
        # The lag shows within one tick (0.5 s) plus max-busy of the block.
        checker = threading.Thread(target=lambda: (time.sleep(1.1), seen.append(m.live().ok)))
        checker.start()
        time.sleep(1.5)  # a handler blocking the loop: nothing else can run
        checker.join()
        await asyncio.sleep(0.6)
        seen.append(m.live().ok)

    asyncio.run(main())
    assert seen == [False, True]


def test_a_failing_periodic_check_makes_it_not_live(make: Callable[..., Monitor]) -> None:
    m = make(["fails:reason=device broke"])
    wait_for(lambda: m.state()["last_round"])
    assert m.live().reasons == ["check fails failed: RuntimeError: device broke"]


def test_a_periodic_check_past_its_timeout_makes_it_not_live(make: Callable[..., Monitor]) -> None:
    m = make(["sleeps:seconds=30,timeout=300ms"])
    wait_for(lambda: not m.live(), seconds=5)
    assert m.live().reasons[0].startswith("periodic check sleeps running for")
    assert m.state()["running_since"] is not None


def test_checks_run_at_most_once_per_interval_however_often_it_is_asked(
    make: Callable[..., Monitor], tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    started = time.monotonic()
    m = make([f"counts:path={counter}"], interval=0.5)

    def runs() -> int:
        for _ in range(100):  # asked far more often than once per interval
            m.live(), m.ready(), m.state()
        return counter.read_text().count("run") if counter.exists() else 0

    deadline = started + 60
    while (counted := runs()) < 3:
        assert time.monotonic() < deadline, f"only {counted} rounds in 60 s"
    elapsed = time.monotonic() - started
    # Round k starts no earlier than k intervals after the first, which is no
    # earlier than `started`: however slow the machine, at most this many.
    assert counted <= elapsed / 0.5 + 1, (counted, elapsed)


@pytest.mark.torch
def test_the_cpu_tensor_check_runs_in_process_and_reports(make: Callable[..., Monitor]) -> None:
    m = make(None, device="cpu", interval=0.5)
    wait_for(lambda: m.state()["checks"], seconds=30)
    check = m.state()["checks"][0]
    assert check["name"] == "tensor[cpu]" and check["status"] == "pass"
    assert m.state()["gpu"] is None


def test_the_status_file_holds_the_documented_state(make: Callable[..., Monitor],
                                                    tmp_path: Path) -> None:  # fmt: skip
    m = make().start()
    m.loaded()
    path = tmp_path / "status" / f"{os.getpid()}.json"
    wait_for(lambda: path.exists() and json.loads(path.read_text())["checks"])
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["pid"] == os.getpid()
    assert doc["live"] is True and doc["ready"] is True and doc["interval"] == 0.2
    assert doc["checks"][0]["name"] == "ok" and doc["checks"][0]["status"] == "pass"
    m.stop()
    time.sleep(0.3)
    assert list(path.parent.iterdir()) == []  # a clean exit removes it, and no temporary is left


def _documented_state() -> dict[str, Any]:
    text = (Path(__file__).parent.parent / "docs" / "monitor-contract.md").read_text()
    block = text.split("State / status file", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    document: dict[str, Any] = json.loads(block)
    return document


def _keys_agree(typed: Any, value: Any, where: str) -> None:
    """The TypedDict ``typed`` names exactly the keys of ``value``, nested ones too."""
    import types
    import typing

    if not typing.is_typeddict(typed) or not isinstance(value, dict):
        return
    hints = typing.get_type_hints(typed)
    assert set(hints) == set(value), f"{where}: {sorted(set(hints) ^ set(value))}"
    for key, hint in hints.items():
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        for kind in typing.get_args(hint) if optional else (hint,):
            items = value[key] if typing.get_origin(kind) is list else [value[key]]
            element = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            for item in items if isinstance(items, list) else []:
                _keys_agree(element, item, f"{where}.{key}")


def test_the_documented_state_the_typed_one_and_the_written_one_agree(
    make: Callable[..., Monitor], tmp_path: Path
) -> None:
    from torchprobe.common.status_doc import StatusDocument

    _keys_agree(StatusDocument, _documented_state(), "docs/monitor-contract.md")
    m = make().start()
    path = tmp_path / "status" / f"{os.getpid()}.json"
    wait_for(lambda: path.exists() and json.loads(path.read_text())["checks"])
    m.record_error(AcceleratorError("CUDA error: an illegal memory access was encountered", 700))
    wait_for(lambda: json.loads(path.read_text())["sticky"] is not None)
    written = json.loads(path.read_text())
    assert list(written) == list(_documented_state())  # the same fields, in the same order
    _keys_agree(StatusDocument, written, "the status file")


def test_an_unwritable_status_dir_warns_once_and_never_breaks_the_app(
    make: Callable[..., Monitor], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="torchprobe")
    m = make(status_dir="/dev/null/status").start()
    m.loading()
    m.loaded()
    time.sleep(0.5)
    assert m.ready()
    warnings = [r for r in caplog.records if "cannot write the status file" in r.message]
    assert len(warnings) == 1


def test_a_second_monitor_in_a_process_is_an_error_when_it_is_made(
    make: Callable[..., Monitor],
) -> None:
    first = make()
    with pytest.raises(RuntimeError, match=r"already has a Monitor \(made at .*test_monitor"):
        Monitor(["ok"], status_dir=False)
    first.stop()
    second = make()  # once the first is stopped, another may be made
    assert second.live()


def test_a_dropped_monitor_that_never_started_does_not_block_a_new_one() -> None:
    Monitor(["ok"], status_dir=False)  # made and dropped at once
    gc.collect()
    Monitor(["ok"], status_dir=False).stop()


def test_bad_checks_fail_when_the_monitor_is_made() -> None:
    with pytest.raises(UsageError, match="unknown check 'nosuch'"):
        Monitor(["nosuch"], status_dir=False)
    with pytest.raises(ValueError):
        Monitor(["ok"], interval=0, status_dir=False)


def test_a_forked_child_starts_its_own_monitor(make: Callable[..., Monitor]) -> None:
    m = make()
    m.loaded()
    assert m.live()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's monitor thread did not come along
        try:
            m.start()
            ok = m.state()["pid"] == os.getpid() and m._owner == os.getpid()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert m.state()["pid"] == os.getpid()


def test_reporting_the_model_does_not_start_the_monitor(make: Callable[..., Monitor]) -> None:
    # gunicorn --preload loads the app, and its model, in the master: nothing
    # may start a thread (or touch CUDA) there before the fork.
    m = make()
    m.loading()
    m.loaded()
    assert m._owner is None
    assert m.ready()  # the first question starts it, in the process that asks
    assert m._owner == os.getpid()


@pytest.mark.parametrize("spec", ["cudaerror", "cudaerror:code=700"])
def test_a_sticky_error_in_a_periodic_check_marks_the_process_for_good(
    make: Callable[..., Monitor], spec: str
) -> None:
    m = make([spec])
    wait_for(lambda: m.state()["sticky"])
    assert m.state()["sticky"]["code"] == 700
    assert not m.live() and m.live().reasons[0].startswith("sticky CUDA error 700")


def test_a_plugins_options_are_parsed_against_its_own_declarations(
    make: Callable[..., Monitor],
) -> None:
    m = make(["rich:items=3"])  # items is an integer option of the plugin
    wait_for(lambda: m.state()["checks"])
    assert [c["name"] for c in m.state()["checks"]] == ["rich[0]", "rich[1]", "rich[2]"]


# --- the file system, off the request path ------------------------------------------


class FileSystem:
    """What this process asks of the file system, through the audit events
    CPython raises for every file operation (``open`` for builtins.open and
    os.open alike, ``os.rename`` for os.replace, ...), and a stand-in for a
    hung one: from ``hang(directory)`` on, an open() of a path under it
    waits until ``release()``, as on an NFS mount whose server is gone (no
    such mount, nor FUSE, can be made here)."""

    EVENTS = frozenset({"open", "os.rename", "os.remove", "os.mkdir", "os.rmdir",
                        "os.listdir", "os.scandir", "os.chmod", "os.truncate", "os.utime",
                        "os.link"})  # fmt: skip

    def __init__(self) -> None:
        self.watched: set[int] = set()  # threads whose file operations are recorded
        self.seen: list[tuple[str, tuple[Any, ...]]] = []
        self.hung: str | None = None
        self.looking = 0  # the thread that called hang(): the test itself looks on
        self.blocked = threading.Event()
        self.released = threading.Event()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in self.EVENTS:
            return
        if threading.get_ident() in self.watched:
            self.seen.append((event, args))
        if (
            self.hung
            and event == "open"
            and isinstance(args[0], (str, bytes))
            and (threading.get_ident() != self.looking)
        ):
            if os.fsdecode(args[0]).startswith(self.hung):
                self.blocked.set()
                self.released.wait()

    def hang(self, directory: Path) -> None:
        self.looking = threading.get_ident()
        self.hung = str(directory) + os.sep

    def release(self) -> None:
        self.hung = None
        self.released.set()


_filesystems: list[FileSystem] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    for fs in _filesystems:
        fs.hook(event, args)


@pytest.fixture
def filesystem() -> Iterator[FileSystem]:
    if not getattr(sys, "_torchprobe_test_audit", False):
        sys.addaudithook(_audit)  # for good: a hook cannot be removed
        sys._torchprobe_test_audit = True  # type: ignore[attr-defined]
    fs = FileSystem()
    _filesystems.append(fs)
    yield fs
    fs.release()
    _filesystems.remove(fs)


def sticky_error() -> AcceleratorError:
    return AcceleratorError("CUDA error: an illegal memory access was encountered", 700)


def requests(m: Monitor) -> None:
    """What a serving process's request handlers call."""
    with m.guard():
        pass
    try:
        with m.guard():
            raise sticky_error()
    except AcceleratorError:
        pass
    m.loading()
    m.loaded()
    m.live(), m.ready(), m.state()


def test_requests_never_touch_the_file_system(make: Callable[..., Monitor], tmp_path: Path,
                                              filesystem: FileSystem) -> None:  # fmt: skip
    m = make()  # not started: the first request starts it, from the request's thread
    filesystem.watched.add(threading.get_ident())
    requests(m)
    filesystem.watched.clear()
    assert filesystem.seen == []
    path = tmp_path / "status" / f"{os.getpid()}.json"
    wait_for(lambda: path.exists() and json.loads(path.read_text())["sticky"] is not None)


def test_a_hung_file_system_never_blocks_a_request_and_shows_as_a_stale_file(
    make: Callable[..., Monitor], tmp_path: Path, filesystem: FileSystem
) -> None:
    status = tmp_path / "status"
    m = make(interval=0.2).start()
    path = status / f"{os.getpid()}.json"
    wait_for(lambda: path.exists())
    filesystem.hang(status)
    assert filesystem.blocked.wait(10), "the writer never wrote again"
    served = threading.Event()

    def serve() -> None:
        requests(m)
        served.set()

    threading.Thread(target=serve, daemon=True).start()
    # A request that waited for the file system would wait for good.
    assert served.wait(30), "a request waited for the hung file system"
    assert m.state()["sticky"] is not None and not m.live()
    written = json.loads(path.read_text())
    assert written["sticky"] is None, "the file is as it was before the hang"
    # The status-file check, in its own process, sees the file go stale.
    wait_for(lambda: time.time() - written["updated"] > 1.5, seconds=30)
    probe = run_cli(f"status-file:path={status},max-age=1s")
    assert probe.rc == 1 and f"pid {os.getpid()} stale" in probe.stdout, probe.stdout
    filesystem.release()
    wait_for(lambda: json.loads(path.read_text())["sticky"] is not None)
