"""The ``torch`` marker's guard (tests/conftest.py): where torch is missing, a
test that needs it but is not marked fails and names the fix, rather than pass
for a skip or fail for a reason that hides the cause; a marked test, or one
using a fixture marked ``@needs_torch``, is deselected by ``-m "not torch"``.

Runs pytest on a few sample tests with tests/conftest.py, where a
sitecustomize hides torch from every importer, whether or not it is installed:
importlib.util.find_spec("torch") is None and ``import torch`` raises
"No module named 'torch'", as where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TESTS

SAMPLES = """
import subprocess
import sys

import pytest
from conftest import needs_torch


def test_imports_torch():
    import torch  # noqa: F401


def test_skips_without_torch():
    pytest.importorskip("torch")


def test_requires_the_torch_package():
    from conftest import require

    require(False, "torch==2.13.0 is not installed (pip install torch==2.13.0)")


def test_runs_torch_in_a_subprocess():
    done = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
    print(done.stderr)
    assert done.returncode == 0


@pytest.mark.torch
def test_marked():
    import torch  # noqa: F401


@pytest.fixture
@needs_torch
def model():
    import torch

    return torch


def test_through_a_fixture(model):
    pass


def test_without_torch():
    pass
"""

HIDE_TORCH = """
import sys


class HideTorch:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            return None
        return self.finder.find_spec(name, path, target)


sys.meta_path[:] = [HideTorch(finder) for finder in sys.meta_path]
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_samples.py").write_text(SAMPLES)
    (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
    )  # fmt: skip


def test_an_unmarked_test_that_needs_torch_fails_and_says_how_to_mark_it(tmp_path: Path) -> None:
    done = run(tmp_path, "-m", "not torch")
    out = done.stdout
    assert done.returncode == 1, out
    assert "4 failed, 1 passed, 2 deselected" in out, out
    names = ("imports_torch", "skips_without_torch", "requires_the_torch_package",
             "runs_torch_in_a_subprocess")  # fmt: skip
    for name in names:
        assert f"test_samples.py::test_{name} needs torch, which is not installed here" in out
    assert "mark it @pytest.mark.torch, or its fixture @needs_torch" in out


def test_a_fixture_marked_needs_torch_marks_the_tests_that_use_it(tmp_path: Path) -> None:
    done = run(tmp_path, "-m", "torch", "--collect-only")
    assert done.returncode == 0, done.stdout
    assert "test_samples.py::test_marked" in done.stdout
    assert "test_samples.py::test_through_a_fixture" in done.stdout
    assert "2/7 tests collected (5 deselected)" in done.stdout, done.stdout
