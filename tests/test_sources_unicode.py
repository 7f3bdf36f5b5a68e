"""Strings that are not valid Unicode (lone surrogates) are refused at their source.

JSON's ``\\ud800`` escape and an environment variable whose bytes are not
UTF-8 both give Python strings that orjson cannot serialize. They are refused
where they come from, with the file, line, column and key path (or the
variable's name), never later with no location or a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shmconf
from shmconf.sources import load_sources
from tests.helpers import REPO, load_fails


def test_a_lone_surrogate_in_json_is_refused_at_its_line(tmp_path: Path) -> None:
    error = load_fails(tmp_path, "app.json", '{"a": 1,\n "b": {"c": "x\\ud800"}}\n',
                       r"^:2:13: b\.c: string not valid Unicode: a surrogate code point "
                       r"\\ud800 at character 1 \(a \\ud800-\\udfff escape, which JSON "
                       r"allows only as a pair, or bytes that are not UTF-8\)$")
    assert (error.line, error.column) == (2, 13)


def test_a_pair_of_surrogate_escapes_is_one_character(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    path.write_text('{"emoji": "\\ud83d\\ude00"}\n', encoding="utf-8")
    assert load_sources([path]).data == {"emoji": "\U0001f600"}


def test_a_lone_surrogate_in_a_key_is_refused_with_the_key_escaped(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.json", '{"a": {"k\\udc80": 1}}\n',
               r"^:1:\d+: a\.k\\udc80: key not valid Unicode: a surrogate code point "
               r"\\udc80")


def test_a_non_utf8_variable_is_refused_by_name() -> None:
    with pytest.raises(shmconf.SourceError) as info:
        load_sources([], env_prefix="MYAPP_", environ={"MYAPP_DB__HOST": "db\udcff"})
    assert str(info.value).startswith("env:MYAPP_DB__HOST: DB.HOST: string not valid Unicode")


def test_a_non_utf8_variable_name_is_shown_escaped() -> None:
    with pytest.raises(shmconf.SourceError) as info:
        load_sources([], env_prefix="MYAPP_", environ={"MYAPP_K\udcff": "x"})
    message = str(info.value)
    assert message.startswith("env:MYAPP_K\\udcff: K\\udcff: key not valid Unicode")
    message.encode("utf-8")  # printable as it is


def test_validate_and_publish_refuse_a_non_utf8_variable(tmp_path: Path, name: str) -> None:
    # A real process environment with bytes that are not UTF-8.
    (tmp_path / "app.json").write_text('{"db": {"host": "ok"}}\n', encoding="utf-8")
    env = {**os.environb, b"MYAPP_DB__HOST": b"db-\xff"}
    for command in (["validate", "-c", "app.json"],
                    ["publish", name, "-c", "app.json"]):
        result = subprocess.run(
            [sys.executable, "-m", "shmconf", *command, "--env-prefix", "MYAPP_"],
            cwd=tmp_path, env={**env, b"PYTHONPATH": os.fsencode(REPO)},
            capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "env:MYAPP_DB__HOST: db.host: string not valid Unicode" in result.stderr, \
            result.stderr


def test_publish_of_a_mapping_names_the_path_of_a_bad_string(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        with pytest.raises(shmconf.ConfigValidationError,
                           match=r"a\.b: not JSON-serializable: str is not valid UTF-8"):
            publisher.publish({"a": {"b": "\ud800"}})
        assert publisher.generation == 0
        publisher.unlink()


def test_publish_of_a_mapping_names_the_value_orjson_refused(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        with pytest.raises(shmconf.ConfigValidationError,
                           match=r"b\.1: not JSON-serializable: Type is not JSON "
                                 r"serializable: set"):
            publisher.publish({"a": 1, "b": [1, {2}]})
        publisher.unlink()


def test_a_file_name_that_is_not_utf8_is_printable(tmp_path: Path) -> None:
    path = os.fsdecode(os.fsencode(tmp_path) + b"/app-\xff.json")
    with open(path, "w", encoding="utf-8") as file:
        file.write("{")
    with pytest.raises(shmconf.SourceError) as info:
        load_sources([path])
    assert "app-\\udcff.json" in str(info.value)
    str(info.value).encode("utf-8")
