"""``.env`` files: ``KEY=VALUE`` lines, as pydantic-settings and docker read them.

* ``#`` at the start of a line makes it a comment; blank lines are skipped.
* ``export KEY=VALUE`` works (the ``export`` is dropped).
* Values may be ``'single quoted'`` (taken as they are) or ``"double
  quoted"`` (``\\n``, ``\\t``, ``\\r``, ``\\"`` and ``\\\\`` are unescaped); a
  quoted value ends on its line. Unquoted values end at `` #`` (a comment
  needs a space before it) and are stripped.
* ``__`` in a key nests: ``DATABASE__HOST=db`` is ``{"database": {"host":
  "db"}}``. Keys are lower-cased.
* Every value is a string; the model converts it.
* A line without ``=``, a bad key, a duplicate key, an unterminated quote or
  text after a closing quote is an error naming the line.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final

from shmconf.errors import SourceError
from shmconf.sources.base import FileSource, KeyPath, key_path, nest

#: What a key may hold (the same as a shell variable, plus ``.`` and ``-``).
_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
#: Escapes understood inside double quotes.
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
#: An unquoted value's inline comment: `` #`` to the end of the line.
_INLINE_COMMENT: Final = re.compile(r"\s+#")
class DotenvSource(FileSource):
    """A ``.env`` file; see the module docstring for the syntax."""

    suffixes: ClassVar[tuple[str, ...]] = (".env",)

    def parse(self, text: str) -> Any:
        data: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for number, key, value in self._lines(text):
            lowered = key.lower()
            if lowered in seen:
                raise SourceError(self.name, f"duplicate key {key!r} (first on line "
                                             f"{seen[lowered]})", number)
            seen[lowered] = number
            nest(data, key, self._value(value, number), self.name, number)
        if not data:
            raise self.empty()
        return data

    def locate(self, text: str, path: KeyPath) -> tuple[int, int] | None:
        for number, key, _ in self._lines(text):
            if tuple(key_path(key))[: len(path)] == path:
                return number, 1
        return None

    def _lines(self, text: str) -> list[tuple[int, str, str]]:
        """``(line number, key, raw value)`` of each setting line."""
        found = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep:
                # The line is not echoed: it could be a secret pasted on its own.
                raise SourceError(self.name, "expected KEY=VALUE, found a line without '='",
                                  number)
            if not _KEY.fullmatch(key):
                raise SourceError(self.name, "invalid key: use letters, digits and _ (and "
                                             "'.' or '-'), not starting with a digit", number)
            found.append((number, key, value.strip()))
        return found

    def _value(self, value: str, line: int) -> str:
        if value[:1] not in ("'", '"'):
            return _INLINE_COMMENT.split(value, maxsplit=1)[0].strip()
        quote = value[0]
        end = _closing_quote(value, quote)
        if end < 0:
            raise SourceError(self.name, f"unterminated {quote} quote (quoted values end on "
                                         "their line)", line)
        rest = value[end + 1:].strip()
        if rest and not rest.startswith("#"):
            raise SourceError(self.name, f"text after the closing {quote} quote", line)
        inner = value[1:end]
        if quote == '"':
            inner = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), inner)
        return inner


def _closing_quote(value: str, quote: str) -> int:
    """Index of the quote that closes ``value[0]``, or -1."""
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1
