"""MkDocs hook: links from a page to the repository's own files.

A page links to ``../examples/compose.yaml`` or ``../examples/flask_app``, which
is right where the Markdown is read on GitHub, but is outside ``docs_dir``:
MkDocs would report it as not found. This hook adds each such target that
exists to the site, under ``repo/`` (a file as it is, a directory as a page
listing its files), so the link works in the site as well; a target that does
not exist is left alone, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import html
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

#: ``](target)`` of a Markdown link or image; the target ends at ``)``, ``#`` or a space.
LINK = re.compile(r"\]\(([^)#\s]+)")
#: Files a directory listing leaves out: build and cache debris.
#: ``..`` in the path would match MkDocs' default exclusion of dot-names.
INCLUDED = InclusionLevel.INCLUDED
SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    added: set[str] = set()
    for page in files.documentation_pages():
        if page.abs_src_path is None:
            continue
        source = Path(page.abs_src_path).read_text(encoding="utf-8")
        for target in LINK.findall(source):
            if "://" in target or target.startswith(("/", "mailto:")):
                continue
            uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.src_uri), target))
            if not uri.startswith("../") or uri in added:
                continue
            path = (docs / uri).resolve()
            if repo not in path.parents or not path.exists():
                continue
            inside = path.relative_to(repo).as_posix()
            if path.is_dir():
                entries = (p for p in path.iterdir() if p.name not in SKIP)
                listing = sorted(p.name + "/" * p.is_dir() for p in entries)
                items = "".join(f"<li><code>{html.escape(n)}</code></li>" for n in listing)
                body = f"<h1><code>{html.escape(inside)}/</code></h1><ul>{items}</ul>"
                file = File.generated(config, uri, content=body, inclusion=INCLUDED)
                file.dest_uri = f"repo/{inside}/index.html"
            else:
                file = File.generated(config, uri, abs_src_path=str(path), inclusion=INCLUDED)
                file.dest_uri = f"repo/{inside}"
            files.append(file)
            added.add(uri)
    return files
