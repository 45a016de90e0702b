"""A real MLServer 1.7 with a tiny torch model in a custom runtime, for the preset tests.

Usage: python mlserver_app.py HTTP_PORT GRPC_PORT REPOSITORY_DIR METRICS_PORT

HTTP, gRPC and the Prometheus metrics server (``/metrics``; MLServer's default port,
8082, is fixed, so the test gives a free one) on the given ports, no parallel
inference workers (models load in the server's own process). REPOSITORY_DIR (made if
missing) gets a model-settings folder per model, so that the model repository API can
load and unload them:

- ``tiny`` (version ``1``): a ``torch.nn.Linear(4, 2)`` built in ``load()`` (nothing
  downloaded); loaded at start, ready.
- ``broken``: its ``load()`` finds no weights and returns False: once loaded
  (``POST /v2/repository/models/broken/load``) it is registered but not ready.
- ``crashy``: its ``load()`` raises: MLServer drops it from the registry (and a model
  that fails like this at start-up stops the whole server, so it is not loaded then).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import switches
import torch
from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse

# The runtime's import path in model-settings.json: this file, imported by name.
MODULE = "mlserver_app"


class TinyTorchModel(MLModel):
    async def load(self) -> bool:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 4))  # one real forward pass before saying ready
        self._net = net
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = NumpyCodec.decode_input(payload.inputs[0])
        if not hasattr(self, "_device"):
            self._device = asyncio.Semaphore(1)  # one request on the model at a time
        async with self._device:
            out = await asyncio.to_thread(self._compute, data)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("output", out)]
        )

    def _compute(self, data: np.ndarray) -> np.ndarray:
        """In a thread: the switches of switches.py (wedge, slow, soft-fail) apply here."""
        switches.hold()
        if switches.soft_failed():
            return np.zeros((0, 2), dtype=np.float32)
        with torch.no_grad():
            return self._net(torch.as_tensor(data, dtype=torch.float32).reshape(-1, 4)).numpy()


class BrokenTorchModel(TinyTorchModel):
    async def load(self) -> bool:
        await asyncio.sleep(0.2)
        try:
            torch.load("/nonexistent/broken.pt", weights_only=True)
        except OSError as exc:
            print(f"broken: load failed: {exc}", flush=True)
            return False  # registered, not ready
        return True


class CrashyTorchModel(TinyTorchModel):
    async def load(self) -> bool:
        raise RuntimeError("crashy: weights are corrupt")


MODELS = {
    "tiny": {"implementation": f"{MODULE}.TinyTorchModel", "parameters": {"version": "1"}},
    "broken": {"implementation": f"{MODULE}.BrokenTorchModel"},
    "crashy": {"implementation": f"{MODULE}.CrashyTorchModel"},
}


def write_repository(root: Path) -> None:
    for name, settings in MODELS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))


def main() -> None:
    http_port, grpc_port, root = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    write_repository(root)
    settings = Settings(
        host="127.0.0.1",
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_endpoint="/metrics",
        metrics_port=int(sys.argv[4]),
        parallel_workers=0,
        model_repository_root=str(root),
        load_models_at_startup=False,
        debug=False,
    )
    tiny = ModelSettings(name="tiny", **MODELS["tiny"])
    asyncio.run(MLServer(settings).start([tiny]))


if __name__ == "__main__":
    main()
