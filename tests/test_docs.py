"""The README and docs link to each other by file and heading; a moved section or a renamed
heading must not leave a reader at a dead link."""

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def prose(path: Path) -> str:
    """The file without its code blocks, whose ``#`` lines are comments, not headings."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)


@functools.cache
def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", prose(path), re.M)}


def links(path: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", prose(path)) if "://" not in t]


def test_slug_matches_github():
    assert slug("Catalog benchmark against the clean master (`bench/bench_catalog.py`)") == \
        "catalog-benchmark-against-the-clean-master-benchbench_catalogpy"
    assert slug("The model's guard (`--guard D`)") == "the-models-guard---guard-d"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc: Path):
    dead = []
    for link in links(doc):
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            dead.append(f"{link} (no file {target.relative_to(ROOT)})")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            dead.append(f"{link} (no heading #{anchor} in {target.name})")
    assert not dead, f"{doc.name} links nowhere: " + "; ".join(dead)
