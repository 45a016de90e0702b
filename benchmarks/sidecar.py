"""``torchprobe serve``: what its probes cost, beside what they replace.

Two targets, each measured side by side in one run:

- ``serve-live-p99``: ``/live``'s p99 under a fixed request rate (wrk and
  benchmarks/fixed_rate.lua) while the ready set's round is in flight all the
  time (an ``http`` check of an upstream that answers in 1.5 s, every 2 s),
  against a trivial endpoint of the same server loaded the same way at the
  same time (a path it answers with a fixed 404, reading no verdict): what
  the verdict and a round in flight add to an answer. Beside them, reported
  only, a bare Python process that answers every request with a fixed 200
  and closes, as the sidecar does. Target: at most 1.2 times.
- ``serve-cpu``: the CPU a sidecar takes per minute at ``--interval 10s``,
  with kubelet's two ``httpGet`` probes every 10 s, against the same checks
  run as two exec probes (``torchprobe LIVE`` and ``torchprobe READY``) every
  10 s, over the same window. Target: less than the exec probes (ratio < 1).
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import wrk
from .harness import (
    Settings,
    Target,
    clean_env,
    console_script,
    not_measured,
    ratio_target,
    stop_group,
)

WRK_CONNECTIONS = 2  # per endpoint, two endpoints at once
WRK_DELAY_MS = 20  # per connection: about 100 requests/s per endpoint
SLOW_S = 1.5  # the upstream's answer to the ready set's check
SLOW_INTERVAL = "2s"  # the ready set's interval: a round is in flight 3/4 of the time
PERIOD_S = 10.0  # kubelet's periodSeconds, and the sidecar's --interval
_TICK = os.sysconf("SC_CLK_TCK")

#: The trivial endpoint: one thread, read the request head, a fixed 200, close.
TRIVIAL = r"""
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(512)
print(sock.getsockname()[1], flush=True)
answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
          b"Connection: close\r\n\r\n{\"healthy\": true}")
while True:
    conn, _ = sock.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(8192)
        if not chunk:
            break
        data += chunk
    conn.sendall(answer)
    conn.close()
"""


class _Upstream(BaseHTTPRequestHandler):
    """``/ok`` at once, ``/slow`` after SLOW_S: the model server the checks probe."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/slow":
            time.sleep(SLOW_S)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@contextmanager
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


