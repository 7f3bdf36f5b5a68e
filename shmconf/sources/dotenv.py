"""``.env`` files: ``KEY=VALUE`` lines, as pydantic-settings and docker read them.

``#`` starts a comment line; blank lines are skipped; ``export KEY=VALUE``
works. Values may be 'single quoted' (taken as is) or "double quoted"
(``\\n``, ``\\t``, ``\\"`` and ``\\\\`` are unescaped). ``__`` in a key nests:
``DATABASE__HOST=db`` is ``{"database": {"host": "db"}}``. Keys are lower
cased. Every value is a string; the model converts it. A line without ``=``
is an error naming its line.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from shmconf._errors import SourceError
from shmconf.sources.base import FileSource

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def nest(target: dict[str, Any], key: str, value: Any, where: str,
         line: int | None = None) -> None:
    """Set ``value`` at the path ``key`` splits into at ``__`` (lower cased)."""
    parts = key.lower().split("__")
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


class DotenvSource(FileSource):
    suffixes: ClassVar[tuple[str, ...]] = (".env",)
    format_name: ClassVar[str] = ".env"

    def parse(self, text: str) -> Any:
        data: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep:
                raise SourceError(self.name, f"expected KEY=VALUE, found no '=' in {key[:40]!r}",
                                  number)
            if not _KEY.fullmatch(key):
                raise SourceError(self.name, f"invalid key {key[:40]!r}", number)
            if key.lower() in seen:
                raise SourceError(self.name, f"duplicate key {key!r} (first on line "
                                             f"{seen[key.lower()]})", number)
            seen[key.lower()] = number
            nest(data, key, self._value(value.strip(), number), self.name, number)
        return data

    def _value(self, value: str, line: int) -> str:
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = _closing_quote(value, quote)
            if end < 0:
                raise SourceError(self.name, f"unterminated {quote} quote", line)
            inner = value[1:end]
            if quote == '"':
                inner = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), inner)
            return inner
        # Unquoted: an inline comment needs whitespace before '#'.
        return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def _closing_quote(value: str, quote: str) -> int:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1
