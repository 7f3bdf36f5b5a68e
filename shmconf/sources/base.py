"""What every source is, and the checks every file source shares.

A source loads to plain JSON-compatible data: ``dict`` with ``str`` keys,
``list``, ``str``, ``int`` (64-bit), finite ``float``, ``bool`` and ``None``.
Anything else a format can produce is converted (dates and times become
ISO-8601 strings) or rejected with the file, the key path and, where the
format can tell, the line, so that whatever loads also serializes with orjson
and means the same in every worker.

Messages name keys, files, lines and types, never values: a value could be a
password.
"""

from __future__ import annotations

import abc
import datetime
import math
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from shmconf.errors import SourceError

#: Files larger than this are refused before they are read: a config is
#: kilobytes, and a runaway file must not make the publisher read gigabytes.
MAX_FILE_BYTES: Final = 64 * 1024 * 1024
#: Deeper nesting is refused (the top-level mapping is level 1): no real
#: config needs it, and it bounds every recursion that walks the data.
MAX_DEPTH: Final = 64
#: More values than this (with YAML aliases expanded) are refused: an alias
#: bomb is small in memory but would expand to gigabytes when serialized.
MAX_NODES: Final = 1_000_000
#: The range orjson can serialize: signed and unsigned 64-bit.
INT_MIN: Final = -(2**63)
#: See :data:`INT_MIN`.
INT_MAX: Final = 2**64 - 1
#: The reason given for an empty file; a watcher can see a file between the
#: truncate and the write of a save, so empty is never taken as "no settings".
EMPTY_REASON: Final = "file is empty"

#: Key paths longer than this are shortened in messages.
_SHOWN_PARTS: Final = 16

#: A key path inside a document: ``str`` for mapping keys, ``int`` for list indexes.
KeyPath = tuple[str | int, ...]


