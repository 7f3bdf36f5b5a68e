"""JSON files (``.json``), read with the standard library's parser for its line numbers.

orjson is faster but reports no lines, and config files are small. The fast
path is one ``json.loads``; positions are worked out again only when
something is wrong: a duplicate key (refused at the line of the second one),
``NaN``/``Infinity`` (or a number such as ``1e400`` that overflows to it),
an integer outside 64 bits, or nesting deeper than ``MAX_DEPTH``.

An empty object ``{}`` is a valid, empty config; an empty file is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Final

from shmconf.errors import SourceError
from shmconf.sources.base import INT_MAX, MAX_DEPTH, FileSource, KeyPath, dotted

#: JSON's insignificant whitespace.
_WS: Final = re.compile(r"[ \t\n\r]*")
#: Strings (read whole, so brackets in them do not count), brackets and commas.
_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
#: Decodes the one value at an offset (of a document known to parse): finds positions.
_decode_at: Final = json.JSONDecoder().raw_decode
#: Integer literals longer than this are past 64 bits (and may be past Python's
#: 4300-digit ``int()`` limit, which would raise a ValueError with no position).
_MAX_INT_DIGITS: Final = 20


class JsonSource(FileSource):
    """A JSON file; see the module docstring for what is refused."""

    suffixes: ClassVar[tuple[str, ...]] = (".json",)

    def parse(self, text: str) -> Any:
        duplicates = False

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            nonlocal duplicates
            out = dict(items)
            if len(out) != len(items):
                duplicates = True
            return out

        try:
            try:
                data = json.loads(text, object_pairs_hook=pairs)
            except json.JSONDecodeError:
                raise
            except ValueError:
                # An integer literal too long for int(); load it as a value
                # that the shared check refuses with its key path.
                data = json.loads(text, object_pairs_hook=pairs, parse_int=_bounded_int)
        except json.JSONDecodeError as exc:
            comma = _trailing_comma(text, exc.pos)
            if comma is not None:
                # Python 3.13 words this itself, at the comma; older ones say
                # "Expecting property name" at the bracket: one message on all.
                line, column = _line_column(text, comma)
                raise SourceError(self.name, "trailing comma before the closing bracket "
                                             "(JSON allows none)", line, column) from None
            raise SourceError(self.name, exc.msg, exc.lineno, exc.colno) from None
        except RecursionError:
            # Where the parser gives up on depth depends on the interpreter
            # (Python 3.13 parses 2,000 levels): say what the shared check
            # says when it finds the same nesting.
            found = _too_deep_at(text)
            if found is None:
                raise SourceError(self.name, f"nested deeper than {MAX_DEPTH} levels") from None
            at, path = found
            line, column = _line_column(text, at)
            raise SourceError(self.name, f"{dotted(path)}: nested deeper than {MAX_DEPTH} "
                                         "levels", line, column) from None
        if duplicates:
            raise self._duplicate_error(text)
        return data

    def locate(self, text: str, path: KeyPath) -> tuple[int, int] | None:
        at = _value_at(text, path)
        return None if at is None else _line_column(text, at)

    def _duplicate_error(self, text: str) -> SourceError:
        found = _find_duplicate(text, _ws(text, 0), ())
        if found is None:  # only past MAX_DEPTH, which is refused anyway
            return SourceError(self.name, "duplicate key")
        path, key, second, first = found
        line, column = _line_column(text, second)
        return SourceError(self.name, f"{dotted((*path, key))}: duplicate key {key!r} (first on "
                                      f"line {_line_column(text, first)[0]})", line, column)


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    return INT_MAX + 1 if digits > _MAX_INT_DIGITS else int(literal)


def _ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _members(text: str, pos: int) -> Iterator[tuple[str, int, int]]:
    """``(key, key offset, value offset)`` of the object whose ``{`` is at ``pos``."""
    pos = _ws(text, pos + 1)
    while text.startswith('"', pos):
        key, end = _decode_at(text, pos)
        value_at = _ws(text, _ws(text, end) + 1)  # past the ':'
        yield key, pos, value_at
        _, end = _decode_at(text, value_at)
        pos = _ws(text, end)
        if text.startswith(",", pos):
            pos = _ws(text, pos + 1)


def _elements(text: str, pos: int) -> Iterator[int]:
    """Offsets of the items of the array whose ``[`` is at ``pos``."""
    pos = _ws(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        yield pos
        _, end = _decode_at(text, pos)
        pos = _ws(text, end)
        if text.startswith(",", pos):
            pos = _ws(text, pos + 1)


def _value_at(text: str, path: KeyPath) -> int | None:
    """Offset of the value at ``path`` in a document that parses."""
    pos = _ws(text, 0)
    for part in path:
        if isinstance(part, int) and text.startswith("[", pos):
            found = next((at for i, at in enumerate(_elements(text, pos)) if i == part), None)
        elif isinstance(part, str) and text.startswith("{", pos):
            found = next((at for key, _, at in _members(text, pos) if key == part), None)
        else:
            found = None
        if found is None:
            return None
        pos = found
    return pos


def _find_duplicate(text: str, pos: int, path: KeyPath) -> tuple[KeyPath, str, int, int] | None:
    """The first duplicate key in document order: its object's path, the key, and
    the offsets of its second and first occurrence."""
    if len(path) >= MAX_DEPTH:
        return None
    if text.startswith("{", pos):
        seen: dict[str, int] = {}
        for key, key_at, value_at in _members(text, pos):
            if key in seen:
                return path, key, key_at, seen[key]
            seen[key] = key_at
            found = _find_duplicate(text, value_at, (*path, key))
            if found is not None:
                return found
    elif text.startswith("[", pos):
        for index, at in enumerate(_elements(text, pos)):
            found = _find_duplicate(text, at, (*path, index))
            if found is not None:
                return found
    return None


def _trailing_comma(text: str, pos: int) -> int | None:
    """The offset of a comma right before a closing bracket, around error offset ``pos``."""
    if text.startswith(",", pos):  # Python 3.13 points at the comma
        after = _ws(text, pos + 1)
        return pos if text[after:after + 1] in ("}", "]") and after < len(text) else None
    if text[pos:pos + 1] in ("}", "]"):  # older ones at the bracket after it
        before = len(text[:pos].rstrip(" \t\n\r")) - 1
        return before if before >= 0 and text[before] == "," else None
    return None


def _too_deep_at(text: str) -> tuple[int, KeyPath] | None:
    """Offset and key path of the first bracket that opens level ``MAX_DEPTH + 1``.

    A lexeme scan that needs no recursion: it works where the parser gave up.
    """
    # One entry per open container: [current key (object) or index (list),
    # whether the next string in an object is a key].
    stack: list[list[Any]] = []
    for match in _TOKENS.finditer(text):
        lexeme = match.group()
        top = stack[-1] if stack else None
        if lexeme in ("[", "{"):
            if len(stack) + 1 > MAX_DEPTH:
                return match.start(), tuple(entry[0] for entry in stack)
            stack.append([0, False] if lexeme == "[" else [None, True])
        elif lexeme in ("]", "}"):
            if stack:
                stack.pop()
        elif lexeme == ",":
            if top is not None:
                if isinstance(top[0], int) and not top[1]:
                    top[0] += 1
                else:
                    top[1] = True
        elif lexeme.startswith('"') and top is not None and top[1]:
            top[0], top[1] = json.loads(lexeme), False
    return None
