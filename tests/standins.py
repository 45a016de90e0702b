"""Stand-ins for the model servers that cannot run on a CPU-only machine.

Triton, vLLM, TGI, SGLang and Ollama need a GPU or ship as binaries or
images, so the preset tests talk to these instead: real HTTP servers
(``http.server`` on 127.0.0.1, an ephemeral port) that answer the health
endpoints exactly as each server's documentation and source say — status
codes, bodies, content types, slow answers — including the fake-dead states
that make a plain ``curl`` lie: an engine that is up but serves no model, a
model listed but generation broken, health that takes over a second.

Each stand-in keeps its state in plain attributes a test flips while the
server runs::

    with VLLM(models=["facebook/opt-125m"]) as server:
        server.engine_dead = True
        run_cli(f"vllm:url={server.url}")

``hang`` lists paths whose requests are held unanswered until the server
stops (a wedged worker); ``delay`` adds seconds before an answer.

The paths a server's engine answers (``engine``: inference, and the health
endpoints that run a request through the model) queue for one of ``workers``
slots and hold it ``busy`` seconds, as on the real server: with more requests
in flight than workers, each waits for the ones ahead of it. ``soft_failed``
makes inference answer 200 with empty results (a model that failed to load
behind a server that still says "ready").
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

__all__ = ["SGLang", "StandIn", "TGI", "Ollama", "Triton", "VLLM", "load"]

Answer = tuple[int, bytes, str]
EMPTY = "text/plain; charset=utf-8"


def _json(status: int, document: Any) -> Answer:
    return status, json.dumps(document).encode(), "application/json"


class StandIn:
    """A server's HTTP API, run in threads of the test process."""

    server_header = "uvicorn"
    #: The port it listens on, on 127.0.0.1 (0: a free one).
    port = 0
    #: Paths (regular expressions) the engine answers: they queue for a worker.
    engine: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.hang: set[str] = set()
        self.delay: dict[str, float] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.workers = 1
        self.busy = 0.0
        self.soft_failed = False
        self._turns = threading.Condition()
        self._waiting: deque[object] = deque()
        self._running = 0
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what a stand-in defines -----------------------------------------------------

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    # -- running -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    def __enter__(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def version_string(self) -> str:
                return stand_in.server_header

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                stand_in.requests.append((self.command, path, headers, body))
                if path in stand_in.hang:
                    stand_in._stopping.wait()
                    return
                if stand_in.delay.get(path):
                    if stand_in._stopping.wait(stand_in.delay[path]):
                        return
                if not stand_in._work(path):
                    return
                status, payload, kind = stand_in.answer(self.command, path, headers, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a probe's timeout under load)

            do_GET = do_POST = do_HEAD = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _work(self, path: str) -> bool:
        """An engine path waits its turn (first come, first served) for one of
        ``workers`` and holds it ``busy`` s; False if the server is stopping."""
        if not any(re.fullmatch(pattern, path) for pattern in self.engine):
            return True
        me = object()
        with self._turns:
            self._waiting.append(me)
            while self._running >= self.workers or self._waiting[0] is not me:
                if self._stopping.is_set():
                    self._waiting.remove(me)
                    self._turns.notify_all()
                    return False
                self._turns.wait(0.05)
            self._waiting.popleft()
            self._running += 1
            self._turns.notify_all()
        try:
            return not self._stopping.wait(self.busy) if self.busy else True
        finally:
            with self._turns:
                self._running -= 1
                self._turns.notify_all()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()


class Triton(StandIn):
    """Triton's HTTP/REST endpoints (KServe v2): health and model readiness are a
    status code with an empty body — 200, or 400 when not live/ready, and 400
    too for a model Triton does not know. Inference (``POST .../infer``) runs a
    stand-in model: ``OUTPUT0`` is the sum of ``INPUT0`` (all zeros when
    ``soft_failed``)."""

    server_header = ""
    engine = (r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer",)

    def __init__(self, models: dict[str, dict[str, bool]] | None = None) -> None:
        super().__init__()
        self.live = True
        self.ready = True
        #: model -> version -> ready
        self.models = models if models is not None else {"resnet50": {"1": True}}

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v2/health/live":
            return (200 if self.live else 400), b"", EMPTY
        if path == "/v2/health/ready":
            return (200 if self.ready and self.live else 400), b"", EMPTY
        if path == "/v2":
            return _json(200, {"name": "triton", "version": "2.50.0", "extensions": []})
        match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/ready", path)
        if match:
            ready = self._model_ready(unquote(match.group(1)), match.group(2))
            return (200 if ready else 400), b"", EMPTY
        match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer", path)
        if match and method == "POST":
            return self._infer(unquote(match.group(1)), match.group(2), body)
        return _json(400, {"error": "Not Found"})

    def _model_ready(self, model: str, version: str | None) -> bool:
        versions = self.models.get(model, {})
        return versions.get(version, False) if version else any(versions.values())

    def _infer(self, model: str, version: str | None, body: bytes) -> Answer:
        versions = self.models.get(model, {})
        if not self._model_ready(model, version):
            return _json(400, {"error": f"Request for unknown model: '{model}' is not found"})
        try:
            inputs = json.loads(body)["inputs"]
            data = [float(x) for x in inputs[0]["data"]]
        except (ValueError, KeyError, IndexError, TypeError):
            return _json(400, {"error": "failed to parse the request JSON buffer"})
        total = 0.0 if self.soft_failed else sum(data)
        output = {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 1], "data": [total]}
        shown = version or max(v for v, ready in versions.items() if ready)
        return _json(200, {"model_name": model, "model_version": shown, "outputs": [output]})


class VLLM(StandIn):
    """vLLM's OpenAI-compatible server. ``/health`` only reads the engine's error
    flag (200, or 503 once the engine is dead); ``/v1/*`` needs the API key
    when one is set (401 ``{"error": "Unauthorized"}``), ``/health`` never does.
    Completions queue for the engine; ``soft_failed`` answers them with no choices."""

    engine = ("/v1/completions",)

    def __init__(self, models: list[str] | None = None, api_key: str | None = None) -> None:
        super().__init__()
        self.models = models if models is not None else ["facebook/opt-125m"]
        self.api_key = api_key
        self.engine_dead = False
        #: The fake-dead state: listed, healthy, and every generation fails.
        self.generation_broken = False

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/health":
            return (503 if self.engine_dead else 200), b"", EMPTY
        if path.startswith("/v1/") and self.api_key is not None:
            if headers.get("authorization") != f"Bearer {self.api_key}":
                return _json(401, {"error": "Unauthorized"})
        if path == "/v1/models" and method == "GET":
            data = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "vllm",
                 "root": m, "parent": None, "max_model_len": 2048, "permission": []}
                for m in self.models
            ]  # fmt: skip
            return _json(200, {"object": "list", "data": data})
        if path == "/v1/completions" and method == "POST":
            request = json.loads(body or b"{}")
            if request.get("model") not in self.models:
                error = {
                    "object": "error",
                    "message": f"The model `{request.get('model')}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
                return _json(404, error)  # fmt: skip
            if self.generation_broken or self.engine_dead:
                error = {
                    "object": "error",
                    "message": "EngineCore encountered an issue.",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
                return _json(500, error)  # fmt: skip
            choice = {"index": 0, "text": " Hello", "logprobs": None, "finish_reason": "length"}
            choices = [] if self.soft_failed else [choice]
            return _json(200, {"id": "cmpl-1", "object": "text_completion", "created": 1,
                               "model": request["model"], "choices": choices,
                               "usage": {"prompt_tokens": 1, "total_tokens": 2,
                                         "completion_tokens": 1}})  # fmt: skip
        return _json(404, {"detail": "Not Found"})


class TGI(StandIn):
    """Text Generation Inference (the router): ``/health`` runs a real check of
    every shard — 200 with an empty body, or 503 with a JSON error — and can be
    slow under load; ``/info`` carries the model id and the version. ``/health``
    and ``/generate`` queue for the shards (TGI #3241: a full queue fails
    ``/health``); the router answers ``/info`` from memory."""

    server_header = ""
    engine = ("/health", "/generate")

    def __init__(self, model_id: str = "bigscience/bloom-560m") -> None:
        super().__init__()
        self.model_id = model_id
        self.healthy = True

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/health":
            if self.healthy:
                return 200, b"", EMPTY
            return _json(503, {"error": "unhealthy", "error_type": "healthcheck"})
        if path == "/info":
            return _json(200, {
                "model_id": self.model_id, "model_sha": None, "model_dtype": "torch.float16",
                "model_device_type": "cuda", "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128, "max_input_tokens": 1024,
                "max_total_tokens": 2048, "version": "2.4.1", "sha": None,
                "docker_label": None,
            })  # fmt: skip
        if path == "/generate" and method == "POST":
            if not self.healthy:
                return _json(500, {"error": "Request failed during generation: Server error: "
                                            "CUDA error", "error_type": "generation"})  # fmt: skip
            return _json(200, {"generated_text": " Hello"})
        return 404, b"", EMPTY


class SGLang(StandIn):
    """SGLang's HTTP server: ``/health`` and ``/health_generate`` run one real
    token of generation and poll for it once a second, so an answer takes at
    least a second; 503 while starting; a wedged scheduler answers 503 only
    after its 20 s health timeout. ``/get_model_info`` answers from the API
    server's own state; ``/generate`` queues for the scheduler."""

    engine = ("/generate",)

    def __init__(self) -> None:
        super().__init__()
        self.starting = False
        self.delay = {"/health": 1.0, "/health_generate": 1.0}

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path in ("/health", "/health_generate"):
            return (503 if self.starting else 200), b"", EMPTY
        if path == "/get_model_info":
            return _json(200, {"model_path": "qwen/qwen2.5-0.5b-instruct", "is_generation": True})
        if path == "/generate" and method == "POST":
            return _json(200, {"text": " Hello", "meta_info": {"completion_tokens": 1}})
        return _json(404, {"detail": "Not Found"})


class Ollama(StandIn):
    """Ollama: ``/`` answers "Ollama is running"; ``/api/tags`` lists the pulled
    models as ``name:tag``; ``/api/ps`` the ones loaded in memory.
    ``/api/generate`` queues for the runner (one request at a time, as
    ``OLLAMA_NUM_PARALLEL=1``); ``soft_failed`` answers with an empty response."""

    server_header = ""
    engine = ("/api/generate",)

    def __init__(self, pulled: list[str] | None = None, loaded: list[str] | None = None) -> None:
        super().__init__()
        self.pulled = pulled if pulled is not None else ["llama3.2:latest", "qwen2.5:0.5b"]
        self.loaded = loaded if loaded is not None else []

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/":
            return 200, b"Ollama is running", EMPTY
        if path == "/api/tags":
            models = [{"name": m, "model": m, "modified_at": "2026-11-01T10:00:00Z",
                       "size": 2019393189, "digest": "a80c4f17acd5", "details": {
                           "format": "gguf", "family": "llama", "parameter_size": "3.2B",
                           "quantization_level": "Q4_K_M"}} for m in self.pulled]  # fmt: skip
            return _json(200, {"models": models})
        if path == "/api/ps":
            models = [{"name": m, "model": m, "size": 3000000000, "size_vram": 3000000000,
                       "expires_at": "2026-11-26T10:05:00Z"} for m in self.loaded]  # fmt: skip
            return _json(200, {"models": models})
        if path == "/api/generate" and method == "POST":
            return self._generate(body)
        return 404, b"404 page not found", EMPTY

    def _generate(self, body: bytes) -> Answer:
        try:
            request = json.loads(body)
        except ValueError:
            return _json(400, {"error": "invalid character 'x' looking for beginning of value"})
        model = str(request.get("model", ""))
        name = model if ":" in model else f"{model}:latest"
        if name not in self.pulled:
            return _json(404, {"error": f"model '{model}' not found"})
        if request.get("stream", True):
            return 200, b'{"response":"Hel","done":false}\n', "application/x-ndjson"
        return _json(200, {"model": model, "created_at": "2026-11-26T10:00:00Z",
                           "response": "" if self.soft_failed else "Hello", "done": True,
                           "done_reason": "stop", "total_duration": 123456789,
                           "eval_count": 1})  # fmt: skip


@contextmanager
def load(
    url: str, body: Any, clients: int, headers: dict[str, str] | None = None
) -> Iterator[list[int]]:
    """``clients`` concurrent POSTs of ``body`` to ``url``, kept in flight while inside.

    Each client sends one request after another until the block ends; the
    statuses of all that completed are yielded (filled in as they complete).
    """
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", **(headers or {})},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False
