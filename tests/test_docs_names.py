"""Every dotted name of the package written in README.md and docs/*.md exists, so a page cannot document an API
that is not there: `cmrvsr_fast.a.b.c` (and `cf.a.b`, the README's alias) resolves by importing the longest
module prefix and taking the rest as attributes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NAME = re.compile(r"(?<![\w./-])(cmrvsr_fast|cf)((?:\.[A-Za-z_]\w*)+)")
EXTENSION = "cmrvsr_fast._C"  # compiled at install time only where nvcc exists


def documented_names() -> dict[str, list[str]]:
    """name -> the pages (and lines) that write it."""
    names: dict[str, list[str]] = {}
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for match in NAME.finditer(line):
                name = "cmrvsr_fast" + match.group(2)
                names.setdefault(name, []).append(f"{page.relative_to(REPO)}:{number}")
    return names


NAMES = documented_names()


def resolve(name: str) -> object:
    """Import the longest importable module prefix of `name`, then getattr the rest."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            value = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)  # AttributeError names what is missing
        return value
    raise ModuleNotFoundError(name)


def test_pages_name_the_package():
    assert len(NAMES) > 20, sorted(NAMES)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_documented_name_exists(name):
    if name == EXTENSION or name.startswith(EXTENSION + "."):
        from cmrvsr_fast.ops import extension

        if not extension.available():
            pytest.skip(f"the CUDA extension is not built here: {extension.UNAVAILABLE_REASON}")
    try:
        resolve(name)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{name} (written in {', '.join(NAMES[name])}) does not resolve: {error}")


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_links_between_pages_resolve(page):
    """Every relative link of a page names a file of the repository and, after #, a heading of that file."""
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, broken
