"""Where configs come from: files in four formats, and etcd.

``open_source(spec)`` picks the source for a path or URL by its suffix or
scheme; ``load_sources(specs)`` loads and layers them. See ``docs/sources.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shmconf._errors import SourceError
from shmconf.sources.base import FileSource, Source
from shmconf.sources.dotenv import DotenvSource
from shmconf.sources.json import JsonSource
from shmconf.sources.merge import LoadedConfig, deep_merge, load_sources
from shmconf.sources.toml import TomlSource
from shmconf.sources.yaml import YamlSource

FILE_FORMATS: tuple[type[FileSource], ...] = (JsonSource, YamlSource, TomlSource, DotenvSource)


def _format_for(suffix: str, name: str) -> type[FileSource] | None:
    lowered = suffix.lower()
    for cls in FILE_FORMATS:
        if lowered in cls.suffixes:
            return cls
    return DotenvSource if name == ".env" else None


def open_source(spec: str | os.PathLike[str]) -> Source:
    """The source for a file path (by suffix) or an ``etcd://`` URL."""
    text = os.fspath(spec)
    if text.startswith(("etcd://", "etcds://")):
        from shmconf.sources.etcd import EtcdSource

        return EtcdSource(text)
    path = Path(text)
    cls = _format_for(path.suffix, path.name)
    if cls is None:
        known = ", ".join(s for c in FILE_FORMATS for s in c.suffixes)
        raise SourceError(text, f"unknown file type {path.suffix or '(none)'!r}; use one of "
                                f"{known}, or an etcd:// URL")
    return cls(path)


def parse_document(raw: bytes, *, name: str, suffix: str) -> dict[str, Any]:
    """Parse one document held elsewhere (an etcd key) like a file with ``suffix``."""
    cls = _format_for(suffix, suffix)
    if cls is None:
        known = ", ".join(s for c in FILE_FORMATS for s in c.suffixes)
        raise SourceError(name, f"cannot tell the format from {suffix or 'no suffix'!r}; "
                                f"name the key with one of {known}")
    return cls(name).parse_bytes(raw)


__all__ = [
    "DotenvSource",
    "FileSource",
    "JsonSource",
    "LoadedConfig",
    "Source",
    "TomlSource",
    "YamlSource",
    "deep_merge",
    "load_sources",
    "open_source",
    "parse_document",
]
