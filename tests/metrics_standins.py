"""The stand-ins of tests/standins.py with the Prometheus metrics their
servers really expose, for ``stall=`` and the ``progress`` check.

Names, types and labels are those of each server's source (see
docs/model-servers.md, "Progress metrics"). The exposition is each server's
own: vLLM, SGLang and BentoML use prometheus_client, so here a real
prometheus_client registry writes them (``# TYPE``, ``_total`` and
``_created``); Triton (prometheus-cpp) and TGI (metrics-exporter-prometheus)
write counters without ``_total`` and no ``_created``, written here by hand.

Each stand-in has a :class:`Work` whose ``state`` a test sets:

- ``idle``: nothing pending, counters still;
- ``busy``: work pending and the counters move (they advance at every scrape,
  so every probe run sees progress, whatever the machine's speed);
- ``wedged``: work pending and the counters frozen — also what an engine
  process that died behind a live API server shows (its gauges keep their
  last values);

``restart()`` starts the counters over, as a restarted server does.
``fault`` breaks the metrics endpoint: ``missing`` (404), ``huge`` (10 MB),
``line`` (one 1 MB line), ``flood`` (100,000 series of a gauge), ``garbage``,
``nan`` (NaN and +Inf values), ``duplicate`` (every series twice);
``delay["/metrics"]`` makes it slow.
"""

from __future__ import annotations

from typing import Any

import standins
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Answer = tuple[int, bytes, str]


class Work:
    """Pending work and the done counters of one server."""

    def __init__(self, running: int = 4, waiting: int = 2) -> None:
        self.state = "idle"
        self.running = running
        self.waiting = waiting
        self.steps = 0  # how often the counters moved

    def pending(self) -> tuple[int, int]:
        return (0, 0) if self.state == "idle" else (self.running, self.waiting)

    def scrape(self) -> bool:
        """Called at every scrape: True when the counters move now."""
        if self.state == "busy":
            self.steps += 1
            return True
        return False


class _Nothing(standins.StandIn):
    """A server that answers only what its subclass adds."""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        return 404, b"Not Found", standins.EMPTY


class Metered(standins.StandIn):
    """A stand-in that also answers ``/metrics`` (subclasses render it)."""

    metrics_path = "/metrics"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.work = Work()
        self.fault: str | None = None
        self.restart()

    def restart(self) -> None:
        """The server restarted: its counters start over."""

    def render(self) -> bytes:
        raise NotImplementedError

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path != self.metrics_path:
            return super().answer(method, path, headers, body)  # type: ignore[safe-super]
        if self.fault == "missing":
            return 404, b"Not Found", standins.EMPTY
        if self.fault == "huge":
            return 200, b"# just a comment line, many times over\n" * 270_000, PROM_TYPE
        if self.fault == "flood":  # 100,000 series (4 MB) of a gauge stall= reads
            lines = (f'sglang:num_running_reqs{{replica="{i}"}} 1\n' for i in range(100_000))
            return 200, "".join(lines).encode(), PROM_TYPE
        if self.fault == "garbage":
            return 200, b"\x00\xff<html>not metrics</html>\n" * 100, PROM_TYPE
        text = self.render()
        if self.fault == "line":
            text = text + b'x{a="' + b"y" * (1024 * 1024) + b'"} 1\n'
        if self.fault == "duplicate":
            text = text + text
        if self.fault == "nan":
            text = _poisoned(text)
        return 200, text, PROM_TYPE


