"""YAML sources: safe loading, aliases, key rules, and bad input at its file:line."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from shmconf import SourceError
from shmconf.sources.base import MAX_NODES
from shmconf.sources.yaml import _loader_class
from tests.helpers import load_fails, load_text

# Every test on both parsers: libyaml and the pure-Python one.
pytestmark = pytest.mark.usefixtures("yaml_parser")


def load(tmp_path: Path, text: str, name: str = "app.yaml") -> dict[str, Any]:
    return load_text(tmp_path, name, text)


def fails(tmp_path: Path, text: str, match: str) -> SourceError:
    return load_fails(tmp_path, "app.yaml", text, match)


def test_loads_plain_data(tmp_path: Path) -> None:
    text = "s: x\ni: 3\nf: 1.5\nt: true\nn: ~\nl: [1, {k: v}]\nm:\n  nested: {}\n"
    assert load(tmp_path, text) == {"s": "x", "i": 3, "f": 1.5, "t": True, "n": None,
                                    "l": [1, {"k": "v"}], "m": {"nested": {}}}
    assert load(tmp_path, "a: 1\n", name="app.yml") == {"a": 1}


def test_uses_the_c_safe_loader_when_available() -> None:
    loader = _loader_class(yaml)
    expected = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert issubclass(loader, expected)
    assert not issubclass(loader, (yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader))


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']",
                                 "!!python/name:os.system", "!!python/tuple [1, 2]"])
def test_python_tags_are_refused(tmp_path: Path, tag: str) -> None:
    fails(tmp_path, f"a: 1\nb: {tag}\n", r"^:2:4: .*could not determine a constructor")


def test_missing_pyyaml_says_how_to_install_it(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    fails(tmp_path, "a: 1\n", r"^: YAML sources need PyYAML: pip install PyYAML$")


@pytest.mark.parametrize(("text", "where"), [
    ("a: 1\nb: [1, 2\nc: 3\n", r":3:2:"),
    ("a:\n  b: 1\n c: 2\n", r":3:2:"),
    ("a: 'open\n", r":2:1:"),
    ("a: 1\n\tb: 2\n", r":2:1:"),
])
def test_syntax_errors_have_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    error = fails(tmp_path, text, "^" + where)
    assert error.line is not None
    assert error.column is not None


def test_more_than_one_document_is_refused(tmp_path: Path) -> None:
    fails(tmp_path, "a: 1\n---\nb: 2\n", r"^:2:1: .*expected a single document")


def test_top_level_must_be_a_mapping_at_its_line(tmp_path: Path) -> None:
    fails(tmp_path, "# servers\n\n- a\n- b\n", r"^:3:1: \(root\): top level must be a "
                                               r"mapping, found list$")
    fails(tmp_path, "just a string\n", r"^:1:1: .*found string$")
    fails(tmp_path, "null\n", r"^:1:1: .*found null$")


def test_an_explicit_empty_mapping_is_an_empty_config(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing set yet\n{}\n") == {}


def test_duplicate_key_is_refused_at_the_second_one(tmp_path: Path) -> None:
    error = fails(tmp_path, "a: 1\nb:\n  c: 1\n  c: 2\n",
                  r"^:4:3: duplicate key 'c' \(first on line 3\)$")
    assert (error.line, error.column) == (4, 3)


def test_integer_and_string_spellings_of_one_key_are_duplicates(tmp_path: Path) -> None:
    fails(tmp_path, "codes:\n  404: a\n  '404': b\n", r"^:3:3: duplicate key '404'")


def test_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    text = ("defaults: &d {timeout: 5, retries: 2}\n"
            "prod:\n  <<: *d\n  retries: 5\n"
            "both:\n  <<: [*d, {extra: 1}]\n"
            "copy: *d\n")
    data = load(tmp_path, text)
    assert data["prod"] == {"timeout": 5, "retries": 5}
    assert data["both"] == {"timeout": 5, "retries": 2, "extra": 1}
    assert data["copy"] == {"timeout": 5, "retries": 2}
    assert data["copy"] is not data["defaults"]  # plain data: no shared objects


def test_merged_keys_are_not_duplicates_even_when_merged_twice(tmp_path: Path) -> None:
    # "inner" merges "base" and is itself merged, before and after its own turn.
    text = ("base: &b {k: 0, j: 1}\n"
            "outer:\n  inner: &n\n    <<: *b\n    k: 1\n"
            "other:\n  <<: *n\n")
    data = load(tmp_path, text)
    assert data["outer"]["inner"] == {"k": 1, "j": 1}
    assert data["other"] == {"k": 1, "j": 1}


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, this = chr(96 + i), chr(97 + i)
        lines.append(f"{this}: &{this} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        # 9**9 (387 million) strings once expanded; the first key past the limit is "g".
        error = fails(tmp_path, billion_laughs(),
                      r"^:7:4: g: expands to 5380840 values with aliases expanded, above the "
                      rf"limit of {MAX_NODES}$")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    assert peak < 5_000_000
    assert error.line == 7


def test_aliases_below_the_limit_are_expanded(tmp_path: Path) -> None:
    data = load(tmp_path, billion_laughs(levels=3))  # 9**3 strings
    assert len(data["c"]) == 9
    assert data["c"][8][8] == ["lol"] * 9


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    # Located at the anchor: the alias is the anchored node itself.
    fails(tmp_path, "a: 1\nb: &b\n  - x\n  - *b\n", r"^:2:4: b\.1: refers to itself")


def test_integer_keys_become_strings(tmp_path: Path) -> None:
    data = load(tmp_path, "codes:\n  404: missing\n  0x10: hex\n  -1: minus\n")
    assert data == {"codes": {"404": "missing", "16": "hex", "-1": "minus"}}


def test_integer_keys_from_a_merge_become_strings(tmp_path: Path) -> None:
    data = load(tmp_path, "base: &b {1: one}\nmore:\n  <<: *b\n  2: two\n")
    assert data["more"] == {"1": "one", "2": "two"}


@pytest.mark.parametrize(("key", "found"), [
    ("on", "boolean"), ("yes", "boolean"), ("false", "boolean"), ("~", "null"),
    ("null", "null"), ("1.5", "number"), ("2026-11-22", "date"),
    ("[a, b]", "sequence"), ("{a: 1}", "mapping"),
])
def test_other_keys_are_refused_at_their_line(tmp_path: Path, key: str, found: str) -> None:
    text = f"a: 1\nnested:\n  ? {key}\n  : value\n"
    fails(tmp_path, text, rf"^:3:5: found a key of type {found}\b.*; keys must be strings "
                          r"\(quote it\)$")


def test_quoted_keys_are_strings(tmp_path: Path) -> None:
    assert load(tmp_path, "'on': push\n'1.5': x\n") == {"on": "push", "1.5": "x"}


def test_dates_and_times_become_iso_strings(tmp_path: Path) -> None:
    text = "day: 2026-11-22\nat: 2026-11-22T10:00:00Z\nlocal: 2026-11-22 10:00:00.5\n"
    assert load(tmp_path, text) == {"day": "2026-11-22", "at": "2026-11-22T10:00:00+00:00",
                                    "local": "2026-11-22T10:00:00.500000"}


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.INF"])
def test_nan_and_infinity_are_refused_with_key_path_and_line(tmp_path: Path, value: str
                                                             ) -> None:
    error = fails(tmp_path, f"a: 1\nb:\n  c: [1, {{d: {value}}}]\n",
                  r"^:3:14: b\.c\.1\.d: NaN and Infinity cannot be published")
    assert (error.line, error.column) == (3, 14)


def test_nan_in_a_merged_mapping_is_located_at_its_definition(tmp_path: Path) -> None:
    fails(tmp_path, "base: &b\n  x: 1\n  bad: .nan\nuse:\n  <<: *b\n  y: 2\n",
          r"^:3:8: base\.bad: NaN")


@pytest.mark.parametrize("value", ["18446744073709551616", "-9223372036854775809"])
def test_integers_outside_64_bits_are_refused(tmp_path: Path, value: str) -> None:
    error = fails(tmp_path, f"limits:\n  max: {value}\n",
                  r"^:2:8: limits\.max: integer outside the 64-bit range")
    assert value not in str(error)


def test_binary_and_sets_are_not_config_values(tmp_path: Path) -> None:
    fails(tmp_path, "a:\n  b: !!binary aGVsbG8=\n", r"^:2:6: a\.b: found a value of type "
                                                   r"bytes; config values are strings")
    fails(tmp_path, "s: !!set {a, b}\n", r"^:1:4: s: found a value of type set;")


def test_nesting_deeper_than_64_is_refused(tmp_path: Path) -> None:
    assert load(tmp_path, "a: " + "[" * 63 + "]" * 63 + "\n")["a"] is not None
    fails(tmp_path, "a: " + "[" * 64 + "]" * 64 + "\n",
          r"^:1:\d+: nested deeper than 64 levels$")


def test_pathological_nesting_is_refused(tmp_path: Path) -> None:
    fails(tmp_path, "a: " + "[" * 50_000 + "]" * 50_000 + "\n",
          r"nested deeper than 64 levels")


def test_messages_never_carry_values(tmp_path: Path) -> None:
    error = fails(tmp_path, "password: hunter2\npassword: hunter3\n", "duplicate key")
    assert "hunter" not in str(error)
    error = fails(tmp_path, "password: hunter2\nn: .nan\n", "NaN")
    assert "hunter" not in str(error)


def test_loads_what_pyyaml_loads(tmp_path: Path) -> None:
    # The loop-based composer builds the same nodes as PyYAML's own.
    text = """\
%YAML 1.1
---
base: &base
  name: !!str 123
  ratio: 0.5
  folded: >
    one
    two
  literal: |
    keep
    lines
  empty:
  list: &l [a, {b: [c, d]}, [e]]
derived:
  <<: *base
  list: *l
  'quoted key': "tab\\tnewline\\n"
  ? complex
  : value
...
"""
    assert load(tmp_path, text) == yaml.safe_load(text)
