"""Real-server tests: start making every venv this session will need, at once.

A module ``test_NAME.py`` here uses the venv of ``envs/NAME.txt``; the installs
overlap (they wait on the network), and each module waits only for its own.
"""

from __future__ import annotations

import pytest

from .harness import ENVS, start_builds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    names = []
    for item in items:
        stem = item.path.stem
        if item.path.parent == ENVS.parent and stem.startswith("test_"):
            name = stem.removeprefix("test_")
            if name not in names and item.get_closest_marker("integration"):
                names.append(name)
    start_builds(names)
