"""TOML sources: what loads, conversions, and bad input at its file:line or key path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shmconf import SourceError
from shmconf.sources import TomlSource, open_source
from tests.helpers import load_fails, load_text


def load(tmp_path: Path, text: str, name: str = "app.toml") -> dict[str, Any]:
    return load_text(tmp_path, name, text)


def fails(tmp_path: Path, text: str, match: str) -> SourceError:
    return load_fails(tmp_path, "app.toml", text, match)


def test_loads_tables_arrays_and_inline_tables(tmp_path: Path) -> None:
    text = """\
name = "svc"
ratio = 0.25
debug = false

[db]
host = "h"
port = 5432
opts = { ssl = true }

[[servers]]
addr = "a"

[[servers]]
addr = "b"
"""
    assert load(tmp_path, text) == {
        "name": "svc", "ratio": 0.25, "debug": False,
        "db": {"host": "h", "port": 5432, "opts": {"ssl": True}},
        "servers": [{"addr": "a"}, {"addr": "b"}],
    }


def test_source_type() -> None:
    assert isinstance(open_source("x.toml"), TomlSource)


def test_a_table_header_alone_is_a_config(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing set yet\n[db]\n") == {"db": {}}


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("a = 1\nb = \n", ":2:5", "Invalid value"),
    ("a = 1\n[db\n", ":2:4", ""),
    ("a = 'x\n", ":2:1", "Expected"),
])
def test_syntax_errors_have_line_and_column(tmp_path: Path, text: str, where: str,
                                            reason: str) -> None:
    error = fails(tmp_path, text, "^" + re.escape(where) + ": " + reason)
    assert str(error.line) == where.split(":")[1]
    assert "(at " not in str(error)  # the position is moved into file:line:column


def test_duplicate_keys_are_refused_at_the_second_one(tmp_path: Path) -> None:
    error = fails(tmp_path, "a = 1\nb = 2\na = 3\n", r"^:3:\d+: Cannot overwrite a value")
    assert error.line == 3
    fails(tmp_path, "[db]\nx = 1\n[db]\ny = 2\n", r"^:3:\d+: ")


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
def test_nan_and_infinity_are_refused_with_the_key_path(tmp_path: Path, value: str) -> None:
    fails(tmp_path, f"[limits]\nratio = {value}\n",
          r"^: limits\.ratio: NaN and Infinity cannot be published")


@pytest.mark.parametrize("value", ["18446744073709551616", "-9223372036854775809",
                                   "0xffffffffffffffffff"])
def test_integers_outside_64_bits_are_refused_with_the_key_path(tmp_path: Path, value: str
                                                                ) -> None:
    error = fails(tmp_path, f"[[servers]]\nport = 1\n[[servers]]\nport = {value}\n",
                  r"^: servers\.1\.port: integer outside the 64-bit range")
    assert value not in str(error)


def test_integers_at_the_64_bit_edges_load(tmp_path: Path) -> None:
    data = load(tmp_path, "a = 18446744073709551615\nb = -9223372036854775808\n")
    assert data == {"a": 2**64 - 1, "b": -(2**63)}


def test_dates_and_times_become_iso_strings(tmp_path: Path) -> None:
    text = """\
day = 2026-11-22
at = 2026-11-22T10:00:00Z
offset = 2026-11-22T10:00:00.5+02:00
local = 2026-11-22T10:00:00
clock = 07:30:00
"""
    assert load(tmp_path, text) == {
        "day": "2026-11-22", "at": "2026-11-22T10:00:00+00:00",
        "offset": "2026-11-22T10:00:00.500000+02:00", "local": "2026-11-22T10:00:00",
        "clock": "07:30:00",
    }


def test_nesting_deeper_than_64_is_refused_with_the_key_path(tmp_path: Path) -> None:
    def inline(depth: int) -> str:
        return "a = " + "{b = " * (depth - 2) + "{}" + "}" * (depth - 2) + "\n"

    assert load(tmp_path, inline(64))
    fails(tmp_path, inline(65), r"^: a\.b\.b.*\.b: nested deeper than 64 levels$")


def test_messages_never_carry_values(tmp_path: Path) -> None:
    error = fails(tmp_path, 'password = "hunter2"\npassword = "hunter3"\n', "overwrite")
    assert "hunter" not in str(error)
    error = fails(tmp_path, 'password = "hunter2"\nn = nan\n', "NaN")
    assert "hunter" not in str(error)
