"""``.env`` sources: the line syntax, nesting, and bad lines at their file:line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shmconf import SourceError
from shmconf.sources import DotenvSource, open_source
from tests.helpers import load_fails, load_text


def load(tmp_path: Path, text: str, name: str = "app.env") -> dict[str, Any]:
    return load_text(tmp_path, name, text)


def fails(tmp_path: Path, text: str, match: str) -> SourceError:
    return load_fails(tmp_path, "app.env", text, match)


def test_a_file_named_dot_env_is_a_dotenv_source(tmp_path: Path) -> None:
    assert isinstance(open_source(tmp_path / ".env"), DotenvSource)
    assert load(tmp_path, "A=1\n", name=".env") == {"a": "1"}


def test_comments_blank_lines_and_export(tmp_path: Path) -> None:
    text = "# settings\n\nexport A=1\n   export   B = two  \n  # indented comment\nC=3\n"
    assert load(tmp_path, text) == {"a": "1", "b": "two", "c": "3"}


def test_keys_are_lower_cased_and_double_underscore_nests(tmp_path: Path) -> None:
    text = "DATABASE__HOST=db\nDatabase__Port=5432\nDATABASE__POOL__SIZE=5\nLOG.LEVEL=info\n"
    assert load(tmp_path, text) == {
        "database": {"host": "db", "port": "5432", "pool": {"size": "5"}},
        "log.level": "info",
    }


def test_values_are_always_strings(tmp_path: Path) -> None:
    data = load(tmp_path, 'N=5\nB=true\nJ={"a": 1}\nE=\n')
    assert data == {"n": "5", "b": "true", "j": '{"a": 1}', "e": ""}


def test_unquoted_values_end_at_a_spaced_hash(tmp_path: Path) -> None:
    data = load(tmp_path, "A=value # comment\nB=a#b\nC=x=y\nD=  spaced out  \n")
    assert data == {"a": "value", "b": "a#b", "c": "x=y", "d": "spaced out"}


def test_single_quotes_keep_everything(tmp_path: Path) -> None:
    data = load(tmp_path, "A='# not a comment \\n $HOME'\nB='' # empty\n")
    assert data == {"a": "# not a comment \\n $HOME", "b": ""}


def test_double_quotes_unescape(tmp_path: Path) -> None:
    data = load(tmp_path, 'A="line\\nbreak \\"q\\" back\\\\slash \\t tab \\x"\nB="# kept"\n')
    assert data == {"a": 'line\nbreak "q" back\\slash \t tab \\x', "b": "# kept"}


def test_line_without_equals_is_refused_at_its_line(tmp_path: Path) -> None:
    error = fails(tmp_path, "A=1\n\n# ok\nJUST_A_WORD\n", r"^:4: expected KEY=VALUE")
    assert error.line == 4


def test_line_without_equals_is_not_echoed(tmp_path: Path) -> None:
    error = fails(tmp_path, "A=1\nhunter2\n", r"^:2: ")
    assert "hunter2" not in str(error)


@pytest.mark.parametrize("line", ["=value", "1A=x", "A B=x", "export =x", "A$=x"])
def test_invalid_keys_are_refused_at_their_line(tmp_path: Path, line: str) -> None:
    fails(tmp_path, f"OK=1\n{line}\n", r"^:2: invalid key")


@pytest.mark.parametrize(("line", "reason"), [
    ('A="open', 'unterminated " quote'),
    ("A='open", "unterminated ' quote"),
    ('A="escaped end\\"', 'unterminated " quote'),
    ("A='x' junk", "text after the closing ' quote"),
    ('A="x"junk', 'text after the closing " quote'),
])
def test_bad_quoting_is_refused_at_its_line(tmp_path: Path, line: str, reason: str) -> None:
    fails(tmp_path, f"OK=1\n{line}\n", rf"^:2: {reason}")


def test_a_comment_after_a_closing_quote_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path, 'A="x" # note\n') == {"a": "x"}


def test_duplicate_keys_are_refused_whatever_their_case(tmp_path: Path) -> None:
    fails(tmp_path, "A=1\nB=2\na=3\n", r"^:3: duplicate key 'a' \(first on line 1\)$")


@pytest.mark.parametrize(("text", "reason"), [
    ("DB=x\nDB__HOST=h\n", "nests under 'db', which holds a value"),
    ("DB__HOST=h\nDB=x\n", "holds a value but also has keys below it"),
    ("OK=1\nDB____HOST=h\n", "has an empty part between '__'"),
    ("OK=1\nDB__=h\n", "has an empty part between '__'"),
])
def test_nesting_conflicts_are_refused_at_their_line(tmp_path: Path, text: str,
                                                     reason: str) -> None:
    fails(tmp_path, text, rf"^:2: key .* {re.escape(reason)}")


def test_nesting_deeper_than_64_is_refused_at_its_line(tmp_path: Path) -> None:
    assert load(tmp_path, "A" + "__A" * 63 + "=1\n")
    fails(tmp_path, "OK=1\nA" + "__A" * 64 + "=1\n",
          r"^:2:1: a\.a\..*\.a: nested deeper than 64 levels$")


def test_messages_never_carry_values(tmp_path: Path) -> None:
    error = fails(tmp_path, "PASSWORD=hunter2\nPASSWORD='hunter3'\n", "duplicate")
    assert "hunter" not in str(error)
    error = fails(tmp_path, "PASSWORD='hunter2\n", "unterminated")
    assert "hunter" not in str(error)
