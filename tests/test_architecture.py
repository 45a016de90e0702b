"""The package's layers, as rules on its imports, and the import paths users rely on.

The layout (docs/architecture.md): the command line (``cli/``) over the engine
(``engine/``: plan, deadlines, isolation) over the checks (``checks/``) over the
network layer (``net/``), the GPU knowledge (``gpu/``) and the leaf modules
(``common/``), with the renderers, the ``--report`` diagnostics and the
in-process monitor and its integrations beside them. Nothing imports upward.
Every import counts, those inside functions and under ``TYPE_CHECKING`` too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib
import sys
from importlib import metadata
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "torchprobe"

#: What a module of each part may never import (prefixes of module names).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "torchprobe.checks": (
        "torchprobe.cli",
        "torchprobe.engine",
        "torchprobe.report",
        "torchprobe.inprocess",
        "torchprobe.integrations",
        "torchprobe.renderers",
        "torchprobe.monitor",
        "torchprobe.serve",
    ),
    "torchprobe.engine": (
        "torchprobe.cli",
        "torchprobe.report",
        "torchprobe.renderers",
        "torchprobe.integrations",
        "torchprobe.inprocess",
        "torchprobe.monitor",
        "torchprobe.checks",
        "torchprobe.serve",
    ),
    "torchprobe.inprocess": (
        "torchprobe.cli",
        "torchprobe.engine.loop",
        "torchprobe.engine.worker",
        "torchprobe.engine.workerproc",
        "torchprobe.report",
        "torchprobe.integrations",
        "torchprobe.renderers",
        "torchprobe.serve",
    ),
    "torchprobe.integrations": (
        "torchprobe.cli",
        "torchprobe.engine",
        "torchprobe.report",
        "torchprobe.serve",
    ),
    # The sidecar: rounds in the engine, answers from the renderers; checks
    # only through the engine's registry, never by name.
    "torchprobe.serve": (
        "torchprobe.cli",
        "torchprobe.checks",
        "torchprobe.report",
        "torchprobe.inprocess",
        "torchprobe.integrations",
        "torchprobe.monitor",
    ),
    "torchprobe.report": ("torchprobe.cli", "torchprobe.inprocess", "torchprobe.integrations"),
    "torchprobe.renderers": (
        "torchprobe.cli",
        "torchprobe.engine",
        "torchprobe.checks",
        "torchprobe.report",
        "torchprobe.inprocess",
        "torchprobe.integrations",
        "torchprobe.net",
        "torchprobe.gpu",
        "torchprobe.serve",
        "torchprobe.serve",
    ),
}
#: Parts that import only from the parts named (and the standard library or
#: third-party packages).
ONLY: dict[str, tuple[str, ...]] = {
    "torchprobe.common": ("torchprobe.common", "torchprobe.base", "torchprobe.options"),
    "torchprobe.base": ("torchprobe.common", "torchprobe.options"),
    "torchprobe.options": (),
    "torchprobe.results": ("torchprobe.base",),
    "torchprobe.net": (
        "torchprobe.net",
        "torchprobe.common",
        "torchprobe.base",
        "torchprobe.options",
    ),  # fmt: skip
    "torchprobe.gpu": (
        "torchprobe.gpu",
        "torchprobe.common",
        "torchprobe.base",
        "torchprobe.options",
        "torchprobe.results",
    ),  # fmt: skip
}
#: The only importers of the command line.
CLI_IMPORTERS = ("torchprobe.cli", "torchprobe._entry")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every torchprobe module ``path`` imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "torchprobe":  # from torchprobe import x: x may be a module
                found.extend((node.lineno, f"torchprobe.{a.name}") for a in node.names)
            elif node.module.startswith("torchprobe."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names
                         if a.name.startswith("torchprobe."))  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "<relative import>"))
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


def _violations() -> list[str]:
    bad: list[str] = []
    for path in MODULES:
        importer = _module_name(path)
        for line, imported in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}"
            if imported == "<relative import>":
                bad.append(f"{where} (imports are absolute)")
                continue
            if _under(imported, "torchprobe.cli") and not any(
                _under(importer, p) for p in CLI_IMPORTERS
            ):
                bad.append(f"{where} (only the entry module imports the command line)")
            for part, forbidden in FORBIDDEN.items():
                if _under(importer, part) and any(_under(imported, f) for f in forbidden):
                    bad.append(f"{where} ({part} may not import it)")
            for part, allowed in ONLY.items():
                if _under(importer, part) and not any(_under(imported, a) for a in allowed):
                    bad.append(f"{where} ({part} imports only {', '.join(allowed) or 'nothing'})")
    return bad


def test_nothing_imports_upward() -> None:
    assert MODULES, PACKAGE
    assert not _violations(), "\n".join(_violations())


#: Parts whose modules share only public names: a library two checks need is a
#: module of its own (net/, checks/judge.py), not another check's private names.
PUBLIC_ONLY = ("torchprobe.checks", "torchprobe.net")


def _private_imports(modules: list[Path]) -> list[str]:
    """``from torchprobe.X import _name`` in a module of ``PUBLIC_ONLY`` (a
    private module, ``checks._torch``, imported for its public names is fine)."""
    bad: list[str] = []
    for path in modules:
        if not any(_under(_module_name(path), p) for p in PUBLIC_ONLY):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchprobe"):
                bad.extend(
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                )
    return bad


def test_checks_and_the_network_layer_import_no_private_names() -> None:
    assert not _private_imports(MODULES), "\n".join(_private_imports(MODULES))


def test_the_private_name_rule_catches_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "torchprobe"
    (fake / "checks").mkdir(parents=True)
    bad = fake / "checks" / "bad.py"
    bad.write_text("from torchprobe.checks.http import _UrlOption, HttpCheck, __version__\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _private_imports([bad]) == [
        "torchprobe/checks/bad.py:1: torchprobe.checks.http._UrlOption"
    ]


def test_the_rules_catch_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan itself: a check importing the engine's loop is reported."""
    fake = tmp_path / "torchprobe"
    (fake / "checks").mkdir(parents=True)
    bad = fake / "checks" / "bad.py"
    bad.write_text("def f():\n    from torchprobe.engine.loop import run\n    from . import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", [bad])
    found = _violations()
    assert any("torchprobe.checks may not import it" in v for v in found), found
    assert any("imports are absolute" in v for v in found), found


