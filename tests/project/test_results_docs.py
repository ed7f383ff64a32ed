"""docs/results tells one story: links resolve, the archive is indexed, no duplicate data,
and every page that writes "±" says what it means."""

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
ARCHIVE = RESULTS / "archive"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    """README, docs/*.md and every page under docs/results."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted(RESULTS.rglob("*.md"))]


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            path = target.split("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_archive_index_lists_each_file_once():
    index = (ARCHIVE / "README.md").read_text()
    files = sorted(p.relative_to(ARCHIVE).as_posix() for p in ARCHIVE.rglob("*")
                   if p.is_file() and p.name != "README.md")
    listed = [f for f in files
              if sum(line.startswith(("- " + f + ":", f"- [{f}]")) for line in index.splitlines())
              == 1]
    assert listed == files


def test_no_two_data_files_are_the_same_bytes():
    seen: dict[str, str] = {}
    dupes = []
    for p in sorted(RESULTS.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".png", ".md", ".txt"):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest in seen:
                dupes.append(f"{seen[digest]} = {p.relative_to(RESULTS)}")
            seen.setdefault(digest, str(p.relative_to(RESULTS)))
    assert dupes == []


def test_every_page_with_a_plus_minus_says_what_it_means():
    """Half the range over seeds on every current page; the archive says its own."""
    current = re.compile(r"half[- ]the range|half-range|half their range")
    unsaid = [str(p.relative_to(ROOT)) for p in pages() if "±" in p.read_text()
              and not (current.search(p.read_text()) or
                       (p.is_relative_to(ARCHIVE) and "standard deviation" in p.read_text()))]
    assert unsaid == []
