"""One check per model server: its default port, endpoints, and what "ready" means.

Each preset is a declaration read by :class:`~torchprobe.checks.server.ServerCheck`;
the few servers whose readiness needs a look inside a JSON answer add a small
judge. Live is "the process answers"; ready is "it can serve the model" — a
ready preset belongs in a readiness probe, not in one that restarts a container.
"""

from __future__ import annotations

import json
from typing import Any

from torchprobe.base import CheckFailed, Option, Outcome, UsageError
from torchprobe.checks.canary import CANARY_OPTIONS
from torchprobe.checks.progress import Watch
from torchprobe.checks.promtext import parse_selector
from torchprobe.checks.server import (
    BaseUrlOption,
    Endpoint,
    ServerCheck,
    infer_endpoint,
    need,
    server_options,
)
from torchprobe.checks.stall import NoMetrics, ServerMetrics
from torchprobe.common.scrub import clip
from torchprobe.net.http import Reply
from torchprobe.net.url import Url
from torchprobe.options import boolean, choice, text

__all__ = [
    "BentoML",
    "KServe",
    "LitServe",
    "Ollama",
    "RayServe",
    "SGLang",
    "TGI",
    "TorchServe",
    "Triton",
    "VLLM",
]


def _watch(pending: dict[str, str], done: tuple[str, ...], unit: str, lazy: bool = False) -> Watch:
    """A Watch from metric texts: ``{"vllm:num_requests_running": "requests running"}``."""
    return Watch(
        tuple((parse_selector(m), said) for m, said in pending.items()),
        tuple(parse_selector(m) for m in done),
        unit,
        lazy,
    )


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --- TorchServe ---------------------------------------------------------------------------


def _torchserve_workers(check: TorchServe, reply: Reply, document: Any) -> str:
    """``/models/NAME`` lists the model's versions, each with its workers."""
    model = repr(check.model)
    versions = document if isinstance(document, list) else [document]
    workers = [
        w
        for v in versions
        if isinstance(v, dict)
        for w in (v.get("workers") or [])
        if isinstance(w, dict)
    ]
    states = [str(w.get("status", "?")) for w in workers]
    ready = states.count("READY")
    version = next((v.get("modelVersion") for v in versions if isinstance(v, dict)), None)
    check.notes["model"] = {"name": check.model, "version": version, "workers": states}
    if not workers:
        raise CheckFailed(f"model {model} has no worker (registered with 0 workers)")
    need(ready > 0, f"model {model} has no READY worker ({len(workers)}: {', '.join(states)})")
    return f"model {model} {ready}/{len(workers)} workers READY"


