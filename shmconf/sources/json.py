"""JSON files (``.json``): the standard library's parser, for its line numbers.

Duplicate keys, ``NaN``/``Infinity`` and integers beyond 64 bits are
refused with the line they are on.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from shmconf._errors import SourceError
from shmconf.sources.base import FileSource


class JsonSource(FileSource):
    suffixes: ClassVar[tuple[str, ...]] = (".json",)
    format_name: ClassVar[str] = "JSON"

    def empty_mapping_allowed(self, text: str) -> bool:
        return True

    def parse(self, text: str) -> Any:
        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in items:
                if key in out:
                    raise SourceError(self.name, f"duplicate key {key!r}",
                                      line=_line_of_second_key(text, key))
                out[key] = value
            return out

        def constant(token: str) -> Any:
            raise SourceError(self.name, f"{token} is not allowed (JSON has no such number)",
                              line=_line_of(text, rf"(?<![\w\"]){token}"))

        def integer(literal: str) -> int:
            value = int(literal)
            if not -(2**63) <= value <= 2**64 - 1:
                raise SourceError(self.name, f"integer {literal[:24]} is beyond 64 bits",
                                  line=_line_of(text, re.escape(literal)))
            return value

        try:
            return json.loads(text, object_pairs_hook=pairs, parse_constant=constant,
                              parse_int=integer)
        except json.JSONDecodeError as exc:
            raise SourceError(self.name, exc.msg, exc.lineno, exc.colno) from None
        except RecursionError:
            raise SourceError(self.name, "nested too deeply") from None


def _line_of(text: str, pattern: str) -> int | None:
    match = re.search(pattern, text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _line_of_second_key(text: str, key: str) -> int | None:
    matches = list(re.finditer(re.escape(json.dumps(key)) + r"\s*:", text))
    if len(matches) < 2:
        return None
    return text.count("\n", 0, matches[1].start()) + 1
