"""A compose project of the e2e suite, and what Docker says of its containers."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from .conftest import docker

#: A hang guard only: the example's start period (120 s) plus a probe interval
#: (15 s) and a margin; the run takes about 20 s here.
UP_TIMEOUT = 300


class Project:
    """One compose project under a unique name, from a file in ``directory``."""

    def __init__(self, compose: str, directory: Path, spec: dict[str, Any]) -> None:
        self.file = directory / "compose.yaml"
        self.file.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.name = f"torchprobe-e2e-compose-{uuid.uuid4().hex[:8]}"
        self.argv = [compose, "--ansi", "never", "-p", self.name, "-f", str(self.file)]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip

    def up(self) -> subprocess.CompletedProcess[str]:
        """Until the client exits (its exit status is compose's), then stop the rest."""
        return self.run("up", "--exit-code-from", "client", timeout=UP_TIMEOUT)

    def container(self, service: str) -> str | None:
        done = self.run("ps", "-q", service)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip() or None

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", timeout=120)


def inspect(container: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)
    return state


def instant(stamp: str) -> datetime:
    """Docker's RFC 3339 time with up to nanoseconds (datetime keeps microseconds)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp)
    assert match, stamp
    whole = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return whole + timedelta(microseconds=int((match[2] or "0")[:6].ljust(6, "0")))
