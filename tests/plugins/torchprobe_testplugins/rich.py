"""A plugin written against the rich API: declared options, outcomes per item."""

from __future__ import annotations

from torchprobe.base import Check, Option, Outcome, failed, passed, skipped
from torchprobe.options import boolean, choice, integer


class RichCheck(Check):
    description = "reports one line per item; item N fails when fail-item=N"
    options = (
        Option("items", integer(1, 10), default=2, help="how many result lines"),
        Option("fail-item", integer(0), default=None, help="the item that fails"),
        Option("loud", boolean, default=False, help="longer messages"),
        Option("token", default=None, secret=True, help="a secret"),
        Option("skip", boolean, default=False, help="skip every item"),
        Option("tag", repeatable=True, help="a tag, repeatable"),
    )
    timeout = 3.0

    items: int
    fail_item: int | None
    loud: bool
    token: str | None
    skip: bool
    tag: list[str]

    def run(self) -> list[Outcome]:
        lines = []
        for i in range(self.items):
            message = f"item {i}" + (" is fine, really fine" if self.loud else "")
            if self.tag:
                message += f" [{', '.join(self.tag)}]"
            if self.token:
                message += f" (token {self.token})"
            if self.skip:
                lines.append(skipped("does not apply", target=str(i)))
                continue
            lines.append(
                failed(message, target=str(i), item=i)
                if i == self.fail_item
                else passed(message, target=str(i), item=i)
            )
        return lines


class GateCheck(Check):
    description = "passes; checks readiness unless mode=live (the default is ready)"
    options = (Option("mode", choice("live", "ready"), default="ready", help="live|ready"),)
    timeout = 3.0

    mode: str

    def checks_readiness(self) -> bool:
        return self.mode == "ready"

    def run(self) -> str:
        return f"gate {self.mode}"


class UnsureCheck(Check):
    description = "passes; asking whether it checks readiness raises"

    def checks_readiness(self) -> bool:
        raise RuntimeError("cannot tell")

    def run(self) -> str:
        return "unsure"
