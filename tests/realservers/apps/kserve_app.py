"""A real KServe 0.21 Python model server with a tiny torch model, for the preset tests.

Usage: python kserve_app.py HTTP_PORT

HTTP only (gRPC disabled). Models:

- ``tiny``: a ``kserve.Model`` wrapping a ``torch.nn.Linear(4, 2)`` built here (nothing
  downloaded); ready.
- ``broken``: registered, but its ``load()`` fails, so ``self.ready`` stays False.
- ``blocking``: ``tiny`` with a synchronous ``predict()``, which KServe calls on its
  event loop: while it computes, no endpoint of the server answers.

Any other name is unknown to the server. ``tiny``'s inference obeys the
switches of switches.py (``$CANARY_SWITCHES``): wedge, slow, soft-fail. It
runs in a thread, one request at a time (one device), so that a blocked
inference leaves the event loop, and with it the health endpoints, answering.
"""

from __future__ import annotations

import sys

PORT = int(sys.argv[1])
# kserve parses sys.argv when it is imported: give it nothing of ours.
sys.argv = sys.argv[:1]

import asyncio  # noqa: E402

import kserve  # noqa: E402
import switches  # noqa: E402
import torch  # noqa: E402


class TinyModel(kserve.Model):
    """V1 ``{"instances": [[4 floats], ...]}`` → ``{"predictions": [[2 floats], ...]}``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.net: torch.nn.Module | None = None
        self.device = asyncio.Semaphore(1)

    def load(self) -> bool:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 4))  # one real forward pass before saying ready
        self.net = net
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):  # type: ignore[no-untyped-def]
        async with self.device:
            return await asyncio.to_thread(self._compute, payload["instances"])

    def _compute(self, instances: list[list[float]]) -> dict[str, object]:
        assert self.net is not None
        switches.hold()
        if switches.soft_failed():
            return {"predictions": []}
        with torch.no_grad():
            out = self.net(torch.tensor(instances, dtype=torch.float32))
        return {"predictions": out.tolist()}


class BlockingModel(TinyModel):
    """A synchronous predict(), as many models are written: KServe 0.21 calls it on
    the event loop itself (``Model.__call__``), so it holds every other request."""

    def predict(self, payload, headers=None, response_headers=None):  # type: ignore[no-untyped-def,override]
        return self._compute(payload["instances"])


class BrokenModel(TinyModel):
    """Its weights cannot be loaded: registered, never ready."""

    def load(self) -> bool:
        try:
            torch.load("/nonexistent/broken.pt", weights_only=True)
        except OSError as exc:
            print(f"broken: load failed: {exc}", flush=True)
            self.ready = False
        return self.ready


def main() -> None:
    tiny = TinyModel("tiny")
    tiny.load()
    blocking = BlockingModel("blocking")
    blocking.load()
    broken = BrokenModel("broken")
    broken.load()
    server = kserve.ModelServer(http_port=PORT, enable_grpc=False, workers=1)
    # start() registers only the models that are ready and then calls each one's start(),
    # which sets ready = True whatever load() said: register the broken one by hand and
    # keep it out of start(), so that the server knows it and answers "not ready"
    # rather than "not found" (or, worse, "ready").
    server.register_model(broken)
    server.start([tiny, blocking])


if __name__ == "__main__":
    main()
