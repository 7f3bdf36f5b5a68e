"""Which source serves a path or URL: file formats by suffix, etcd by scheme.

The one place that knows every format. ``merge.py`` and the etcd source (a
key holding a whole document) come here for a source, so nothing imports the
package ``__init__`` from inside the package, and there is no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from shmconf.errors import SourceError
from shmconf.sources.base import FileSource, Source
from shmconf.sources.dotenv import DotenvSource
from shmconf.sources.json import JsonSource
from shmconf.sources.toml import TomlSource
from shmconf.sources.yaml import YamlSource

#: The file formats, by suffix; ``open_source`` tries them in this order.
FILE_FORMATS: Final[tuple[type[FileSource], ...]] = (
    JsonSource, YamlSource, TomlSource, DotenvSource,
)


def _format_for(path: Path) -> type[FileSource] | None:
    # A file named just ".env" has no suffix as pathlib sees it.
    suffix = ".env" if path.name.lower() == ".env" else path.suffix.lower()
    return next((cls for cls in FILE_FORMATS if suffix in cls.suffixes), None)


def _known_suffixes() -> str:
    return ", ".join(s for cls in FILE_FORMATS for s in cls.suffixes)


def open_source(spec: str | os.PathLike[str]) -> Source:
    """The source for a file path (picked by its suffix) or an ``etcd://`` URL.

    Nothing is read yet: :meth:`Source.load` does that.

    Args:
        spec: ``.json``, ``.yaml``/``.yml``, ``.toml`` or ``.env`` (a file
            named ``.env`` or ``*.env``) file, or an ``etcd://`` or
            ``etcds://`` URL.

    Raises:
        SourceError: for a suffix that names no format, listing those that do.
    """
    text = os.fspath(spec)
    if text.startswith(("etcd://", "etcds://")):
        from shmconf.sources.etcd import EtcdSource

        return EtcdSource(text)
    path = Path(text)
    cls = _format_for(path)
    if cls is None:
        raise SourceError(text, f"unknown file type {path.suffix or '(no suffix)'!r}; use one "
                                f"of {_known_suffixes()}, or an etcd:// URL")
    return cls(text)


def parse_document(raw: bytes, *, name: str, suffix: str) -> dict[str, Any]:
    """Parse a document held elsewhere (an etcd key) like a file with ``suffix``.

    Raises:
        SourceError: naming ``name``, as for a file.
    """
    cls = _format_for(Path("document" + suffix))
    if cls is None:
        raise SourceError(name, f"cannot tell the format from {suffix or '(no suffix)'!r}; "
                                f"name the key with one of {_known_suffixes()}")
    return cls(name).parse_bytes(raw)
