"""Every relative link in README.md and docs/ resolves: the file (or directory) exists inside
the repository, and a ``#anchor`` names a heading of the target page, by GitHub's rule
(lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2``... for repeated
headings). External links (``http:``, ``mailto:``...) are not fetched. The pages also speak
to a first-time reader: no issue numbers, revisions or earlier versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1)[^`])+?\1")
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?", re.MULTILINE)
_HTML = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
#: Words that mean something only to the team that wrote the code, not to a reader.
_HISTORY = re.compile(r"\b(issue\s+#?\d+|revision\s+\d+|(earlier|previous|old)\s+version"
                      r"|previously)\b", re.IGNORECASE)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of every line, those of fenced code blocks blanked."""
    out, fence = [], None
    for number, line in enumerate(markdown.splitlines(), 1):
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            fence = None if fence else m.group(1)
            line = ""
        out.append((number, "" if fence else line))
    return out


def links(markdown: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code; a link's text may run
    over several lines."""
    prose = "\n".join(line for _, line in _prose_lines(markdown))
    text = _CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), prose)
    found = [(text.count("\n", 0, m.start(1)) + 1, m.group(1))
             for rx in (_INLINE, _HTML, _REFERENCE) for m in rx.finditer(text)]
    return sorted((n, t) for n, t in found if t)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(markdown):
        out.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of ``page``, one line each."""
    out = []
    for number, target in links(page.read_text()):
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        where = f"{page.relative_to(root)}:{number}: {target}"
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if root.resolve() not in (path, *path.parents):
            out.append(f"{where}: points outside the repository")
        elif not path.exists():
            out.append(f"{where}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            out.append(f"{where}: no heading with this anchor in {path.relative_to(root)}")
    return out


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    found = problems(page)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_speak_to_a_first_time_reader(page: Path) -> None:
    hits = [f"{page.relative_to(ROOT)}:{n}: {m.group(0)!r}"
            for n, line in enumerate(page.read_text().splitlines(), 1)
            for m in _HISTORY.finditer(line)]
    assert not hits, "words about the project's history, not about the system:\n" + \
        "\n".join(hits)


def test_github_anchor_rule() -> None:
    page = ("# Plate Registry\n## A five-minute tour\n### PlateregDLQRateHigh\n"
            "## Purpose, `at` and `version`\n## Notes\n## Notes\n"
            "## [Who](x.md) may *say* what?\n```sh\n# not a heading\n```\n")
    assert anchors(page) == {"plate-registry", "a-five-minute-tour", "plateregdlqratehigh",
                             "purpose-at-and-version", "notes", "notes-1", "who-may-say-what"}


def test_the_check_sees_broken_links_and_skips_code(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n## Runbook\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/b.md#runbook) [self](#top) ![img](docs/b.md) <https://example.org>\n"
        "[gone](docs/c.md) [bad anchor](docs/b.md#nope) [out](../x.md) [web](https://x.y/z)\n"
        "`[code](nowhere.md)` and `a span\nover [two](lines.md) lines`\n```\n[fenced](nowhere.md)\n"
        "```\n[ref]: docs/missing.md\nA [link over\ntwo lines](docs/e.md#x).\n# Top\n")
    assert problems(page, tmp_path) == [
        "README.md:2: ../x.md: points outside the repository",
        "README.md:2: docs/b.md#nope: no heading with this anchor in docs/b.md",
        "README.md:2: docs/c.md: no such file",
        "README.md:8: docs/missing.md: no such file",
        "README.md:10: docs/e.md#x: no such file",
    ]
