"""The documentation is a map that stays true: README.md short, every link landing, the Layout table complete.

README.md is the page a Space shows first: a pitch, the two commands, one paragraph per tab, and links; the deep
pages live in docs/ and the benchmark figures in bench/README.md. These tests read only markdown and list files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"; the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation but - and _ dropped, spaces -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        # Code spans may look like links; blank them (a link's text in backticks still parses as a link).
        line = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
        found.extend((number, m.group(1)) for m in LINK.finditer(line))
    return found


def where(path: Path, number: int | None = None) -> str:
    name = path.relative_to(ROOT).as_posix()
    return f"{name}:{number}" if number else name


def test_readme_is_at_most_250_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines, more than {MAX_README_LINES}: move the detail into a page under docs/ "
        "(or the numbers into bench/README.md) and link to it"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert path.is_file(), f"{where(path)} is missing"
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):  # http:, https:, mailto:: not ours to check offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{where(path, number)}: link '{target}' points outside the repository ({dest})")
            continue
        if not dest.exists():
            problems.append(f"{where(path, number)}: link '{target}' names {where(dest)}, which does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(
                f"{where(path, number)}: link '{target}': {where(dest)} has no heading whose anchor is '#{anchor}' "
                f"(its anchors: {', '.join(sorted(anchors(dest)))})"
            )
    assert not problems, "\n".join(problems)


def test_readme_links_every_docs_page_and_the_benchmarks():
    linked = set()
    for _, target in links(README):
        file_part = target.partition("#")[0]
        if file_part and not SCHEME.match(target):
            linked.add((ROOT / file_part).resolve())
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
    missing = [where(p) for p in pages if p.resolve() not in linked]
    assert not missing, f"README.md does not link to: {', '.join(missing)}"


def layout_paths() -> list[tuple[int, str]]:
    """(README line, path) for every path in backticks in the first column of README's Layout table."""
    rows, inside = [], False
    for number, line in prose_lines(README):
        heading = HEADING.match(line)
        if heading:
            inside = heading.group(1) == "##" and heading.group(2).strip() == "Layout"
            continue
        if not inside or not line.lstrip().startswith("|"):
            continue
        first = line.strip().strip("|").split("|")[0].strip()
        if first == "path" or set(first) <= set("-: "):  # the header row and its separator
            continue
        rows.extend((number, p) for p in re.findall(r"`([^`]+)`", first))
    return rows


def test_layout_table_names_only_existing_paths():
    rows = layout_paths()
    assert rows, "README.md has no '## Layout' table with paths in backticks in its first column"
    problems = []
    for number, name in rows:
        target = ROOT / name
        if name.endswith("/") and not target.is_dir():
            problems.append(
                f"README.md:{number}: the Layout table names {name}, which is not a folder in the repository"
            )
        elif not name.endswith("/") and not target.is_file():
            problems.append(f"README.md:{number}: the Layout table names {name}, which is not a file in the repository")
    assert not problems, "\n".join(problems)


def test_layout_table_names_every_module_under_clipdemo():
    named = {name for _, name in layout_paths()}
    package = ROOT / "clipdemo"
    missing = []
    for module in sorted(package.rglob("*.py")):
        if module.name == "__init__.py" or "__pycache__" in module.parts:
            continue
        rel = module.relative_to(ROOT).as_posix()
        # A package folder named as a whole (`clipdemo/data/`) covers the modules inside it.
        folders = [p.relative_to(ROOT).as_posix() + "/" for p in module.parents if package in p.parents]
        if rel not in named and not named.intersection(folders):
            missing.append(rel)
    assert not missing, (
        "README.md's Layout table does not name: "
        + ", ".join(missing)
        + (" (add a row with the file, or its package folder with a trailing /, and its one job)")
    )
