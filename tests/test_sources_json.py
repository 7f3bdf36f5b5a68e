"""JSON sources: what loads, and each bad input refused at its file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shmconf import SourceError
from shmconf.sources import JsonSource, open_source
from tests.helpers import load_fails, load_text


def load(tmp_path: Path, text: str, name: str = "app.json") -> dict[str, Any]:
    return load_text(tmp_path, name, text)


def fails(tmp_path: Path, text: str, match: str) -> SourceError:
    return load_fails(tmp_path, "app.json", text, match)


def test_loads_every_json_type(tmp_path: Path) -> None:
    text = '{"s": "x", "i": -3, "f": 1.5, "t": true, "n": null, "l": [1, {"k": []}], "m": {}}'
    assert load(tmp_path, text) == {"s": "x", "i": -3, "f": 1.5, "t": True, "n": None,
                                    "l": [1, {"k": []}], "m": {}}


def test_empty_object_is_an_empty_config(tmp_path: Path) -> None:
    assert load(tmp_path, "{}\n") == {}


def test_source_type() -> None:
    assert isinstance(open_source("x.json"), JsonSource)


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    error = fails(tmp_path, '{\n  "a": 1,\n  "b": }\n', r"^:3:8: Expecting value$")
    assert (error.line, error.column) == (3, 8)


def test_trailing_comma_and_comments_are_syntax_errors(tmp_path: Path) -> None:
    # The same words and position on every Python (3.13's json words it itself).
    fails(tmp_path, '{"a": 1,\n}', r"^:1:8: trailing comma before the closing bracket "
                                  r"\(JSON allows none\)$")
    fails(tmp_path, '{"a": [1, 2, ]}', r"^:1:12: trailing comma")
    fails(tmp_path, '{"a": 1 // no comments in JSON\n}', r"^:1:9: ")


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "3", "null", "\n\n  [1]"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error = fails(tmp_path, text, r"\(root\): top level must be a mapping, found (list|string|"
                                  r"integer|null)$")
    assert error.line == text.count("\n") + 1


def test_duplicate_key_is_refused_at_the_second_one(tmp_path: Path) -> None:
    error = fails(tmp_path, '{"a": 1,\n "b": 2,\n "a": 3}',
                  r"^:3:2: a: duplicate key 'a' \(first on line 1\)$")
    assert error.line == 3


def test_duplicate_key_in_a_nested_object_names_its_path(tmp_path: Path) -> None:
    # "x" also appears, once, in an earlier object: only the real duplicate counts.
    text = '{"a": {"x": 1},\n "b": [{"y": 0}, {"x": 1,\n   "y": 2,\n   "x": 3}]}'
    fails(tmp_path, text, r"^:4:4: b\.1\.x: duplicate key 'x' \(first on line 2\)$")


def test_duplicate_key_found_through_escapes(tmp_path: Path) -> None:
    fails(tmp_path, '{"caf\\u00e9": 1,\n "café": 2}', r"^:2:2: café: duplicate key")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_nan_and_infinity_are_refused_with_key_path_and_line(tmp_path: Path, value: str) -> None:
    error = fails(tmp_path, f'{{"a": 1,\n "b": [{{"c": {value}}}]}}',
                  r"^:2:14: b\.0\.c: NaN and Infinity cannot be published")
    assert (error.line, error.column) == (2, 14)


def test_nan_inside_a_string_is_just_text(tmp_path: Path) -> None:
    assert load(tmp_path, '{"a": "NaN", "b": "Infinity"}') == {"a": "NaN", "b": "Infinity"}


@pytest.mark.parametrize("value", ["18446744073709551616", "-9223372036854775809",
                                   "9" * 5000])
def test_integers_outside_64_bits_are_refused_with_key_path(tmp_path: Path, value: str) -> None:
    error = fails(tmp_path, f'{{\n  "limits": {{"max": {value}}}\n}}',
                  r"^:2:21: limits\.max: integer outside the 64-bit range")
    assert value[:6] not in str(error)


def test_integers_at_the_64_bit_edges_load(tmp_path: Path) -> None:
    data = load(tmp_path, '{"a": 18446744073709551615, "b": -9223372036854775808}')
    assert data == {"a": 2**64 - 1, "b": -(2**63)}


def nested(depth: int) -> str:
    """A document whose innermost mapping is at nesting level ``depth`` (top is 1)."""
    return '{"k": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_nesting_of_64_levels_loads(tmp_path: Path) -> None:
    data: Any = load(tmp_path, nested(64))
    for _ in range(63):
        data = data["k"]
    assert data == {}


def test_nesting_deeper_than_64_is_refused_with_its_path(tmp_path: Path) -> None:
    error = fails(tmp_path, nested(65), r"^:1:385: k\.k\.k.*\(49 more\)\.k: nested deeper than "
                                        r"64 levels$")
    assert error.column == 385


def test_pathological_nesting_is_refused_at_its_line(tmp_path: Path) -> None:
    fails(tmp_path, '{"a":\n' + "[" * 100_000 + "]" * 100_000 + "}",
          r"^:2:64: a\.0\.0.*\(49 more\)\.0: nested deeper than 64 levels$")


def test_brackets_in_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    # Past the depth where Python 3.11's json gives up (RecursionError) and
    # below where 3.13's does: the same message, path and position on both.
    text = '{"a": "' + "[" * 100 + '", "b": ' + "[" * 2000 + "]" * 2000 + "}"
    fails(tmp_path, text, r"^:1:179: b\.0\.0.*\(49 more\)\.0: nested deeper than 64 levels$")
    text = '{"a": "' + "[" * 100 + '", "b": {"c": [' + "[" * 2000 + "]" * 2000 + ", {}]}}"
    fails(tmp_path, text, r"^:1:\d+: b\.c\.0\.0.*: nested deeper than 64 levels$")


def test_messages_never_carry_values(tmp_path: Path) -> None:
    error = fails(tmp_path, '{"password": "hunter2",\n "password": "hunter3"}', "duplicate")
    assert "hunter" not in str(error)
    error = fails(tmp_path, '{"password": "hunter2", "n": NaN}', "NaN")
    assert "hunter" not in str(error)
