"""Every code block in README.md and docs/ is run, or says why it is not.

A fenced block with a language is one of:

* a file of a recipe, ``title="app.py"``: a test writes the titled blocks of
  its page to a directory and runs them as written (``write_doc_files``);
  this test checks that some test does so for the page;
* data (``yaml``, ``json``, ``toml``): loaded here with shmconf's own
  sources, so it must be valid;
* ``python``: the page's untitled Python blocks run here, in order, in one
  fresh interpreter (a later block may use what an earlier one defined);
* marked by an HTML comment on the line before it:
  ``<!-- illustrative: why -->`` (a fragment, a placeholder path, output of
  a long-running deployment), or ``<!-- tested: tests/test_x.py -->`` (that
  test runs what the block shows).

A block without a language is output or a diagram, never code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shmconf.sources import open_source
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(?P<lang>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$",
                    re.M | re.S)
_MARK = re.compile(r"<!--\s*(?P<kind>illustrative|tested):\s*(?P<why>.+?)\s*-->\s*$")
DATA = {"yaml": ".yaml", "json": ".json", "toml": ".toml"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    title: str | None
    mark: str | None
    why: str | None
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        title = re.search(r'title="([^"]+)"', match["info"])
        found.append(Block(page, line, match["lang"], title[1] if title else None,
                           mark["kind"] if mark else None, mark["why"] if mark else None,
                           match["body"]))
    return found


ALL = [block for page in PAGES for block in blocks(page)]


def pages_run_by_tests() -> set[str]:
    """Pages whose titled files some test writes out and runs (``write_doc_files``)."""
    run = set()
    for test in (REPO / "tests").glob("test_*.py"):
        run |= set(re.findall(r'write_doc_files\(REPO / "docs" / "([^"]+)"',
                              test.read_text(encoding="utf-8")))
    return run


def test_every_block_is_run_or_marked() -> None:
    unrun = [f"{b.where}: ```{b.lang}" for b in ALL if b.mark is None and b.title is None
             and b.lang not in DATA and b.lang != "python"]
    assert unrun == [], ("blocks that nothing runs; make them run, or mark them "
                         "<!-- illustrative: why --> on the line before")


@pytest.mark.parametrize("block", [b for b in ALL if b.mark == "tested"],
                         ids=lambda b: b.where)
def test_tested_marks_name_a_test_that_runs_the_page(block: Block) -> None:
    assert block.why is not None
    test = REPO / block.why.split()[0]
    assert test.is_file(), f"{block.where}: {block.why} is not a test file"
    assert block.page.name in test.read_text(encoding="utf-8"), \
        f"{block.where}: {test.name} never mentions {block.page.name}"


@pytest.mark.parametrize("block", [b for b in ALL if b.title is not None and b.mark is None],
                         ids=lambda b: b.where)
def test_recipe_files_are_run_by_a_test(block: Block) -> None:
    assert block.page.name in pages_run_by_tests(), \
        f"{block.where}: title={block.title!r}, but no test writes out {block.page.name}"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in DATA and b.mark is None],
                         ids=lambda b: b.where)
def test_data_blocks_load(block: Block, tmp_path: Path) -> None:
    name = block.title or f"block{DATA[block.lang]}"
    path = tmp_path / Path(name).name
    path.write_text(block.body, encoding="utf-8")
    open_source(path).load()  # a SourceError names the line


@pytest.mark.parametrize("page", sorted({b.page for b in ALL if b.lang == "python"
                                          and b.title is None and b.mark is None}),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    code = "\n\n".join(b.body for b in blocks(page)
                       if b.lang == "python" and b.title is None and b.mark is None)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{page.relative_to(REPO)}:\n{result.stderr}"


def test_the_merge_example_gives_the_values_its_comments_say(tmp_path: Path) -> None:
    block = next(b for b in blocks(REPO / "docs" / "sources.md")
                 if b.lang == "yaml" and "<<:" in b.body)
    path = tmp_path / "merge.yaml"
    path.write_text(block.body, encoding="utf-8")
    data = open_source(path).load()
    for line in block.body.splitlines():
        comment = re.search(r"^(\w+):.*#\s*(\{[^}]*\})", line)
        if comment:
            expected = dict(re.findall(r"(\w+): (\d+)", comment[2]))
            assert {k: str(v) for k, v in data[comment[1]].items()} == expected, line