@contextmanager
def sidecar(workdir: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The installed ``torchprobe serve``, until its first verdict of each set."""
    port = _free_port()
    log = open(os.path.join(workdir, "serve.log"), "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [console_script(), "serve", "--listen", f"127.0.0.1:{port}", *args],
        env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"torchprobe serve exited {proc.returncode}: "
                                   f"{log.read().decode(errors='replace')[-1000:]}")  # fmt: skip
            try:
                if all(b'"rounds": 0' not in _get(port, f"/{p}")[1] for p in ("live", "ready")):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("torchprobe serve gave no verdicts within 60 s")
            time.sleep(0.1)
        # The Xid watch's process has started, and on a machine without NVML
        # ended: what is measured from here on is the sidecar's steady state.
        while b'state="starting"} 1' in _get(port, "/metrics")[1]:
            if time.monotonic() > deadline:
                raise RuntimeError("the Xid watch did not settle within 60 s")
            time.sleep(0.1)
        time.sleep(1.0)  # and a watch process that ended has been waited for
        yield proc, port
    finally:
        stop_group(proc)
        log.close()


@contextmanager
def trivial() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", TRIVIAL], stdout=subprocess.PIPE,
                            env=clean_env())  # fmt: skip
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / _TICK  # fields 14-17 of proc(5)


def serve_targets(s: Settings) -> list[Target]:
    return [live_latency(s), cpu_per_minute(s)]


def live_latency(s: Settings) -> Target:
    title = "p99 serve /live vs trivial"
    wrk = shutil.which("wrk")
    if wrk is None:
        why = "not measured: wrk is not installed (apt-get install wrk)"
        return not_measured("serve-live-p99", title, why, unit="ms")
    with tempfile.TemporaryDirectory(prefix="tpbench-") as workdir, upstream() as up:
        args = ("--interval", SLOW_INTERVAL, "--live", f"tcp:host=127.0.0.1,port={up}",
                "--ready", f"http:url=http://127.0.0.1:{up}/slow,timeout=5s")  # fmt: skip
        with sidecar(workdir, *args) as (_, port), trivial() as plain:
            urls = {
                "/live": f"http://127.0.0.1:{port}/live",
                # The sidecar's own trivial answer: a fixed 404, no verdict read.
                "trivial": f"http://127.0.0.1:{port}/-",
                "python": f"http://127.0.0.1:{plain}/",
            }
            run_wrks(wrk, urls, 1)  # warm-up
            p99: dict[str, list[float]] = {k: [] for k in urls}
            p50: dict[str, list[float]] = {k: [] for k in urls}
            rates: list[float] = []
            errors = 0
            for _ in range(s.wrk_rounds):
                for key, figures in run_wrks(wrk, urls, s.wrk_seconds).items():
                    p99[key].append(figures["p99_us"] / 1000)
                    p50[key].append(figures["p50_us"] / 1000)
                    rates.append(figures["requests"] / (figures["duration_us"] / 1e6))
                    errors += sum(int(v) for n, v in figures.items()
                                  if n.endswith(("errors", "timeouts"))
                                  and not (key == "trivial" and n == "status_errors"))  # fmt: skip
            _, ready = _get(port, "/ready")
    note = (f"3 wrk at once (/live, the sidecar's 404, a bare Python server), "
            f"-t1 -c{WRK_CONNECTIONS}, {WRK_DELAY_MS} ms between a connection's "
            f"requests; {min(rates):.0f}-{max(rates):.0f} requests/s per endpoint; the ready "
            f"round (an http check answered in {SLOW_S:g} s, every {SLOW_INTERVAL}) "
            "in flight")  # fmt: skip
    broken = f"{errors} non-2xx responses or socket errors" if errors else ""
    if b'"healthy": true' not in ready:
        broken = "; ".join(filter(None, [broken, "the slow ready round did not pass"]))
    target = ratio_target("serve-live-p99", title, 1.2, p99["/live"], p99["trivial"], broken,
                          note, "ms")  # fmt: skip
    target.extra["p50_ms"] = p50
    target.extra["p99_ms_python"] = p99["python"]
    target.note += (f"; a bare Python server (fixed 200, close) beside it: p99 "
                    f"{statistics.median(p99['python']):.2f} ms, p50 "
                    f"{statistics.median(p50['python']):.2f} ms")  # fmt: skip
    return target


def run_wrks(wrk_path: str, urls: dict[str, str], seconds: int) -> dict[str, dict[str, float]]:
    return wrk.run(wrk_path, urls, seconds, WRK_CONNECTIONS, WRK_DELAY_MS)


def cpu_per_minute(s: Settings) -> Target:
    title = "serve CPU/min vs exec probes"
    periods = 2 if s.quick else 6
    with tempfile.TemporaryDirectory(prefix="tpbench-") as workdir, upstream() as up:
        live = f"tcp:host=127.0.0.1,port={up} http:url=http://127.0.0.1:{up}/ok"
        ready = f"http:url=http://127.0.0.1:{up}/ok"
        exe = console_script()
        with sidecar(workdir, "--interval", f"{PERIOD_S:g}s", "--live", live,
                     "--ready", ready) as (proc, port):  # fmt: skip
            exec_cpu, failures = 0.0, 0
            rss_kb = 0
            side_before = cpu_seconds(proc.pid)
            started = time.monotonic()
            for period in range(periods):
                # kubelet: the sidecar's two httpGet probes ...
                failures += sum(_get(port, p)[0] != 200 for p in ("/live", "/ready"))
                # ... or two exec probes of the same checks, one after the other.
                for checks in (live, ready):
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    rc = subprocess.run([exe, *checks.split()], env=clean_env(),
                                        capture_output=True, timeout=60).returncode  # fmt: skip
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    exec_cpu += (after.ru_utime - before.ru_utime) + (
                        after.ru_stime - before.ru_stime
                    )
                    failures += rc != 0
                next_at = started + (period + 1) * PERIOD_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            window = time.monotonic() - started
            side_cpu = cpu_seconds(proc.pid) - side_before
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
    per_minute = 60.0 / window
    broken = f"{failures} probes did not pass" if failures else ""
    target = Target(
        "serve-cpu", title, "ratio", unit="s/min", limit=1.0,
        torchprobe=side_cpu * per_minute, baseline=exec_cpu * per_minute,
        note=(f"{periods} periods of {PERIOD_S:g} s: the sidecar's CPU (/proc/<pid>/stat, its "
              f"rounds and two GETs a period) {side_cpu * 1000:.0f} ms; two exec probes a "
              f"period (getrusage of the children) {exec_cpu * 1000:.0f} ms; sidecar RSS "
              f"{rss_kb / 1024:.1f} MiB; live: {live}; ready: {ready}"),
        extra={"window_s": window, "cpu_s_sidecar": side_cpu, "cpu_s_exec": exec_cpu,
               "sidecar_rss_kib": rss_kb, "periods": periods},
    )  # fmt: skip
    return target.judge(broken)