def test_the_entry_module_imports_only_the_standard_library_at_its_top() -> None:
    """Its signal handlers go in before anything else runs (see its docstring)."""
    tree = ast.parse((PACKAGE / "_entry.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top == "__future__" or top in sys.stdlib_module_names, name


@pytest.mark.parametrize(
    "module",
    [
        "torchprobe.base", "torchprobe.options", "torchprobe.results", "torchprobe.checks.server",
        "torchprobe.monitor", "torchprobe.integrations.metrics", "torchprobe.scrub",
        "torchprobe.spec",
    ],
)  # fmt: skip
def test_the_import_paths_users_and_plugins_use_keep_working(module: str) -> None:
    importlib.import_module(module)


def test_the_model_server_module_keeps_the_names_plugins_import() -> None:
    """``torchprobe.checks.server`` is public (docs/plugins.md): a preset outside
    the package imports the base class, its options and the types of a judge."""
    import torchprobe.checks.server as server

    names = (
        "ANY_2XX", "INFO_TIME", "BaseUrlOption", "Endpoint", "Judge", "Reply", "ServerCheck",
        "Url", "base_url", "exchange", "infer_endpoint", "json_body", "json_mismatch", "need",
        "parse_url", "server_options",
    )  # fmt: skip
    assert [n for n in names if not hasattr(server, n)] == []
    assert [n for n in server.__all__ if not hasattr(server, n)] == []


def test_the_old_monitor_path_is_the_same_module() -> None:
    import torchprobe.inprocess.monitor
    import torchprobe.monitor

    assert torchprobe.monitor is torchprobe.inprocess.monitor
    assert torchprobe.monitor.Monitor is torchprobe.inprocess.monitor.Monitor


def test_the_public_api_is_what_all_says() -> None:
    import torchprobe

    for name in torchprobe.__all__:
        assert getattr(torchprobe, name) is not None, name
    with pytest.raises(AttributeError):
        torchprobe.not_a_public_name  # noqa: B018


def test_the_console_script_and_the_old_entry_point_resolve() -> None:
    (script,) = [e for e in metadata.entry_points(group="console_scripts")
                 if e.name == "torchprobe"]  # fmt: skip
    assert callable(script.load())
    from torchprobe.cli import main
    from torchprobe.cli.command import main as command_main

    assert main is command_main  # torchprobe.cli:main, the entry point of 0.2.0