class TorchServe(ServerCheck):
    name = "torchserve"
    server = "TorchServe"
    port = 8080
    description = (
        "TorchServe: /ping says Healthy; with model=, a READY worker (management API); "
        "infer= posts to /predictions/NAME [port 8080, management 8081]"
    )
    options = server_options(
        8080,
        extra=(
            Option(
                "management-url",
                BaseUrlOption(),
                help="the management API, for model= (default http://127.0.0.1:8081)",
            ),
            Option(
                "token-file",
                text,
                help="TorchServe's key_file.json, re-read every run (its keys expire)",
            ),
            *CANARY_OPTIONS,
        ),
    )
    inference = infer_endpoint("/predictions/{model}", missing="model {model} is not registered")
    live = (
        Endpoint("/ping", "server Healthy", "server not Healthy", json=(("status", "Healthy"),)),
    )
    ready = (
        *live,
        Endpoint(
            "/models/{model}",
            "model {model} ready",
            "model {model} not ready",
            needs="model",
            base="management-url",
            judge=_torchserve_workers,
            missing="model {model} is not registered",
        ),
    )

    other_ports = {"management-url": 8081}
    metrics = NoMetrics(
        "TorchServe's metrics (0.12, port 8082) show only ts_inference_latency_microseconds "
        "and other latencies: no gauge of pending work"
    )
    token_file: str | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.token and self.token_file:
            raise UsageError("check 'torchserve': token= and token-file= exclude each other")

    def run(self) -> Outcome:
        self._keys: dict[str, str] | None = None  # the key file, read once per run
        return super().run()

    def token_for(self, endpoint: Endpoint) -> str | None:
        if not self.token_file:
            return self.token
        if self._keys is None:
            self._keys = self._read_keys()
        return self._keys["management" if endpoint.base == "management-url" else "inference"]

    def _read_keys(self) -> dict[str, str]:
        path = self.token_file
        from torchprobe.common.safeio import TOKEN_FILE_CAP, read_regular

        try:
            document = json.loads(read_regular(path or "", TOKEN_FILE_CAP))
        except OSError as exc:
            raise CheckFailed(f"token-file {path}: cannot read it: {exc.strerror or exc}") from None
        except ValueError:
            raise CheckFailed(f"token-file {path}: not JSON (TorchServe's key_file.json)") from None
        keys: dict[str, str] = {}
        for api in ("inference", "management"):
            entry = document.get(api) if isinstance(document, dict) else None
            key = entry.get("key") if isinstance(entry, dict) else None
            if not isinstance(key, str) or not key:
                raise CheckFailed(f"token-file {path}: no {api} key (TorchServe's key_file.json)")
            keys[api] = self.add_secret(key)
        return keys

    def unauthorized(self, reply: Reply) -> bool:
        # TorchServe answers 400 (not 401) to a missing, wrong or expired key.
        body = reply.response.body[:2048]
        token_error = b"InvalidKeyException" in body or b"Token Authorization" in body
        return super().unauthorized(reply) or (reply.response.status == 400 and token_error)


# --- Open Inference Protocol (KServe v2): Triton, KServe, MLServer -------------------------


