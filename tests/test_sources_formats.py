"""Each file format: what it loads, and every bad input with its file:line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shmconf import SourceError
from shmconf.sources import open_source, parse_document


def load(tmp_path: Path, name: str, content: str | bytes) -> dict[str, object]:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return open_source(path).load()


def fails(tmp_path: Path, name: str, content: str | bytes, match: str) -> SourceError:
    with pytest.raises(SourceError, match=match) as info:
        load(tmp_path, name, content)
    assert str(tmp_path / name) in str(info.value)
    return info.value


def test_all_formats_load_the_same_config(tmp_path: Path) -> None:
    expected = {"db": {"host": "h", "port": "5432"}, "debug": "true"}
    assert load(tmp_path, "a.json", '{"db": {"host": "h", "port": "5432"}, "debug": "true"}') \
        == expected
    assert load(tmp_path, "a.yaml", "db:\n  host: h\n  port: '5432'\ndebug: 'true'\n") == expected
    assert load(tmp_path, "a.toml", "debug = 'true'\n[db]\nhost = 'h'\nport = '5432'\n") \
        == expected
    assert load(tmp_path, "a.env", "DB__HOST=h\nDB__PORT=5432\nDEBUG=true\n") == expected
    assert load(tmp_path, ".env", "export DB__HOST=h\nDB__PORT=5432 # inline\nDEBUG=true\n") \
        == expected


def test_repr_names_the_file(tmp_path: Path) -> None:
    assert repr(open_source(tmp_path / "base.yaml")) == f"YamlSource('{tmp_path / 'base.yaml'}')"


def test_unknown_suffix_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"unknown file type '.ini'; use one of .json, .yaml"):
        open_source(tmp_path / "x.ini")


@pytest.mark.parametrize("name", ["x.json", "x.yaml", "x.toml", "x.env"])
def test_empty_and_whitespace_files_are_rejected(tmp_path: Path, name: str) -> None:
    fails(tmp_path, name, "", "file is empty")
    fails(tmp_path, name, "  \n\n", "file is empty")


@pytest.mark.parametrize(("name", "text"), [("x.yaml", "# only a comment\n"),
                                            ("x.toml", "# only a comment\n"),
                                            ("x.env", "# only a comment\n")])
def test_comment_only_files_are_rejected(tmp_path: Path, name: str, text: str) -> None:
    fails(tmp_path, name, text, "no settings")


def test_missing_file_directory_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        open_source(tmp_path / "none.yaml").load()
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SourceError, match="is a directory"):
        open_source(tmp_path / "dir.yaml").load()


@pytest.mark.parametrize("name", ["x.json", "x.yaml", "x.toml", "x.env"])
def test_binary_garbage_and_invalid_utf8(tmp_path: Path, name: str) -> None:
    fails(tmp_path, name, b"a: 1\n\x00\x01\x02garbage", r":2: binary data")
    error = fails(tmp_path, name, b"k = 1\nv = \"\xff\xfe\"\n", r":2:\d+: invalid UTF-8")
    assert error.line == 2


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    fails(tmp_path, "x.json", "[1, 2]", r"top level must be a mapping, found list")
    fails(tmp_path, "x.yaml", "- a\n- b\n", r"top level must be a mapping, found list")
    fails(tmp_path, "x.yaml", "just a string\n", r"found string")


def test_json_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    error = fails(tmp_path, "x.json", '{\n  "a": 1,\n  "b": }\n', r"x.json:3:8: Expecting value")
    assert (error.line, error.column) == (3, 8)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    fails(tmp_path, "x.yaml", "a: 1\nb: [1, 2\nc: 3\n", r"x.yaml:3:\d+:")
    fails(tmp_path, "x.yaml", "a:\n  b: 1\n c: 2\n", r"x.yaml:3:\d+:")


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    error = fails(tmp_path, "x.toml", "a = 1\nb = \n", r"x.toml:2:5: Invalid value")
    assert error.column == 5


def test_dotenv_line_without_equals(tmp_path: Path) -> None:
    fails(tmp_path, "x.env", "A=1\nJUST_A_WORD\n", r"x.env:2: expected KEY=VALUE")


def test_dotenv_quotes_and_escapes(tmp_path: Path) -> None:
    data = load(tmp_path, "x.env", "A='single # kept'\nB=\"line\\nbreak \\\"q\\\"\"\nC=\n")
    assert data == {"a": "single # kept", "b": 'line\nbreak "q"', "c": ""}
    fails(tmp_path, "x.env", 'A="open\n', r"x.env:1: unterminated")


@pytest.mark.parametrize(("name", "text", "line"), [
    ("x.json", '{"a": 1,\n "a": 2}', 2),
    ("x.yaml", "a: 1\nb: 2\na: 3\n", 3),
    ("x.env", "A=1\nA=2\n", 2),
])
def test_duplicate_keys_are_rejected_with_the_second_line(tmp_path: Path, name: str,
                                                          text: str, line: int) -> None:
    error = fails(tmp_path, name, text, "duplicate key")
    assert error.line == line


def test_toml_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    fails(tmp_path, "x.toml", "a = 1\na = 2\n", r"x.toml:2:")


@pytest.mark.parametrize(("name", "text"), [
    ("x.json", '{"a": NaN}'), ("x.json", '{"a": -Infinity}'),
    ("x.yaml", "a: .nan\n"), ("x.yaml", "a: -.inf\n"), ("x.toml", "a = nan\n"),
])
def test_nan_and_infinity_are_rejected(tmp_path: Path, name: str, text: str) -> None:
    fails(tmp_path, name, text, "(NaN|Infinity)")


@pytest.mark.parametrize(("name", "text"), [
    ("x.json", '{"big": 18446744073709551616}'), ("x.yaml", "big: 18446744073709551616\n"),
    ("x.toml", "[t]\nbig = -9223372036854775809\n"),
])
def test_integers_beyond_64_bits_are_rejected(tmp_path: Path, name: str, text: str) -> None:
    fails(tmp_path, name, text, "beyond 64 bits")


def test_integers_at_the_64_bit_edges_load(tmp_path: Path) -> None:
    data = load(tmp_path, "x.json", '{"a": 18446744073709551615, "b": -9223372036854775808}')
    assert data == {"a": 2**64 - 1, "b": -(2**63)}


def test_deep_nesting_is_rejected(tmp_path: Path) -> None:
    deep = "{" + '"a": {' * 80 + "}" * 81
    fails(tmp_path, "x.json", deep, "nested deeper than 64")
    fails(tmp_path, "y.json", "[" * 100_000 + "]" * 100_000, "nested too deeply|deeper")


def test_yaml_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, this = chr(96 + i), chr(97 + i)
        lines.append(f"{this}: &{this} [" + ",".join([f"*{prev}"] * 9) + "]")
    started = time.monotonic()
    fails(tmp_path, "bomb.yaml", "\n".join(lines) + "\n", "alias bomb")
    assert time.monotonic() - started < 10


def test_yaml_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    data = load(tmp_path, "x.yaml",
                "defaults: &d {timeout: 5, retries: 2}\nprod:\n  <<: *d\n  retries: 5\n")
    assert data["prod"] == {"timeout": 5, "retries": 5}


def test_yaml_key_types(tmp_path: Path) -> None:
    assert load(tmp_path, "x.yaml", "codes:\n  404: missing\n") == {"codes": {"404": "missing"}}
    fails(tmp_path, "x.yaml", "on: push\n", r"x.yaml:1:1: key True is not a string; quote it")
    fails(tmp_path, "x.yaml", "~: 1\n", r"key None is not a string")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    fails(tmp_path, "x.yaml", "a: !!python/object/apply:os.system ['true']\n",
          r"x.yaml:1:\d+:.*could not determine a constructor")


def test_dates_become_iso_strings(tmp_path: Path) -> None:
    assert load(tmp_path, "x.yaml", "day: 2026-11-22\n") == {"day": "2026-11-22"}
    assert load(tmp_path, "x.toml", "at = 2026-11-22T10:00:00Z\n") == {
        "at": "2026-11-22T10:00:00+00:00"}


def test_messages_never_carry_values(tmp_path: Path) -> None:
    error = fails(tmp_path, "x.json", '{"password": "hunter2", "n": NaN}', "NaN")
    assert "hunter2" not in str(error)


def test_parse_document_picks_format_by_suffix() -> None:
    assert parse_document(b"a: 1\n", name="etcd://h/app.yaml", suffix=".yaml") == {"a": 1}
    with pytest.raises(SourceError, match="cannot tell the format"):
        parse_document(b"a: 1", name="etcd://h/app", suffix="")
