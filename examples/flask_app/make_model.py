"""The example's model: a tiny MLP, trained in code, saved as a state dict.

Nothing is downloaded. Training is seeded and takes a couple of seconds on a CPU,
so the file is the same on every build, and the model really classifies: a
point near centre k of ``CENTRES`` is labelled k.

    python make_model.py /models/model.pt      # or: MODEL_PATH=... python make_model.py
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
from torch import nn

INPUTS = 4
CLASSES = 3
#: One cluster centre per class; the training data are points scattered around them.
CENTRES = (
    (2.0, 0.0, 0.0, 0.0),
    (0.0, 2.0, 0.0, 0.0),
    (0.0, 0.0, 2.0, 2.0),
)


def build_model() -> nn.Module:
    """The architecture; the weights come from the model file."""
    return nn.Sequential(nn.Linear(INPUTS, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def train(seed: int = 0, steps: int = 50) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    centres = torch.tensor(CENTRES)
    labels = torch.arange(CLASSES).repeat_interleave(64)
    points = centres[labels] + 0.5 * torch.randn(len(labels), INPUTS, generator=generator)
    model = build_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(points), labels)
        loss.backward()
        optimiser.step()
    return model.eval()


def write_model(path: str, seed: int = 0) -> None:
    """Train and save atomically: a reader never sees a half-written file."""
    model = train(seed)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fp:
            torch.save(model.state_dict(), fp)
        # mkstemp makes the file private (0600); a model file is read by the
        # service's own user, so give it the usual mode under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else os.environ.get("MODEL_PATH", "")
    if not path:
        print("usage: make_model.py PATH (or set MODEL_PATH)", file=sys.stderr)
        return 1
    write_model(path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
