"""What every file format shares: picking the format, reading the file, decoding it.

Format-specific parsing is tested in test_sources_{json,yaml,toml,dotenv}.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from shmconf import SourceError
from shmconf.sources import (
    DotenvSource,
    FileSource,
    JsonSource,
    TomlSource,
    YamlSource,
    base,
    open_source,
    parse_document,
)
from shmconf.sources.base import MAX_FILE_BYTES

#: One small valid document per format, each loading to {"a": "1"}.
VALID = {"x.json": '{"a": "1"}', "x.yaml": "a: '1'\n", "x.toml": "a = '1'\n", "x.env": "A=1\n"}
FORMATS = sorted(VALID)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def fails(path: Path, match: str) -> SourceError:
    with pytest.raises(SourceError, match=match) as info:
        open_source(path).load()
    assert str(path) in str(info.value)
    return info.value


def test_all_formats_load_the_same_config(tmp_path: Path) -> None:
    expected = {"db": {"host": "h", "port": "5432"}, "debug": "true"}
    texts = {
        "a.json": '{"db": {"host": "h", "port": "5432"}, "debug": "true"}',
        "a.yaml": "db:\n  host: h\n  port: '5432'\ndebug: 'true'\n",
        "a.yml": "db: {host: h, port: '5432'}\ndebug: 'true'\n",
        "a.toml": "debug = 'true'\n[db]\nhost = 'h'\nport = '5432'\n",
        "a.env": "DB__HOST=h\nDB__PORT=5432\nDEBUG=true\n",
        ".env": "export DB__HOST=h\nDB__PORT=5432 # inline\nDEBUG=true\n",
    }
    for name, text in texts.items():
        assert open_source(write(tmp_path, name, text)).load() == expected, name


@pytest.mark.parametrize(("name", "cls"), [
    ("base.json", JsonSource), ("base.yaml", YamlSource), ("base.yml", YamlSource),
    ("BASE.YAML", YamlSource), ("prod.toml", TomlSource), ("prod.env", DotenvSource),
    (".env", DotenvSource), ("conf.d/.env", DotenvSource),
])
def test_open_source_picks_the_format_by_suffix(name: str, cls: type[FileSource]) -> None:
    source = open_source(name)
    assert type(source) is cls
    assert source.name == name
    assert isinstance(source, FileSource)
    assert source.path == Path(name)
    assert source.watch_paths() == [Path(name)]


def test_open_source_takes_path_objects(tmp_path: Path) -> None:
    source = open_source(tmp_path / "base.yaml")
    assert source.name == str(tmp_path / "base.yaml")


@pytest.mark.parametrize("name", ["x.ini", "x", "x.env.example", "x.json5"])
def test_unknown_suffix_names_the_file_and_lists_known_ones(name: str) -> None:
    with pytest.raises(SourceError, match=r"unknown file type .*use one of \.json, \.yaml, "
                                          r"\.yml, \.toml, \.env") as info:
        open_source(name)
    assert info.value.source == name


def test_repr_names_the_class_and_file() -> None:
    assert repr(open_source("/etc/app/base.yaml")) == "YamlSource('/etc/app/base.yaml')"
    assert repr(open_source("prod.toml")) == "TomlSource('prod.toml')"


def test_missing_file_names_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"^none\.yaml: file not found \((.+)\)$") as info:
        open_source("none.yaml").load()
    assert str(tmp_path / "none.yaml") in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    fails(tmp_path / "dir.yaml", "is a directory, not a file")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    fails(tmp_path / "pipe.json", "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", "a: 1\n")
    path.chmod(0)
    fails(path, "permission denied")


def test_unreadable_file_is_refused_also_as_root(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "x.yaml", "a: 1\n")
    real_open = os.open

    def deny(file: Any, flags: int, *args: Any) -> int:
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    fails(path, r"permission denied .*cannot read it")


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("content", ["", " ", "\n\n  \t\n", "\ufeff"])
def test_empty_files_are_refused(tmp_path: Path, name: str, content: str) -> None:
    error = fails(write(tmp_path, name, content), r": file is empty$")
    assert error.line is None


@pytest.mark.parametrize("name", ["x.yaml", "x.toml", "x.env"])
def test_comment_only_files_are_empty(tmp_path: Path, name: str) -> None:
    fails(write(tmp_path, name, "# all settings commented out\n#a: 1\n\n"),
          r"file is empty \(only comments or blank lines\)")


@pytest.mark.parametrize("name", FORMATS)
def test_binary_garbage_is_refused_at_its_line(tmp_path: Path, name: str) -> None:
    error = fails(write(tmp_path, name, b"a: 1\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
                  r":4:1: binary data: a NUL byte at byte offset 13")
    assert (error.line, error.column) == (4, 1)


@pytest.mark.parametrize("name", FORMATS)
def test_utf16_is_refused_as_binary(tmp_path: Path, name: str) -> None:
    fails(write(tmp_path, name, VALID[name].encode("utf-16")), "not in UTF-8 such as UTF-16")


@pytest.mark.parametrize("name", FORMATS)
def test_invalid_utf8_names_line_column_and_byte_offset(tmp_path: Path, name: str) -> None:
    error = fails(write(tmp_path, name, b"# first\n# caf\xe9\n"),
                  r":2:6: invalid UTF-8 at byte offset 13$")
    assert (error.line, error.column) == (2, 6)


@pytest.mark.parametrize("name", FORMATS)
def test_utf8_bom_is_dropped(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, b"\xef\xbb\xbf" + VALID[name].encode())
    assert open_source(path).load() == {"a": "1"}


@pytest.mark.parametrize("name", FORMATS)
def test_files_above_64_mib_are_refused_unread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with path.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    fails(path, f"file is {MAX_FILE_BYTES + 1} bytes, above the limit of {MAX_FILE_BYTES}")


def test_the_size_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "MAX_FILE_BYTES", 100)
    body = b'{"a": "1"}'
    path = tmp_path / "x.json"
    path.write_bytes(body + b" " * (100 - len(body)))
    assert open_source(path).load() == {"a": "1"}
    path.write_bytes(body + b" " * (101 - len(body)))
    fails(path, "file is 101 bytes, above the limit of 100 bytes")


def test_parse_document_reads_bytes_like_a_file_of_that_suffix() -> None:
    assert parse_document(b"a: 1\n", name="etcd://h/app.yaml", suffix=".yaml") == {"a": 1}
    assert parse_document(b"A__B=1\n", name="etcd://h/app.env", suffix=".env") == {
        "a": {"b": "1"}}
    with pytest.raises(SourceError, match=r"^etcd://h/app.json:1:6: Expecting value"):
        parse_document(b'{"a":}', name="etcd://h/app.json", suffix=".json")
    with pytest.raises(SourceError, match="cannot tell the format"):
        parse_document(b"a: 1", name="etcd://h/app", suffix="")