def _v2_metadata(check: ServerCheck, reply: Reply, document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    name, version = document.get("name"), document.get("version")
    if isinstance(name, str) and isinstance(version, str):
        check.notes["server_version"] = clip(f"{name} {version}", 80)
        return clip(f"{name} {version}", 80)
    return None


_V2_MODEL = "/v2/models/{model}{version_path}/ready"
# With model=, that model's readiness decides: a server's own readiness also
# waits for every other model (Triton's strict mode, MLServer), so a broken
# neighbour would fail a probe of a model that serves.
_V2 = (
    Endpoint("/v2/health/ready", "server ready", "server not ready", unless="model"),
    Endpoint("/v2/health/live", "server live", "server not live", needs="model"),
    Endpoint(
        _V2_MODEL,
        "model {model}{version_shown} ready",
        "model {model}{version_shown} not ready",
        needs="model",
        missing="model {model}{version_shown} is unknown to the server",
    ),
    Endpoint("/v2", "metadata", judge=_v2_metadata, info=True),
)


class _OpenInference(ServerCheck):
    live = (Endpoint("/v2/health/live", "server live", "server not live"),)
    ready = _V2
    inference = infer_endpoint(
        "/v2/models/{model}{version_path}/infer",
        missing="model {model}{version_shown} is unknown to the server",
    )
    version: str | None

    def fields(self) -> dict[str, str]:
        fields = super().fields()
        fields["version_path"] = f"/versions/{fields['version']}" if self.version else ""
        return fields

    def _shown_fields(self) -> dict[str, str]:
        fields = super()._shown_fields()
        fields["version_shown"] = f" version {self.version}" if self.version else ""
        return fields

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.version and not self.model:
            raise UsageError(f"check {self.name!r}: version= needs model=")


_VERSION = Option("version", text, help="with model=: that version of the model")


class Triton(_OpenInference):
    name = "triton"
    server = "Triton"
    port = 8000
    description = (
        "Triton (KServe v2 protocol): /v2/health/live, /v2/health/ready, "
        "/v2/models/NAME/ready; infer= posts to /v2/models/NAME/infer [port 8000]"
    )
    options = server_options(8000, extra=(_VERSION, *CANARY_OPTIONS))
    # Triton core, src/metrics.cc: a gauge and counters per model and version
    # (labels "model", "version"), on the metrics port 8002.
    metrics = ServerMetrics(
        _watch(
            {"nv_inference_pending_request_count": "requests pending"},
            ("nv_inference_exec_count", "nv_inference_count", "nv_inference_request_success"),
            "model execution",
        ),
        port=8002,
        labels=(("model", "model"), ("version", "version")),
        missing="Triton serves metrics unless started with --allow-metrics=false",
    )


def _v1_ready(check: KServe, reply: Reply, document: Any) -> str:
    model = repr(check.model)
    ready = isinstance(document, dict) and document.get("ready") is True
    shown = clip(json.dumps(document.get("ready") if isinstance(document, dict) else document), 40)
    need(ready, f"model {model} not ready: GET /v1/models/{check.model} says ready={shown}")
    return f"model {model} ready"


class KServe(_OpenInference):
    name = "kserve"
    server = "KServe"
    port = 8080
    description = (
        "KServe model server: v2 /v2/health/*, /v2/models/NAME/ready; "
        "v1 /v1/models/NAME ready=true; infer= posts to v2 /v2/models/NAME/infer, "
        "v1 /v1/models/NAME:predict [port 8080]"
    )
    options = server_options(
        8080,
        extra=(
            Option("protocol", choice("v1", "v2"), default="v2", help="inference protocol"),
            _VERSION,
            *CANARY_OPTIONS,
        ),
    )
    metrics = NoMetrics(
        "KServe's model server exports only latency histograms (request_predict_seconds and "
        "its siblings, python/kserve/kserve/metrics.py): no gauge of pending work"
    )
    v1_live = (Endpoint("/", "server live", "server not live"),)
    v1_ready = (
        Endpoint(
            "/v1/models/{model}",
            "model {model} ready",
            "model {model} not ready",
            judge=_v1_ready,
            missing="model {model} is unknown to the server",
        ),
    )
    v1_inference = infer_endpoint(
        "/v1/models/{model}:predict", missing="model {model} is unknown to the server"
    )
    protocol: str

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.protocol == "v1" and self.mode == "ready" and not self.model:
            raise UsageError(
                "check 'kserve': protocol=v1 needs model= (v1 has no server-wide readiness)"
            )
        if self.protocol == "v1" and self.version:
            raise UsageError("check 'kserve': version= is for protocol=v2")

    def endpoints(self) -> tuple[Endpoint, ...]:
        if self.protocol == "v1":
            return tuple(self.v1_live if self.mode == "live" else self.v1_ready)
        return tuple(super().endpoints())

    def canary_endpoints(self) -> tuple[Endpoint, ...]:
        chosen = tuple(super().canary_endpoints())
        return (self.v1_inference,) if chosen and self.protocol == "v1" else chosen


# --- LLM servers -----------------------------------------------------------------------------


def _served(check: ServerCheck, listed: list[str], where: str) -> str:
    if check.model:
        need(
            check.model in listed,
            f"model {check.model!r} not served: {where} lists "
            + (_names(listed) if listed else "none"),
        )
        return f"serving {check.model!r}"
    need(bool(listed), f"no model served: {where} lists none")
    return f"serving {_names(listed, 2)}"


def _vllm_models(check: VLLM, reply: Reply, document: Any) -> str:
    data = document.get("data") if isinstance(document, dict) else None
    listed = [str(m.get("id")) for m in data or [] if isinstance(m, dict) and m.get("id")]
    check.notes["models"] = listed[:20]
    check.served = listed
    return _served(check, listed, "/v1/models")


def _generate(what: str) -> Option:
    return Option(
        "generate",
        boolean,
        default=False,
        help=f"ready: also {what} (inference: catches a stuck engine; never with mode=live)",
    )


def _completion_body(check: VLLM) -> bytes:
    model = check.model or (check.served[0] if check.served else "")
    return json.dumps({"model": model, "prompt": "Hi", "max_tokens": 1}).encode()


def _completion(check: ServerCheck, reply: Reply, document: Any) -> str:
    choices = document.get("choices") if isinstance(document, dict) else None
    need(
        isinstance(choices, list) and bool(choices),
        "cannot generate: POST /v1/completions answered HTTP 200 without choices",
    )
    return f"generated 1 token in {reply.elapsed_ms:.0f} ms"


class VLLM(ServerCheck):
    name = "vllm"
    server = "vLLM"
    port = 8000
    description = (
        "vLLM: /health, and ready means /v1/models lists the model; "
        "generate=true also runs a 1-token completion [port 8000]"
    )
    options = server_options(8000, extra=(_generate("a 1-token completion"),))
    live = (Endpoint("/health", "engine up", "engine not healthy"),)
    ready = (*live, Endpoint("/v1/models", "model listed", "models not listed", judge=_vllm_models))
    # vllm/v1/metrics/loggers.py (PrometheusStatLogger): labels model_name, engine;
    # the token counters move at every engine step.
    metrics = ServerMetrics(
        _watch(
            {
                "vllm:num_requests_running": "requests running",
                "vllm:num_requests_waiting": "waiting",
            },
            (
                "vllm:generation_tokens_total",
                "vllm:prompt_tokens_total",
                "vllm:request_success_total",
            ),
            "token processed",
        ),
        labels=(("model_name", "model"),),
    )
    generate_endpoint = Endpoint(
        "/v1/completions",
        "generation",
        "cannot generate",
        method="POST",
        body=_completion_body,
        judge=_completion,
        canary=True,
    )
    generate: bool

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.served: list[str] = []

    def canary_endpoints(self) -> tuple[Endpoint, ...]:
        return (self.generate_endpoint,) if self.generate else ()


def _tgi_info(check: TGI, reply: Reply, document: Any) -> str:
    info = document if isinstance(document, dict) else {}
    model = info.get("model_id")
    version = info.get("version")
    if isinstance(version, str):
        check.notes["server_version"] = clip(version, 40)
    listed = [str(model)] if model else []
    check.notes["models"] = listed
    return _served(check, listed, "/info")


def _tgi_generated(check: TGI, reply: Reply, document: Any) -> str:
    text_ = document.get("generated_text") if isinstance(document, dict) else None
    need(
        isinstance(text_, str),
        f"cannot generate: POST /generate answered {reply.status_line} without generated_text",
    )
    return f"generated 1 token in {reply.elapsed_ms:.0f} ms"


class TGI(ServerCheck):
    name = "tgi"
    server = "TGI"
    port = 80
    # /health runs a request through every shard, queued behind the load.
    timeout = 10.0
    description = (
        "Text Generation Inference: live /info (the router, never queued); ready also "
        "/health (every shard, queued behind the load); generate=true: POST /generate, "
        "1 new token [port 80, as in its image]"
    )
    options = server_options(80, extra=(_generate("generate 1 new token"),))
    # router/src/server.rs and backends/v3/src (metrics-exporter-prometheus: no
    # _total suffix): tgi_batch_inference_success moves at every prefill and decode step.
    metrics = ServerMetrics(
        _watch(
            {"tgi_batch_current_size": "requests in the batch", "tgi_queue_size": "queued"},
            ("tgi_batch_inference_success", "tgi_request_success"),
            "generation step",
            lazy=True,
        ),
    )
    # The router answers /info from memory (router/src/server.rs: get_model_info
    # returns the Info it was started with); /health calls every shard over gRPC,
    # behind the batches in flight (TGI #3241: a full queue fails it).
    live = (Endpoint("/info", "router up", "router not answering"),)
    ready = (
        Endpoint("/health", "shards healthy", "not healthy"),
        Endpoint("/info", "model", "no model info", judge=_tgi_info),
    )
    generate_endpoint = Endpoint(
        "/generate",
        "generation",
        "cannot generate",
        method="POST",
        body=lambda check: json.dumps(
            {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
        ).encode(),
        judge=_tgi_generated,
        canary=True,
    )
    generate: bool

    def canary_endpoints(self) -> tuple[Endpoint, ...]:
        return (self.generate_endpoint,) if self.generate else ()


class SGLang(ServerCheck):
    name = "sglang"
    server = "SGLang"
    port = 30000
    timeout = 10.0
    description = (
        "SGLang: live /get_model_info (the API server, never queued); ready /health "
        "(one real token); generate=true uses /health_generate [port 30000]"
    )
    options = server_options(
        30000, model=False, extra=(_generate("run /health_generate (seconds under load)"),)
    )
    # /health and /health_generate are one handler (http_server.py: health_generate)
    # that queues a 1-token request for the scheduler and polls once a second for
    # up to SGLANG_HEALTH_CHECK_TIMEOUT (20 s) for any scheduler output: a long
    # prefill fails it (SGLang #22511). /get_model_info answers from the API
    # server's own state.
    live = (Endpoint("/get_model_info", "server up", "server not answering"),)
    ready = (Endpoint("/health", "server healthy", "server not healthy"),)
    generate_endpoint = Endpoint(
        "/health_generate", "generation healthy", "cannot generate", canary=True
    )
    # python/sglang/srt/metrics/collector.py: the token counters move only when a
    # request finishes; the inter-token-latency histogram's count as tokens reach
    # the tokenizer manager (tokenizer_manager.py, collect_metrics).
    metrics = ServerMetrics(
        _watch(
            {"sglang:num_running_reqs": "requests running", "sglang:num_queue_reqs": "queued"},
            (
                "sglang:inter_token_latency_seconds_count",
                "sglang:time_to_first_token_seconds_count",
                "sglang:generation_tokens_total",
                "sglang:num_requests_total",
            ),
            "token generated",
        ),
        missing="SGLang serves /metrics only when started with --enable-metrics",
    )
    generate: bool

    def endpoints(self) -> tuple[Endpoint, ...]:
        # generate=true: the same one-token request, after an answer that does not
        # wait for the scheduler, so that a timeout shows the contrast.
        return self.live if self.generate else tuple(super().endpoints())

    def canary_endpoints(self) -> tuple[Endpoint, ...]:
        return (self.generate_endpoint,) if self.generate else ()


def _ollama_tags(check: Ollama, reply: Reply, document: Any) -> str:
    models = document.get("models") if isinstance(document, dict) else None
    listed = [str(m.get("name")) for m in models or [] if isinstance(m, dict) and m.get("name")]
    wanted = check.model or ""
    full = wanted if ":" in wanted else f"{wanted}:latest"
    need(
        wanted in listed or full in listed,
        f"model {wanted!r} not pulled: /api/tags lists " + (_names(listed) if listed else "none"),
    )
    check.found = wanted if wanted in listed else full
    return f"model {wanted!r} present"


def _ollama_ps(check: Ollama, reply: Reply, document: Any) -> str:
    models = document.get("models") if isinstance(document, dict) else None
    loaded = [str(m.get("name")) for m in models or [] if isinstance(m, dict)]
    state = "loaded" if check.found in loaded else "not loaded (loads on first request)"
    check.notes["model_loaded"] = check.found in loaded
    return state


def _ollama_body(check: Ollama) -> bytes:
    """infer= for /api/generate: the model of model= and one answer, not a stream."""
    from torchprobe.checks import canary

    raw = canary.body(check)
    try:
        request = json.loads(raw)
    except ValueError:
        return raw  # content-type= said it is not JSON: sent as it is
    if isinstance(request, dict):
        request.setdefault("model", check.model)
        request["stream"] = False  # a stream is NDJSON, not one JSON answer
        return json.dumps(request).encode()
    return raw


class Ollama(ServerCheck):
    name = "ollama"
    server = "Ollama"
    port = 11434
    description = (
        "Ollama: / answers; with model=, /api/tags lists it (/api/ps: loaded?); "
        "infer= posts to /api/generate, not streamed [port 11434]"
    )
    options = server_options(11434, extra=CANARY_OPTIONS)
    inference = infer_endpoint(
        "/api/generate", body=_ollama_body, missing="model {model} not found"
    )
    metrics = NoMetrics("Ollama has no metrics endpoint")
    live = ready = (
        Endpoint("/", "server running", "server not running"),
        Endpoint(
            "/api/tags", "model present", "models not listed", needs="model", judge=_ollama_tags
        ),
        Endpoint("/api/ps", "loaded", needs="model", judge=_ollama_ps, info=True),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.found = ""

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.live[:1] if self.mode == "live" else tuple(self.ready)


# --- General serving frameworks --------------------------------------------------------------


def _ray_routes(check: RayServe, reply: Reply, document: Any) -> str:
    routes = document if isinstance(document, dict) else {}
    pairs = [(str(k), str(v)) for k, v in routes.items()]
    check.notes["routes"] = dict(pairs[:20])
    if check.app:
        found = [(r, a) for r, a in pairs if check.app in (r, a)]
        listed = [f"{a} at {r}" for r, a in pairs]
        need(
            bool(found),
            f"application {check.app!r} not deployed: /-/routes lists "
            + (", ".join(listed[:5]) if listed else "none"),
        )
        check.route = found[0][0]
        return f"application {found[0][1]!r} at {found[0][0]}"
    need(bool(pairs), "no application deployed: /-/routes lists none")
    return f"{len(pairs)} application{'s' if len(pairs) > 1 else ''}"


def _ray_applications(check: RayServe, reply: Reply, document: Any) -> str:
    """The Serve REST API's view: each application's status (RUNNING, DEPLOYING, ...)."""
    apps = document.get("applications") if isinstance(document, dict) else None
    found = [(str(name), a) for name, a in (apps or {}).items() if isinstance(a, dict)]
    if check.app:
        found = [(n, a) for n, a in found if check.app in (n, a.get("route_prefix"))]
        need(bool(found), f"application {check.app!r} unknown to the Serve API")
    check.notes["applications"] = {n: str(a.get("status", "?")) for n, a in found}
    bad = [(n, a) for n, a in found if a.get("status") != "RUNNING"]
    if bad:
        name, app = bad[0]
        why = clip(str(app.get("message") or ""), 160, squeeze=True)
        cause = _ray_deployment_cause(app)
        raise CheckFailed(
            f"application {name!r} is {app.get('status', '?')}"
            + (f": {why}" if why else "")
            + (f" ({cause})" if cause else "")
            + (f" (and {len(bad) - 1} more not RUNNING)" if len(bad) > 1 else "")
        )
    return "RUNNING" if check.app else f"{len(found)} RUNNING"


def _ray_deployment_cause(app: dict[str, Any]) -> str:
    """The first unhealthy deployment and the last line of its message (the exception)."""
    deployments = app.get("deployments")
    for name, deployment in (deployments or {}).items() if isinstance(deployments, dict) else ():
        if not isinstance(deployment, dict) or deployment.get("status") == "HEALTHY":
            continue
        lines = [line.strip() for line in str(deployment.get("message") or "").splitlines()]
        last = next((line for line in reversed(lines) if line), "")
        return f"{name}: {clip(last, 160)}" if last else ""
    return ""


class RayServe(ServerCheck):
    name = "ray"
    server = "Ray Serve"
    port = 8000
    description = (
        "Ray Serve: proxy /-/healthz; ready: /-/routes lists the app (app=), and with "
        "dashboard-url= the Serve API says RUNNING; infer= posts to the app's route "
        "[port 8000]"
    )
    options = server_options(
        8000,
        model=False,
        extra=(
            Option("app", text, help="an application name or route prefix that must be listed"),
            Option(
                "dashboard-url",
                BaseUrlOption(),
                help="Ray's dashboard, e.g. http://127.0.0.1:8265: ready needs RUNNING there",
            ),
            *CANARY_OPTIONS,
        ),
    )
    live = (Endpoint("/-/healthz", "proxy healthy", "proxy not healthy"),)
    ready = (
        *live,
        Endpoint("/-/routes", "routes", "routes not listed", judge=_ray_routes),
        Endpoint(
            "/api/serve/applications/",
            "applications",
            "Serve API not answering",
            needs="dashboard-url",
            base="dashboard-url",
            judge=_ray_applications,
            limit=4 * 1024 * 1024,  # every app with its config and deployments
        ),
    )
    # {route}: the app's route prefix, from /-/routes (probed before it).
    inference = infer_endpoint("{route}", needs="app")
    other_ports = {"dashboard-url": 8265}
    # python/ray/serve/_private/replica.py and router.py, exported with a ray_
    # prefix by Ray's metrics agent (counters with _total).
    metrics = ServerMetrics(
        _watch(
            {
                "ray_serve_replica_processing_queries": "requests processing",
                "ray_serve_deployment_queued_queries": "queued",
            },
            ("ray_serve_deployment_request_counter_total",),
            "request completed",
        ),
        needs_url=(
            "Ray exports metrics on each node's metrics export port (ray start "
            "--metrics-export-port), not on Serve's, e.g. metrics-url=http://127.0.0.1:8080/metrics"
        ),
    )
    app: str | None
    dashboard_url: Url | None

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.route = ""

    def fields(self) -> dict[str, str]:
        return {**super().fields(), "route": self.route or "/"}


_NOT_HEALTH = '{endpoint!~"/(livez|readyz|healthz|health|metrics)"}'
# Only a 2xx answer is done work: BentoML's traffic timeout (traffic.timeout, 60 s
# by default) answers a wedged request 504 and counts it in request_total, so a
# wedged service whose clients retry moved that counter every timeout (measured
# on BentoML 1.4.40, tests/realservers/test_bentoml.py).
_DONE = '{endpoint!~"/(livez|readyz|healthz|health|metrics)",http_response_code=~"2.."}'


class BentoML(ServerCheck):
    name = "bentoml"
    server = "BentoML"
    port = 3000
    description = "BentoML: /livez, /readyz; infer= posts to /API (api=) [port 3000]"
    options = server_options(
        3000,
        model=False,
        extra=(
            Option("api", text, help="with infer=: the API (method) name, posted to /API"),
            *CANARY_OPTIONS,
        ),
    )
    # src/bentoml/_internal/server/http/instruments.py: per endpoint, with the probe's
    # own /livez, /readyz and /healthz counted too, so those are left out; the
    # counter also per http_response_code.
    metrics = ServerMetrics(
        _watch(
            {
                "bentoml_service_request_in_progress" + _NOT_HEALTH: "requests in progress",
                "bentoml_api_server_request_in_progress" + _NOT_HEALTH: "requests in progress",
            },
            (
                "bentoml_service_request_total" + _DONE,
                "bentoml_api_server_request_total" + _DONE,
            ),
            "request completed",
            lazy=True,
        ),
    )
    live = (Endpoint("/livez", "server live", "server not live"),)
    ready = (Endpoint("/readyz", "server ready", "server not ready"),)
    inference = infer_endpoint("/{api}", needs="api", missing="no API {api}")
    api: str | None

    def fields(self) -> dict[str, str]:
        from urllib.parse import quote

        return {**super().fields(), "api": quote((self.api or "").strip("/"), safe="/")}

    def _shown_fields(self) -> dict[str, str]:
        return {**super()._shown_fields(), "api": repr(self.api or "")}


class LitServe(ServerCheck):
    name = "litserve"
    server = "LitServe"
    port = 8000
    description = (
        "LitServe: /health (200 once its workers are set up); infer= posts to /predict [port 8000]"
    )
    options = server_options(
        8000,
        model=False,
        extra=CANARY_OPTIONS,
        token_help="LitServe's API key, sent as 'X-API-Key: TOKEN'",
    )
    token_header = ("X-API-Key", "{}")
    metrics = NoMetrics("LitServe has no metrics endpoint of its own")
    live = ready = (Endpoint("/health", "healthy", "not healthy"),)
    inference = infer_endpoint("/predict", needs=None)