class InvalidData(Exception):
    """A value that cannot be published, found at ``path``; becomes a SourceError."""

    def __init__(self, path: KeyPath, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def message(self) -> str:
        """``path: reason``, the path written as pydantic writes a ``loc``."""
        return f"{dotted(self.path)}: {self.reason}"


class Source(abc.ABC):
    """A place a config comes from. ``load()`` reads it now."""

    #: What messages show: the path as given, or a URL without credentials.
    name: str
    #: A version number of the source (an etcd revision), when it has one.
    revision: int | None = None

    @abc.abstractmethod
    def load(self) -> dict[str, Any]:
        """Read and parse the source now.

        Returns:
            The document as plain JSON-compatible data with a mapping on top.

        Raises:
            SourceError: on any problem, naming the source and, where known,
                the line and the key path.
        """

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
    """A file in one format. Subclasses implement :meth:`parse`, nothing else.

    Reading, decoding, the empty-file check and the data checks are shared,
    so every format rejects the same bad input with the same words.
    """

    #: File name suffixes of the format, lower case.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """A source for the file at ``path`` (nothing is read yet).

        Args:
            path: the file; messages show it as given.
        """
        self.path = Path(path)
        self.name = os.fspath(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def watch_paths(self) -> list[Path]:
        return [self.path]

    def load(self) -> dict[str, Any]:
        return self.parse_bytes(self._read())

    def parse_bytes(self, raw: bytes) -> dict[str, Any]:
        """Decode, parse and check one document of this format.

        Also used for documents that are not files (an etcd key holding a
        YAML document), with :attr:`name` naming where they came from.
        """
        text = decode(raw, self.name)
        if not text.strip():
            raise SourceError(self.name, EMPTY_REASON)
        try:
            data = self.parse(text)
            if not isinstance(data, dict):
                raise InvalidData((), f"top level must be a mapping, found {type_name(data)}")
            return normalize(data)
        except InvalidData as exc:
            where = self.locate(text, exc.path)
            line, column = where if where is not None else (None, None)
            raise SourceError(self.name, exc.message(), line, column) from None

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """Parse a whole document.

        Args:
            text: the decoded document, never blank.

        Returns:
            What the document holds, before the shared checks of
            :func:`normalize`.

        Raises:
            SourceError: for syntax errors (with line and column), and with
                :data:`EMPTY_REASON` when the document holds only comments.
        """

    def locate(self, text: str, path: KeyPath) -> tuple[int, int] | None:
        """The 1-based ``(line, column)`` of the value at ``path``, if the format knows.

        Only called on the error path, so it may re-read ``text`` slowly.
        """
        return None

    def empty(self) -> SourceError:
        """The error for a document that holds nothing but comments and blanks."""
        return SourceError(self.name, f"{EMPTY_REASON} (only comments or blank lines)")

    def _read(self) -> bytes:
        absolute = self.path.absolute()
        try:
            # O_NONBLOCK: opening a FIFO must not hang the publisher until a
            # writer shows up; the fstat below then refuses it.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceError(self.name, f"file not found ({absolute})") from None
        except PermissionError:
            raise SourceError(self.name, f"permission denied ({absolute}): the publisher's "
                                         "user cannot read it") from None
        except OSError as exc:
            raise SourceError(self.name, f"cannot open ({absolute}): {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise SourceError(self.name, f"is a directory, not a file ({absolute})")
            if not stat.S_ISREG(info.st_mode):
                raise SourceError(self.name, f"not a regular file ({absolute})")
            if info.st_size > MAX_FILE_BYTES:
                raise SourceError(self.name, _too_large(info.st_size))
            file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with file:
            try:
                # Sized by fstat: read(n) allocates n bytes up front. One byte
                # more shows whether the file grew since; then read on, up to
                # one byte past the limit.
                raw = file.read(info.st_size + 1)
                if len(raw) > info.st_size:
                    raw += file.read(MAX_FILE_BYTES + 1 - len(raw))
            except OSError as exc:
                raise SourceError(self.name, f"cannot read ({absolute}): {exc.strerror}") \
                    from None
        if len(raw) > MAX_FILE_BYTES:
            raise SourceError(self.name, _too_large(len(raw)))
        return raw


def _too_large(size: int) -> str:
    return f"file is {size} bytes, above the limit of {MAX_FILE_BYTES} bytes"


def decode(raw: bytes, name: str) -> str:
    """UTF-8 text of a document, or an error at the line of the first bad byte.

    A leading byte-order mark is dropped.
    """
    nul = raw.find(b"\0")
    if nul >= 0:
        line, column = _position(raw, nul)
        raise SourceError(name, f"binary data: a NUL byte at byte offset {nul} (a binary "
                                "file, or text not in UTF-8 such as UTF-16)", line, column)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start)
        raise SourceError(name, f"invalid UTF-8 at byte offset {exc.start}", line,
                          column) from None
    return text.removeprefix("\ufeff")


def _position(raw: bytes, offset: int) -> tuple[int, int]:
    """1-based line and (byte) column of ``offset``."""
    return raw.count(b"\n", 0, offset) + 1, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


def type_name(value: Any) -> str:
    """What a value is, in the words of JSON (messages show types, never values)."""
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def dotted(path: KeyPath) -> str:
    """``a.b.0.c``: a key path as pydantic prints a ``loc``; ``(root)`` when empty.

    Paths longer than :data:`_SHOWN_PARTS` (only too-deep ones) are cut short.
    """
    if len(path) > _SHOWN_PARTS:
        shown = ".".join(_shown(p) for p in path[: _SHOWN_PARTS - 1])
        return f"{shown}...({len(path) - _SHOWN_PARTS + 1} more).{_shown(path[-1])}"
    return ".".join(_shown(p) for p in path) or "(root)"


def _shown(part: str | int) -> str:
    """A path part as messages print it: a lone surrogate as its ``\\udxxx`` escape,
    so that the message itself can be written to a UTF-8 terminal or log."""
    text = str(part)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be published as UTF-8 (a lone surrogate), or ``None``.

    JSON's ``\\ud800`` escapes and environment variables that are not UTF-8
    (Python keeps their bytes as lone surrogates) give such strings; orjson
    refuses them later with no location, so they are refused at the source.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return (f"not valid Unicode: a surrogate code point \\u{code:04x} at character "
                f"{exc.start} (a \\ud800-\\udfff escape, which JSON allows only as a pair, "
                "or bytes that are not UTF-8)")
    return None


def normalize(data: dict[str, Any]) -> dict[str, Any]:
    """A checked copy of ``data`` in plain JSON types (see the module docstring).

    Raises:
        InvalidData: naming the key path of the first value that cannot be
            published. Callers turn it into a :class:`SourceError`.
    """
    budget = MAX_NODES

    def walk(value: Any, path: KeyPath, depth: int) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise InvalidData(path, f"more than {MAX_NODES} values")
        if isinstance(value, dict):
            _check_depth(path, depth)
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidData((*path, str(key)), f"found a key of type "
                                                         f"{type_name(key)}; keys must be "
                                                         "strings")
                problem = unicode_problem(key)
                if problem is not None:
                    raise InvalidData((*path, key), f"key {problem}")
                out[key] = walk(item, (*path, key), depth + 1)
            return out
        if isinstance(value, (list, tuple)):
            _check_depth(path, depth)
            return [walk(item, (*path, i), depth + 1) for i, item in enumerate(value)]
        return _scalar(value, path)

    result: dict[str, Any] = walk(data, (), 1)
    return result


def _scalar(value: Any, path: KeyPath) -> Any:
    """``value`` (not a container) as published, or InvalidData naming ``path``."""
    if isinstance(value, str):
        problem = unicode_problem(value)
        if problem is not None:
            raise InvalidData(path, f"string {problem}")
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidData(path, "integer outside the 64-bit range [-2**63, 2**64-1] "
                                    "that orjson can serialize")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidData(path, "NaN and Infinity cannot be published (JSON has no "
                                    "such numbers)")
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        # datetime is a subclass of date, so this covers all three.
        return value.isoformat()
    raise InvalidData(path, f"found a value of type {type_name(value)}; config values are "
                            "strings, numbers, booleans, null, lists and mappings")


def check_expanded_size(data: Any) -> None:
    """Refuse data whose expanded size is above :data:`MAX_NODES`, or that refers to itself.

    YAML aliases make several places hold the same object. This counts every
    container once per place it appears, as serializing would, but computes
    each shared container's size once, so an alias bomb (``10**9`` values in a
    kilobyte) is measured in microseconds and never expanded.

    Raises:
        InvalidData: naming the path of the largest part (or of the cycle).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any, path: KeyPath, depth: int) -> int:
        if isinstance(value, dict):
            children: list[tuple[str | int, Any]] = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            children = list(enumerate(value))
        else:
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InvalidData(path, "refers to itself (a recursive alias)")
        _check_depth(path, depth)
        active.add(key)
        total = 1 + sum(size(item, (*path, k), depth + 1) for k, item in children)
        active.discard(key)
        sizes[key] = total
        return total

    if size(data, (), 1) <= MAX_NODES:
        return
    # Name the deepest part that is too large on its own: that is the bomb.
    path: KeyPath = ()
    node = data
    while True:
        items = (list(node.items()) if isinstance(node, dict)
                 else list(enumerate(node)) if isinstance(node, (list, tuple)) else [])
        big = [(k, v) for k, v in items if size(v, (*path, k), len(path) + 2) > MAX_NODES]
        if not big:
            break
        path, node = (*path, big[0][0]), big[0][1]
    total = size(node, path, len(path) + 1)
    raise InvalidData(path, f"expands to {total} values with aliases expanded, above the "
                            f"limit of {MAX_NODES}")


