"""The documentation against the repository and the command: README.md and docs/.

``mkdocs build --strict`` (.ci/run) fails on a broken link or anchor inside
docs/ and on a page missing from the nav, but never reads the README, and
needs MkDocs installed; these tests need neither. They read links as GitHub
renders the files, where README.md and docs/*.md are read too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli
from docs_text import ROOT, documentation, documentation_files

#: The README's budget: the set-up commands, snippets and links; the rest is in docs/.
README_LIMIT = 12 * 1024


def _outside_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans, where a
    ``](...)`` is an example, not a link."""
    kept, fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            kept.append(re.sub(r"`[^`\n]*`", "", line))
    return "\n".join(kept)


def _headings(text: str) -> list[str]:
    kept, fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            kept.append(line.lstrip("#").strip())
    return kept


def github_anchors(path: Path) -> set[str]:
    """The ids GitHub gives a Markdown file's headings: the text without
    markup, lower case, punctuation dropped, each space a hyphen; a repeated
    one gets -1, -2, ..."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _headings(path.read_text(encoding="utf-8")):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: Path) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", _outside_code(path.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z][a-z+.-]*:", link)]


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    broken, checked = [], 0
    for page in documentation_files():
        for link in relative_links(page):
            checked += 1
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            where = f"{page.relative_to(ROOT)}: {link}"
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in github_anchors(path):
                broken.append(f"{where} (no heading with that anchor)")
    assert checked >= 100, checked  # the pages do link to each other
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Sub `x=` section\n\n[a](#sub-x-section) `[b](nope.md)`\n")
    assert github_anchors(page) == {"a-page", "sub-x-section"}
    assert relative_links(page) == ["#sub-x-section"]


def test_the_readme_stays_within_its_budget() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes: move detail to docs/"


def test_the_readme_links_into_every_docs_page() -> None:
    linked = {
        (ROOT / link.partition("#")[0]).resolve() for link in relative_links(ROOT / "README.md")
    }
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages <= linked, sorted(p.name for p in pages - linked)


def test_the_site_nav_lists_every_page() -> None:
    """What mkdocs build --strict enforces, without MkDocs installed."""
    nav = re.findall(
        r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M
    )
    docs = ROOT / "docs"
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    assert sorted(nav) == pages


def test_the_options_table_lists_every_option_of_the_command() -> None:
    help_text = run_cli("--help").stdout
    options = re.findall(r"^  (?:-\w, )?(--[a-z][a-z-]+)", help_text, re.M)
    assert len(options) >= 15, options
    table = re.findall(r"^\| (?:`-\w`, )?`(--[a-z][a-z-]+)", documentation(), re.M)
    assert set(options) <= set(table), sorted(set(options) - set(table))


def test_the_json_example_has_the_keys_of_a_real_report() -> None:
    text = documentation()
    start = text.index("$ torchprobe --format json http:")
    example = json.loads(text[text.index("{", start) : text.index("\n}\n", start) + 2])
    real = json.loads(run_cli("--format", "json", "tcp:address=127.0.0.1:1").stdout)
    assert list(example) == list(real)
    assert [list(c) for c in example["checks"]] == [list(real["checks"][0])] * 2
