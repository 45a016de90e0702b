"""A real BentoML 1.4 server for tests/realservers/test_bentoml.py.

    python bentoml_app.py --port PORT

Serves the service ``TinyClassifier`` (a tiny torch model made here, one
worker) with ``bentoml serve`` on 127.0.0.1:PORT, in the foreground, in this
process (``exec``), until SIGTERM.

BentoML asks the service itself: ``/readyz`` calls ``__is_ready__()`` and
``/livez`` calls ``__is_alive__()``; either answers 503 when its method returns
False. Here they return False while a marker file exists, so a test can flip
the states at run time:

    BENTOML_APP_NOT_READY=PATH   /readyz answers 503 while PATH exists
    BENTOML_APP_NOT_ALIVE=PATH   /livez answers 503 while PATH exists
    CANARY_SWITCHES=DIR          the API obeys the switches of switches.py (wedge,
                                 slow, soft-fail), one request at a time (one device)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    service = f"{Path(__file__).stem}:TinyClassifier"
    command = [sys.executable, "-m", "bentoml", "serve", service, "--working-dir", str(here),
               "--host", "127.0.0.1", "--port", str(args.port)]  # fmt: skip
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()  # execs `bentoml serve` of this module: never returns; bentoml loads it again

import threading  # noqa: E402

import bentoml  # noqa: E402
import switches  # noqa: E402
import torch  # noqa: E402

LABELS = ["cat", "dog", "bird"]


def _marker(name: str) -> bool:
    path = os.environ.get(name)
    return bool(path) and Path(path).exists()


@bentoml.service(workers=1, traffic={"timeout": 10})
class TinyClassifier:
    """A tiny real torch classifier: four features in, one of three labels out."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        torch.set_num_threads(1)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        ).eval()
        self.device = threading.Lock()

    def __is_ready__(self) -> bool:
        return not _marker("BENTOML_APP_NOT_READY")

    def __is_alive__(self) -> bool:
        return not _marker("BENTOML_APP_NOT_ALIVE")

    @bentoml.api
    def classify(self, inputs: list[list[float]]) -> list[str]:
        with self.device:
            switches.hold()
            if switches.soft_failed():
                return []
            return self._labels(inputs)

    def _labels(self, inputs: list[list[float]]) -> list[str]:
        with torch.inference_mode():
            scores = self.model(torch.tensor(inputs, dtype=torch.float32))
        return [LABELS[int(i)] for i in scores.argmax(dim=1)]
