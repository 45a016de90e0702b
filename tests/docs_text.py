"""The documentation as the tests read it: README.md and every page under docs/.

Tests that check the commands the documentation shows read them from here, so
an example keeps being checked wherever it moves between the README and the
pages of the site (mkdocs.yml).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def documentation_files() -> list[Path]:
    """README.md, then the site's pages in name order (docs/_hooks holds no page)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def documentation() -> str:
    """All of it as one text, each file starting on a line of its own."""
    return "\n".join(p.read_text(encoding="utf-8") for p in documentation_files())
