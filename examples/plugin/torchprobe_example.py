"""Example torchprobe checks.

``heartbeat`` is a plain function: the serving process touches a file after
each successful inference, and the probe fails when the file goes stale. It
sees what a separate probe process cannot: a server whose CUDA context is
poisoned, or whose worker is stuck in a kernel, stops touching the file.

``model-files`` is a :class:`torchprobe.base.Check` subclass with declared,
typed options and one result line per file.

``tei`` is a model-server preset, the way the built-in ones (``triton``,
``vllm``, ...) are written: Hugging Face Text Embeddings Inference, declared as
its default port and the endpoints that say live and ready.

Both run in a worker process of their own, never in the torchprobe process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torchprobe.base import Check, CheckFailed, Option, Outcome, failed, passed
from torchprobe.checks.server import Endpoint, ServerCheck, server_options
from torchprobe.options import integer, listof, text


def heartbeat(path: str, max_age: str = "60") -> str:
    """The server touched its heartbeat file within max-age seconds."""
    # Options arrive as strings: `heartbeat:path=/run/beat,max-age=30`.
    # A missing file raises FileNotFoundError, which fails the check.
    age = time.time() - os.stat(path).st_mtime
    if age > float(max_age):
        raise CheckFailed(f"{path} is {age:.0f}s old (max-age {max_age}s)", age=round(age, 1))
    return f"{path} touched {age:.1f}s ago"


heartbeat.timeout = 2.0  # type: ignore[attr-defined]  # its default timeout, in seconds


class ModelFiles(Check):
    # No `name`: the entry point's name (model-files) is used.
    description = "model files exist, are readable and at least min-size bytes"
    options = (
        Option(
            "path",
            listof(text),
            required=True,
            help="model files, |-separated: path=/models/a.pt|/models/b.pt",
        ),
        Option("min-size", integer(0), default=1, help="smallest acceptable size in bytes"),
    )
    timeout = 3.0

    path: list[str]  # listof(text) turns a|b into ["a", "b"]
    min_size: int  # `min-size=` arrives converted, as `self.min_size`

    def run(self) -> list[Outcome]:
        outcomes = []
        for index, path in enumerate(self.path):
            try:
                size = os.stat(path).st_size
                with open(path, "rb") as fp:
                    fp.read(1)
            except OSError as exc:
                outcomes.append(failed(f"{path}: {exc.strerror}", target=str(index), path=path))
                continue
            if size < self.min_size:
                message = f"{path}: {size} bytes, fewer than min-size={self.min_size}"
                outcomes.append(failed(message, target=str(index), path=path, size=size))
            else:
                outcomes.append(passed(f"{path}: {size} bytes", target=str(index), size=size))
        return outcomes


def _tei_model(check: ServerCheck, reply: Any, info: Any) -> str:
    """/info names the served model: with model=, it must be that one."""
    served = info.get("model_id") if isinstance(info, dict) else None
    if check.model and served != check.model:
        raise CheckFailed(f"model {check.model!r} not served: /info says {served!r}")
    return f"serving {served!r}"


class TextEmbeddings(ServerCheck):
    server = "Text Embeddings Inference"
    port = 8080
    description = "Text Embeddings Inference: /health, /info model id [port 8080]"
    options = server_options(8080)  # url=, mode=, model=, token=, header=, insecure=
    live = (Endpoint("/health", "healthy", "not healthy"),)
    ready = (*live, Endpoint("/info", "model", "no model info", judge=_tei_model))
