"""--restart-after under plain Docker: the probe ends a fake-dead container's
main process, and the restart policy brings the container back.

Plain Docker only marks a container unhealthy. Here the HEALTHCHECK is
``torchprobe --restart-after 2 status-file:mode=live``: after two failed runs
in a row (counted only once a run of this container life has passed) it sends
SIGTERM to PID 1, which must end the container for ``--restart
unless-stopped`` to start it again. Timings are printed with ``-s``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import docker, unique_name

pytestmark = pytest.mark.e2e

#: Booting gunicorn, importing torch in two workers and loading the model, on 2 cores.
BOOT = 120
PROBE = "torchprobe --timeout 3 --restart-after 2 status-file:mode=live"
#: gunicorn's own worker timeout (30 s in the image) would replace frozen
#: workers by itself; raised here so that only the probe can end the fault.
#: Its graceful timeout bounds the stop: stopped workers never act on the
#: master's SIGTERM and are SIGKILLed when it runs out (10 s in the image).
GUNICORN = "--timeout 300 --graceful-timeout 3"


@dataclass
class Seen:
    at: float
    restarts: int
    status: str
    health: str
    pid: int


def snapshot(name: str) -> tuple[int, dict[str, Any]]:
    out = docker("inspect", "-f", "{{.RestartCount}}|{{json .State}}", name).stdout
    count, _, state = out.partition("|")
    return int(count), json.loads(state)


class Watch:
    """Polls a container's restart count, status and health, keeping each
    change and every probe output seen (Docker keeps only the last five)."""

    def __init__(self, name: str) -> None:
        self.name, self.started = name, time.monotonic()
        self.seen: list[Seen] = []
        self.outputs: dict[str, str] = {}

    def now(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> Seen:
        restarts, state = snapshot(self.name)
        health = state.get("Health") or {}
        for entry in health.get("Log") or []:
            self.outputs.setdefault(entry["End"], entry["Output"])
        seen = Seen(self.now(), restarts, state["Status"], health.get("Status", "none"),
                    state["Pid"])  # fmt: skip
        last = self.seen[-1] if self.seen else None
        if last is None or (last.restarts, last.status, last.health, last.pid) != (
            seen.restarts, seen.status, seen.health, seen.pid):  # fmt: skip
            self.seen.append(seen)
        return seen

    def until(self, done: Any, within: float, what: str) -> Seen:
        end = time.monotonic() + within
        while True:
            seen = self.poll()
            if done(seen):
                return seen
            if time.monotonic() > end:
                pytest.fail(f"not {what} within {within}s:\n{self.report()}")
            time.sleep(0.2)

    def report(self) -> str:
        lines = [f"{s.at:6.1f}s  restarts {s.restarts}  {s.status:<10} {s.health:<9} pid {s.pid}"
                 for s in self.seen]  # fmt: skip
        return "\n".join(lines)


def test_frozen_workers_get_the_container_restarted_and_healthy_again(
    run_container: Any,
) -> None:
    c = run_container("restart", "--restart", "unless-stopped", health_cmd=PROBE,
                      env={"GUNICORN_CMD_ARGS": GUNICORN})  # fmt: skip
    w = Watch(c.name)
    w.until(lambda s: s.health == "healthy", BOOT, "healthy")
    workers = c.gunicorn_workers()
    assert len(workers) == 2, c.host_processes()
    # Frozen as a whole, master left running: the fake-dead server whose
    # status files go stale while its port still accepts.
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    fault = w.now()
    restarted = w.until(lambda s: s.restarts >= 1 and s.status == "running", 60, "restarted")
    healthy = w.until(lambda s: s.health == "healthy", BOOT, "healthy again")
    time.sleep(5)  # a few more probe rounds of the new life: no second restart
    assert w.poll().restarts == 1, w.report()
    print(f"\n[e2e] workers frozen at {fault:.1f}s\n{w.report()}")

    _, state = snapshot(c.name)
    outputs = list(w.outputs.values())
    signalled = [o for o in outputs if "restart: sending SIGTERM to PID 1" in o]
    assert signalled, "\n---\n".join(outputs)
    assert "(docker-init) after 2 failed runs" in signalled[0], signalled[0]
    assert any("1 of 2 failed runs in a row" in o for o in outputs)
    assert not any("kernel drops it" in o for o in outputs)
    assert not set(workers) & set(c.gunicorn_workers()), "new workers"
    # the new life's count: armed by its first pass, nothing failed
    doc = json.loads(c.exec("cat", "/run/torchprobe/restart-1.state").stdout)
    assert (doc["armed"], doc["failures"], doc["signals"]) == (True, 0, 0), doc
    print(f"[e2e] fault -> restarted {restarted.at - fault:.1f}s, -> healthy "
          f"{healthy.at - fault:.1f}s; exit code {state['ExitCode']} of the first life\n"
          f"[e2e] the probe that acted:\n{signalled[0]}")  # fmt: skip


def test_no_restart_while_passing_or_while_the_model_never_loaded(run_container: Any) -> None:
    # Two containers at once: one healthy, one whose model never loads
    # (DEVICE=cuda without a GPU: not live from its first status file on).
    # The second fails every run of its life and is never armed: no restart
    # loop out of a container that never worked.
    ok = run_container("restart-ok", "--restart", "unless-stopped", health_cmd=PROBE)
    broken = run_container("restart-noload", "--restart", "unless-stopped", health_cmd=PROBE,
                           env={"DEVICE": "cuda"}, start_period=5)  # fmt: skip
    w_ok, w_broken = Watch(ok.name), Watch(broken.name)
    w_ok.until(lambda s: s.health == "healthy", BOOT, "healthy")
    w_broken.until(lambda s: s.health == "unhealthy", BOOT, "unhealthy")
    end = time.monotonic() + 12
    while time.monotonic() < end:
        assert w_ok.poll().restarts == 0 and w_broken.poll().restarts == 0
        time.sleep(0.5)
    rounds = len(w_broken.outputs)
    print(f"\n[e2e] healthy one:\n{w_ok.report()}\n[e2e] never loaded:\n{w_broken.report()}")
    assert rounds >= 5, w_broken.outputs
    assert all("not armed until a run passes" in o for o in w_broken.outputs.values())
    doc = json.loads(broken.exec("cat", "/run/torchprobe/restart-1.state").stdout)
    assert (doc["armed"], doc["failures"], doc["signals"]) == (False, 0, 0), doc
    doc = json.loads(ok.exec("cat", "/run/torchprobe/restart-1.state").stdout)
    assert (doc["armed"], doc["failures"], doc["signals"]) == (True, 0, 0), doc
    assert not any("sending SIG" in o for o in w_ok.outputs.values())


#: A main process with no SIGTERM handler (a bare `python app.py`, a Flask
#: development server): it listens, so `tcp` passes on 8000 and fails on 8001.
BARE = "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 8000)); s.listen(); " \
       "time.sleep(600)"  # fmt: skip


@pytest.fixture
def bare(image: str) -> Iterator[Any]:
    names: list[str] = []

    def start(*options: str) -> str:
        name = unique_name("bare")
        names.append(name)
        docker("run", "-d", "--network", "none", "--restart", "unless-stopped", "--name", name,
               *options, image, "python", "-c", BARE)  # fmt: skip
        return name

    yield start
    for name in names:
        docker("rm", "-f", name, check=False, timeout=60)


def probe(name: str, port: int) -> tuple[int, str]:
    done = docker("exec", name, "torchprobe", "--restart-after", "1",
                  f"tcp:host=127.0.0.1,port={port}", check=False)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("init", [False, True], ids=["python-as-pid-1", "under-init"])
def test_pid_1_without_a_handler_ignores_sigterm_unless_under_an_init(
    bare: Any, init: bool
) -> None:
    name = bare(*(["--init"] if init else []))
    w = Watch(name)
    end = time.monotonic() + 30
    while probe(name, 8000)[0] != 0:  # the first pass arms it
        assert time.monotonic() < end, "the bare server never listened"
        time.sleep(0.5)
    code, output = probe(name, 8001)
    # 1, or 137 where the container stopped before the probe did (under --init
    # python dies at once); the line was written before the signal went.
    assert code in ((1, 137) if init else (1,)), output
    assert "restart: sending SIGTERM to PID 1" in output, output
    if init:
        # tini waits for SIGTERM (blocked, sigtimedwait) and forwards it; python,
        # no longer PID 1, dies of it: exit 143, and the policy restarts it.
        assert "(docker-init)" in output and "kernel drops it" not in output, output
        seen = w.until(lambda s: s.restarts >= 1, 20, "restarted")
        print(f"\n[e2e] under --init: restarted {seen.at:.1f}s after the start\n{w.report()}")
    else:
        assert "(python)" in output and "the kernel drops it: run the container with --init" \
            in output, output  # fmt: skip
        time.sleep(3)
        seen = w.poll()
        assert (seen.restarts, seen.status) == (0, "running"), w.report()
        print(f"\n[e2e] python as PID 1 ignored SIGTERM; the probe said:\n{output}")
