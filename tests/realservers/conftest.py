"""Real-server tests: make every venv this session will need, at once.

A module ``test_NAME.py`` here uses the venv of ``envs/NAME.txt``. When the
first of these tests is about to run, the installs of all of them start
together (they wait on the network more than on the CPU), and each module then
waits only for its own. They start no earlier, so that they do not load the
machine while the timing-sensitive tests of the rest of the suite run.
"""

from __future__ import annotations

import pytest

from .harness import ENVS, start_builds

_needed: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        stem = item.path.stem
        if item.path.parent == ENVS.parent and stem.startswith("test_"):
            name = stem.removeprefix("test_")
            if name not in _needed and item.get_closest_marker("integration"):
                _needed.append(name)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.path.parent == ENVS.parent:
        start_builds(_needed)
