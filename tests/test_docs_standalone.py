"""The documentation stands alone: nothing points outside the repository, every citation of a
page (``docs/<name>.md``) or of one of its sections (``docs/<name>.md §N``) names a page that
exists and a heading numbered N in it, and every relative link of the Markdown pages resolves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()

#: Names of documents that are not part of the repository (matched with case).
OUTSIDE = ("PROTOCOL.md", "PERF-NOTES", "DESIGN.md", "../shared")

#: ``docs/<name>.md``, then optionally one or more section numbers: ``§3``, ``§3, §4 and §5``,
#: ``§7 to §10``, ``§4.2`` (``section 3`` is read the same way).
CITATION = re.compile(
    r"(?<![\w/.-])docs/(?P<page>[\w.-]+?\.md)"
    r"(?P<sections>(?:(?:\s*,\s*|\s+(?:and|to|or)\s+|\s+)(?:§\s?|section\s+)\d+(?:\.\d+)*)*)"
)
SECTION_NUMBER = re.compile(r"(?:§\s?|section\s+)(\d+(?:\.\d+)*)")
#: ``[text](target)`` or ``[text](target "title")``.
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name and name != HERE]


def _texts() -> dict[str, str]:
    """Tracked files that are text, by repository path (the working tree's content)."""
    texts: dict[str, str] = {}
    for path in _tracked():
        if not path.is_file():
            continue
        try:
            texts[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _headings(page: Path) -> set[str]:
    """The section numbers of a page's headings: ``## 4. Title`` -> 4, ``### 4.1 Title`` -> 4.1."""
    numbers: set[str] = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        match = re.match(r"#{1,6}\s+(\d+(?:\.\d+)*)\.?(?:\s|$)", line)
        if match and not in_fence:
            numbers.add(match.group(1))
    return numbers


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in _tracked():
        if not path.is_file():
            continue
        data = path.read_bytes()
        for name in OUTSIDE:
            start = data.find(name.encode())
            while start != -1:
                line = data.count(b"\n", 0, start) + 1
                found.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {name}")
                start = data.find(name.encode(), start + 1)
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def test_citations_name_existing_pages_and_sections() -> None:
    bad = []
    headings: dict[str, set[str]] = {}
    for name, text in sorted(_texts().items()):
        for match in CITATION.finditer(text):
            page = ROOT / "docs" / match.group("page")
            where = f"{name}:{_line(text, match.start())}: {match.group(0).strip()}"
            if not page.is_file():
                bad.append(f"{where}: no such page")
                continue
            numbers = SECTION_NUMBER.findall(match.group("sections"))
            if not numbers:
                continue
            if page.name not in headings:
                headings[page.name] = _headings(page)
            for number in numbers:
                if number not in headings[page.name]:
                    bad.append(f"{where}: docs/{page.name} has no heading numbered {number}")
    assert not bad, "citations that do not resolve:\n" + "\n".join(bad)


def _markdown_pages() -> list[str]:
    return sorted(
        name
        for name in _texts()
        if name == "README.md" or (name.startswith("docs/") and name.endswith(".md"))
    )


def test_relative_links_resolve() -> None:
    texts = _texts()
    bad = []
    for name in _markdown_pages():
        text = texts[name]
        # Code is not Markdown: blank it out, keeping offsets (for line numbers).
        text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        text = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for match in LINK.finditer(text):
            target = match.group(1)
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            path = target.split("#", 1)[0]
            resolved = (ROOT / name).parent / path
            if not resolved.exists():
                bad.append(f"{name}:{_line(text, match.start())}: {target}")
    assert not bad, "relative links to files that do not exist:\n" + "\n".join(bad)


def test_the_checks_see_what_they_check() -> None:
    """The patterns find what they are meant to find (so that a passing run means something)."""
    sample = "see docs/protocol.md §3, §4 and §5, docs/iq-profile.md, docs/protocol.md §7 to §10"
    found = [
        (m.group("page"), SECTION_NUMBER.findall(m.group("sections")))
        for m in CITATION.finditer(sample)
    ]
    assert found == [
        ("protocol.md", ["3", "4", "5"]),
        ("iq-profile.md", []),
        ("protocol.md", ["7", "10"]),
    ]
    assert "13" in _headings(ROOT / "docs" / "protocol.md")
    assert "4.2" in _headings(ROOT / "docs" / "protocol.md")
    assert [m.group(1) for m in LINK.finditer("[a](b.md) [c](https://x) [d](e.md#f)")] == [
        "b.md",
        "https://x",
        "e.md#f",
    ]
    assert "README.md" in _markdown_pages()
