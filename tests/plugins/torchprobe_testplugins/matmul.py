"""``tensor`` with a product that is wrong on purpose, the way a corrupting
device would be: ``verify=matmul`` must catch it."""

from __future__ import annotations

from typing import Any

from torchprobe.base import Option
from torchprobe.checks.tensor import TensorCheck
from torchprobe.options import choice, number


class WrongMatmul(TensorCheck):
    # Empty, so the plugin loader names it after its entry point, not "tensor".
    name = ""
    description = "tensor whose matmul product is wrong on purpose (fault=off|nan)"
    options = (
        *TensorCheck.options,
        Option("fault", choice("off", "nan"), default="off",
               help="off: the largest element off by a relative by=; nan: that element NaN"),
        Option("by", number(0), default=0.01, help="fault=off: the relative error"),
    )  # fmt: skip

    fault: str
    by: float

    def product(self, a: Any, b: Any) -> Any:
        result = super().product(a, b)
        # The largest element: there a relative error is largest against the
        # check's scale |A| |B|, so the smallest fault the check can see.
        flat = result.view(-1)
        index = int(flat.abs().argmax())
        flat[index] = float("nan") if self.fault == "nan" else flat[index] * (1 + self.by)
        return result
