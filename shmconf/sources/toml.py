"""TOML files (``.toml``): ``tomllib``, or ``tomli`` on Python 3.10.

Syntax errors carry the line and column that the parser puts in its message
("... (at line 3, column 7)"). Dates, times and date-times become ISO-8601
strings (``2026-11-22T10:00:00+00:00``); ``nan`` and ``inf`` are refused, and
so are integers outside 64 bits, with their key path (TOML's parser reports
no position for values, so these name the key, not the line). A file of only
comments is empty.
"""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar, Final

from shmconf.errors import SourceError
from shmconf.sources.base import MAX_DEPTH, FileSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: Where the parser puts the position in its message.
_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
#: What the parser says instead for errors at the end of the text.
_AT_END: Final = " (at end of document)"


class TomlSource(FileSource):
    """A TOML file; see the module docstring."""

    suffixes: ClassVar[tuple[str, ...]] = (".toml",)

    def parse(self, text: str) -> Any:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = _POSITION.search(message)
            reason = _POSITION.sub("", message).strip() or "invalid TOML"
            if found:
                raise SourceError(self.name, reason, int(found[1]), int(found[2])) from None
            if message.endswith(_AT_END):
                line = text.count("\n") + 1
                column = len(text) - (text.rfind("\n") + 1) + 1
                raise SourceError(self.name, message.removesuffix(_AT_END), line, column) \
                    from None
            raise SourceError(self.name, reason) from None
        except RecursionError:
            raise SourceError(self.name, f"nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as exc:
            # tomllib checks syntax; int() refuses what it cannot hold (more
            # than 4300 digits). Its message names the limit, not the value.
            raise SourceError(self.name, f"a value cannot be read: {exc}") from None
        if not data:
            raise self.empty()
        return data