def _poisoned(text: bytes) -> bytes:
    """Every value NaN or +Inf, alternately."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if line and not line.startswith(b"#"):
            line = line.rsplit(b" ", 1)[0] + (b" NaN" if i % 2 else b" +Inf")
        out.append(line)
    return b"\n".join(out) + b"\n"


class VLLM(Metered, standins.VLLM):
    """vLLM with the PrometheusStatLogger's series (labels model_name, engine)."""

    def restart(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        r = self.registry
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model "
                             "execution batches.", labels, registry=r)  # fmt: skip
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be "
                             "processed.", labels, registry=r)  # fmt: skip
        self.prompt = Counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.",
                              labels, registry=r)  # fmt: skip
        self.generated = Counter("vllm:generation_tokens_total", "Number of generation tokens "
                                 "processed.", labels, registry=r)  # fmt: skip
        self.success = Counter("vllm:request_success_total", "Count of successfully processed "
                               "requests.", [*labels, "finished_reason"], registry=r)  # fmt: skip
        self.latency = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request "
                                 "latency in seconds.", labels, registry=r)  # fmt: skip
        for model in self.models:
            for reason in ("stop", "length", "abort"):
                self.success.labels(model, "0", reason)
            self.prompt.labels(model, "0")
            self.generated.labels(model, "0")
            self.latency.labels(model, "0")
        #: Which models have the work (default: all).
        self.busy_models: list[str] | None = None

    def render(self) -> bytes:
        moved = self.work.scrape()
        running, waiting = self.work.pending()
        for model in self.models:
            mine = self.busy_models is None or model in self.busy_models
            self.running.labels(model, "0").set(running if mine else 0)
            self.waiting.labels(model, "0").set(waiting if mine else 0)
            if moved and mine:
                self.generated.labels(model, "0").inc(running)
                if self.work.steps % 3 == 0:
                    self.success.labels(model, "0", "length").inc()
                    self.latency.labels(model, "0").observe(1.5)
        return generate_latest(self.registry)


class SGLang(Metered, standins.SGLang):
    """SGLang started with --enable-metrics (labels model_name and more)."""

    def restart(self) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["model_name", "engine_type", "tp_rank", "pp_rank"]
        self.values = ("qwen/qwen2.5-0.5b-instruct", "unified", "0", "0")
        self.running = Gauge("sglang:num_running_reqs", "The number of running requests.",
                             labels, registry=r)  # fmt: skip
        self.queued = Gauge("sglang:num_queue_reqs", "The number of requests in the waiting "
                            "queue.", labels, registry=r)  # fmt: skip
        tlabels = ["model_name"]
        self.generated = Counter("sglang:generation_tokens_total", "Number of generation tokens "
                                 "processed.", tlabels, registry=r)  # fmt: skip
        self.finished = Counter("sglang:num_requests_total", "Number of requests processed.",
                                tlabels, registry=r)  # fmt: skip
        self.itl = Histogram("sglang:inter_token_latency_seconds", "Histogram of inter-token "
                             "latency in seconds.", tlabels, registry=r)  # fmt: skip
        self.ttft = Histogram("sglang:time_to_first_token_seconds", "Histogram of time to first "
                              "token in seconds.", tlabels, registry=r)  # fmt: skip
        for metric in (self.generated, self.finished, self.itl, self.ttft):
            metric.labels(self.values[0])
        self.running.labels(*self.values)
        self.queued.labels(*self.values)

    def render(self) -> bytes:
        moved = self.work.scrape()
        running, waiting = self.work.pending()
        self.running.labels(*self.values).set(running)
        self.queued.labels(*self.values).set(waiting)
        if moved:  # tokens reach the tokenizer; a request finishes now and then
            self.itl.labels(self.values[0]).observe(0.02)
            if self.work.steps % 5 == 0:
                self.generated.labels(self.values[0]).inc(64)
                self.finished.labels(self.values[0]).inc()
        return generate_latest(self.registry)


class TGI(Metered, standins.TGI):
    """TGI's router: metrics-exporter-prometheus writes counters without _total."""

    def restart(self) -> None:
        self.decode_steps = 0
        self.prefill_steps = 0
        self.successes = 0

    def render(self) -> bytes:
        if self.work.scrape():
            self.decode_steps += 1
            if self.work.steps % 4 == 0:
                self.successes += 1
                self.prefill_steps += 1
        running, waiting = self.work.pending()
        lines = [
            "# TYPE tgi_request_count counter",
            f"tgi_request_count {self.successes + running + waiting}",
            "# TYPE tgi_request_success counter",
            f"tgi_request_success {self.successes}",
            "# TYPE tgi_batch_inference_success counter",
            f'tgi_batch_inference_success{{method="prefill"}} {self.prefill_steps}',
            f'tgi_batch_inference_success{{method="decode"}} {self.decode_steps}',
            "# TYPE tgi_queue_size gauge",
            f"tgi_queue_size {waiting}",
            "# TYPE tgi_batch_current_size gauge",
            f"tgi_batch_current_size {running}",
            "# TYPE tgi_batch_max_total_tokens gauge",
            "tgi_batch_max_total_tokens 16000",
            "# TYPE tgi_request_duration summary",
            'tgi_request_duration{quantile="0.5"} 1.2',
            f"tgi_request_duration_sum {1.2 * self.successes}",
            f"tgi_request_duration_count {self.successes}",
        ]
        return ("\n".join(lines) + "\n\n").encode()