def _check_depth(path: KeyPath, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidData(path, f"nested deeper than {MAX_DEPTH} levels")


# -- nested keys (.env files and environment overrides) -----------------------------

#: The separator that nests keys, as in pydantic-settings' ``env_nested_delimiter``.
NESTED_DELIMITER: Final = "__"


def nest(target: dict[str, Any], key: str, value: Any, where: str,
         line: int | None = None, *, parts: Sequence[str] | None = None) -> None:
    """Set ``value`` at the path that ``key`` splits into at ``__``, lower-cased (.env files).

    ``parts`` gives the path instead, as it is (environment overrides match
    each part to the keys and fields it names; see ``merge.py``).

    Raises:
        SourceError: naming ``where`` (and ``line``) when a part is empty or
            the key both holds a value and has keys below it.
    """
    parts = key_path(key) if parts is None else list(parts)
    if not all(parts):
        raise SourceError(where, f"key {key!r} has an empty part between '__'", line)
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SourceError(where, f"key {key!r} nests under {part!r}, which holds a value",
                              line)
        node = child
    if isinstance(node.get(parts[-1]), dict):
        raise SourceError(where, f"key {key!r} holds a value but also has keys below it", line)
    node[parts[-1]] = value


def key_path(key: str) -> list[str]:
    """``DATABASE__HOST`` -> ``["database", "host"]``."""
    return key.lower().split(NESTED_DELIMITER)



def check_data(data: Any, name: str) -> dict[str, Any]:
    """:func:`normalize` for data that does not come from a file (etcd, environment).

    Raises:
        SourceError: naming ``name`` and the key path.
    """
    try:
        if not isinstance(data, dict):
            raise InvalidData((), f"top level must be a mapping, found {type_name(data)}")
        check_expanded_size(data)
        return normalize(data)
    except InvalidData as exc:
        raise SourceError(name, exc.message()) from None
