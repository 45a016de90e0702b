"""A real LitServe 0.2 server for tests/realservers/test_litserve.py.

    python litserve_app.py --port PORT

Serves ``TinyClassifier`` (a tiny torch model made in ``setup()``) at
``/predict`` with ``litserve.LitServer`` on 127.0.0.1:PORT, on the CPU, one
inference worker and one API server process, in the foreground until SIGTERM.

LitServe's ``/health`` answers 200 "ok" only when every inference worker has
finished ``setup()`` and ``LitAPI.health()`` returns True, else 503 "not
ready". With one worker LitServe does not even listen until that worker's
setup is done (``LitServer.run`` waits for one READY worker before it starts
uvicorn). Markers let a test steer it:

    LITSERVE_APP_SETUP_GATE=PATH    setup() waits while PATH exists (a slow model
                                    load); it writes PATH.started when it begins
    LITSERVE_APP_NOT_HEALTHY=PATH   LitAPI.health() returns False while PATH exists
    CANARY_SWITCHES=DIR             predict() obeys the switches of switches.py
                                    (wedge, slow, soft-fail)

``LIT_SERVER_API_KEY`` (read by LitServe itself) makes every endpoint, /health
included, require the header ``X-API-Key: KEY``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import litserve
import switches
import torch

LABELS = ["cat", "dog", "bird"]


def _marker(name: str) -> Path | None:
    path = os.environ.get(name)
    return Path(path) if path else None


class TinyClassifier(litserve.LitAPI):
    """A tiny real torch classifier: four features in, one of three labels out."""

    def setup(self, device: str) -> None:
        gate = _marker("LITSERVE_APP_SETUP_GATE")
        if gate is not None:
            Path(f"{gate}.started").write_text(f"{os.getpid()}\n")
            while gate.exists():
                time.sleep(0.1)
        torch.manual_seed(0)
        torch.set_num_threads(1)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        ).eval()

    def decode_request(self, request: dict[str, object]) -> torch.Tensor:
        return torch.tensor(request["inputs"], dtype=torch.float32)

    def predict(self, x: torch.Tensor) -> list[str]:
        switches.hold()
        if switches.soft_failed():
            return []
        with torch.inference_mode():
            scores = self.model(x)
        return [LABELS[int(i)] for i in scores.argmax(dim=1)]

    def encode_response(self, output: list[str]) -> dict[str, object]:
        return {"labels": output}

    def health(self) -> bool:
        marker = _marker("LITSERVE_APP_NOT_HEALTHY")
        return marker is None or not marker.exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = litserve.LitServer(
        TinyClassifier(), accelerator="cpu", devices=1, workers_per_device=1, timeout=10
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
