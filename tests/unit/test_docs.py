"""The documentation stays inside the repository: every relative link in the README and
docs/ resolves to a file of the repository, and nothing points at files beside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = ("../shared", "DESIGN.md", "STYLE.md")


def markdown() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_in_the_docs_resolves_inside_the_repository():
    checked = 0
    for page in markdown():
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a URL (none is needed today)
            path = target.split("#", 1)[0]
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
            assert resolved.exists(), f"{page.name}: {target} does not exist"
            checked += 1
    assert checked > 20


def test_no_file_refers_to_documents_outside_the_repository():
    files = [*markdown(), *ROOT.glob("src/headwater/**/*.py"), *ROOT.glob("tests/**/*.py")]
    offenders = [
        f"{path.relative_to(ROOT)}: {word}"
        for path in files
        if path != Path(__file__)
        for word in OUTSIDE
        if word in path.read_text()
    ]
    assert offenders == []