class TritonMetrics(Metered, _Nothing):
    """Triton's metrics port (8002): prometheus-cpp's text, per model and version."""

    server_header = ""

    def __init__(self, models: dict[str, list[str]] | None = None) -> None:
        self.models = models if models is not None else {"resnet50": ["1"]}
        #: Which (model, version) pairs have the work (default: all).
        self.busy_models: list[tuple[str, str]] | None = None
        super().__init__()

    def restart(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def render(self) -> bytes:
        moved = self.work.scrape()
        running, waiting = self.work.pending()
        series = [(m, v) for m, versions in self.models.items() for v in versions]
        gauge, execs, infers, success = [], [], [], []
        for pair in series:
            mine = self.busy_models is None or pair in self.busy_models
            if moved and mine:
                self.counts[pair] = self.counts.get(pair, 0) + 1
            labels = f'model="{pair[0]}",version="{pair[1]}"'
            count = self.counts.get(pair, 0)
            gauge.append(f"nv_inference_pending_request_count{{{labels}}} {waiting if mine else 0}")
            execs.append(f"nv_inference_exec_count{{{labels}}} {count}")
            infers.append(f"nv_inference_count{{{labels}}} {count * 8}")
            success.append(f"nv_inference_request_success{{{labels}}} {count * 8}")
        lines = [
            "# HELP nv_inference_request_success Number of successful inference requests, "
            "all batch sizes",
            "# TYPE nv_inference_request_success counter",
            *success,
            "# HELP nv_inference_count Number of inferences performed (does not include "
            "cached requests)",
            "# TYPE nv_inference_count counter",
            *infers,
            "# HELP nv_inference_exec_count Number of model executions performed (does not "
            "include cached requests)",
            "# TYPE nv_inference_exec_count counter",
            *execs,
            "# HELP nv_inference_pending_request_count Instantaneous number of pending "
            "requests awaiting execution per-model.",
            "# TYPE nv_inference_pending_request_count gauge",
            *gauge,
            "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)",
            "# TYPE nv_gpu_utilization gauge",
            'nv_gpu_utilization{gpu_uuid="GPU-0d5e5d2c"} 0.5',
        ]
        return ("\n".join(lines) + "\n").encode()


class BentoML(Metered, _Nothing):
    """A BentoML 1.2+ service: /livez, /readyz and prometheus_client metrics
    (namespace bentoml_service) that count the probe's own health requests."""

    def restart(self) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["endpoint", "service_name", "service_version", "runner_name"]
        self.in_progress = Gauge("bentoml_service_request_in_progress", "Total number of HTTP "
                                 "requests in progress now", labels, registry=r)  # fmt: skip
        self.total = Counter("bentoml_service_request_total", "Total number of HTTP requests",
                             [*labels[:3], "http_response_code", "runner_name"],
                             registry=r)  # fmt: skip

    def _count(self, endpoint: str, code: str = "200") -> None:
        self.total.labels(endpoint, "summarizer", "1.0", code, "Summarization").inc()

    def time_out(self) -> None:
        """A request answered 504 by BentoML's traffic timeout: counted, not done."""
        self._count("/summarize", "504")

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path in ("/livez", "/readyz"):
            self._count(path)  # BentoML counts them like any request
            return 200, b"\n", standins.EMPTY
        return super().answer(method, path, headers, body)

    def render(self) -> bytes:
        moved = self.work.scrape()
        running, waiting = self.work.pending()
        where = ("/summarize", "summarizer", "1.0", "Summarization")
        self.in_progress.labels(*where).set(running + waiting)
        # The scrape itself never shows here (BentoML skips /metrics), but a
        # concurrent health request would: /livez in progress.
        self.in_progress.labels("/livez", *where[1:]).set(1)
        if moved:
            self._count("/summarize")
        return generate_latest(self.registry)
