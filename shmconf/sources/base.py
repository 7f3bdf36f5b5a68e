"""What every source is, and the checks every file source shares.

A source loads to plain JSON-compatible data: ``dict`` with ``str`` keys,
``list``, ``str``, ``int`` (64-bit), finite ``float``, ``bool`` and ``None``.
Anything else a format can produce is converted (dates become ISO-8601
strings) or rejected with the file and the key path, so that whatever loads
also serializes, and means the same in every worker.
"""

from __future__ import annotations

import abc
import datetime
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

from shmconf._errors import SourceError

#: Files larger than this are refused before they are read.
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
#: Deeper nesting is refused: no real config needs it, and it bounds recursion.
MAX_DEPTH: Final = 64
#: Values (with YAML aliases expanded) above this are refused: an alias bomb
#: stays small in memory but would expand to gigabytes when serialized.
MAX_NODES: Final = 1_000_000
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class Source(abc.ABC):
    """A place a config comes from. ``load()`` reads it now."""

    #: What messages show: the path as given, or a URL without credentials.
    name: str
    #: A version number of the source (an etcd revision), when it has one.
    revision: int | None = None

    @abc.abstractmethod
    def load(self) -> dict[str, Any]:
        """Read and parse the source now; raise :class:`SourceError` on any problem."""

    def watch_paths(self) -> list[Path]:
        """Files a file watcher should watch (none for non-file sources)."""
        return []

    def origin(self, path: tuple[str, ...]) -> str:
        """How messages name where the value at ``path`` came from."""
        return self.name

    def start_watch(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """Watch a non-file source, calling ``on_change()`` on changes.

        Returns the function that stops watching, or ``None`` when the source
        is watched through :meth:`watch_paths` (files) or not at all.
        """
        return None

    def health(self) -> dict[str, Any] | None:
        """The source's state for ``status`` (non-file sources)."""
        return None


class FileSource(Source):
    """A file in one format; subclasses only parse text."""

    #: File name suffixes of the format, lower case.
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: The name the format goes by in messages.
    format_name: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def watch_paths(self) -> list[Path]:
        return [self.path]

    def load(self) -> dict[str, Any]:
        return self.parse_bytes(self._read())

    def parse_bytes(self, raw: bytes) -> dict[str, Any]:
        """Decode, parse and check one document of this format."""
        text = decode(raw, self.name)
        if not text.strip():
            raise SourceError(self.name, "file is empty")
        data = self.parse(text)
        if data is None or (data == {} and not self.empty_mapping_allowed(text)):
            raise SourceError(self.name, "file holds no settings (only comments or blanks)")
        if not isinstance(data, dict):
            raise SourceError(
                self.name, f"top level must be a mapping, found {type_name(data)}", line=1
            )
        return normalize(data, self.name)

    def empty_mapping_allowed(self, text: str) -> bool:
        """Whether an empty mapping was written on purpose (``{}`` in JSON)."""
        return False

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """Parse a whole document; raise :class:`SourceError` with line and column."""

    def _read(self) -> bytes:
        path = self.path
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise SourceError(self.name, f"file is {size} bytes, above the limit of "
                                             f"{MAX_FILE_BYTES}")
            return path.read_bytes()
        except FileNotFoundError:
            raise SourceError(self.name, f"file not found ({path.absolute()})") from None
        except IsADirectoryError:
            raise SourceError(self.name, "is a directory, not a file") from None
        except PermissionError:
            raise SourceError(self.name, "permission denied: the publisher's user cannot "
                                         "read it") from None
        except OSError as exc:
            raise SourceError(self.name, f"cannot read: {exc.strerror}") from None


def decode(raw: bytes, name: str) -> str:
    """UTF-8 text of a document, or an error at the line of the first bad byte."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise SourceError(name, "binary data (a NUL byte): not a text file",
                          line=raw.count(b"\n", 0, nul) + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(name, f"invalid UTF-8 at byte {exc.start}", line, column) from None
    return text.removeprefix("\ufeff")


def type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def normalize(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Check and convert parsed data to plain JSON types (see the module docstring)."""
    budget = [MAX_NODES]

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise SourceError(name, f"more than {MAX_NODES} values (a YAML alias bomb?)")
        if len(path) > MAX_DEPTH:
            raise SourceError(name, f"{'.'.join(path[:8])}...: nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SourceError(name, f"{_dotted(path, key)}: key is a {type_name(key)}, "
                                            "not a string; quote it")
                out[key] = walk(item, (*path, key))
            return out
        if isinstance(value, (list, tuple)):
            return [walk(item, (*path, str(i))) for i, item in enumerate(value)]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                raise SourceError(name, f"{_dotted(path)}: integer beyond 64 bits")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise SourceError(name, f"{_dotted(path)}: NaN and Infinity cannot be "
                                        "published (JSON has no such numbers)")
            return value
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()
        raise SourceError(name, f"{_dotted(path)}: a {type_name(value)} is not a config value")

    result: dict[str, Any] = walk(data, ())
    return result


def _dotted(path: tuple[str, ...], key: Any = None) -> str:
    parts = [*path, str(key)] if key is not None else list(path)
    return ".".join(parts) or "(root)"
