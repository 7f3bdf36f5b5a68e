"""Pure functions on a config's published data: canonical form, digest, diff, secrets.

Shared by the publisher, the history and the CLI; no I/O, no shared memory.
"""

from __future__ import annotations

import functools
import hashlib
import typing
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Final

import orjson

#: A diff listing more changed paths than this is cut, so the slot's meta
#: and the log line stay small for a config rewritten from scratch.
MAX_CHANGED_PATHS: Final = 100
#: Key names that look secret when no model says which fields are secret.
SECRET_WORDS: Final = ("password", "passwd", "secret", "token", "key", "credential", "private")
REDACTED: Final = "**********"


def canonical(data: Mapping[str, Any]) -> bytes:
    """The one byte form of a config: orjson with sorted keys.

    Two sources that merge to the same config give the same bytes, so the
    digest of this is what tells "changed" from "rewritten".
    """
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


#: Payloads from this size on carry their sections (see :func:`sections`).
SECTIONED_FROM: Final = 32 * 1024
#: About this many bytes per section.
SECTION_BYTES: Final = 16 * 1024


def sections(data: Mapping[str, Any], payload: bytes) -> list[list[Any]] | None:
    """Where a large payload can be cut, so that a reader can parse it piece by piece.

    ``[[key, start, end, kind], ...]`` in payload order: ``kind`` ``"value"``
    is the whole value of top-level ``key`` at ``payload[start:end]``;
    ``"items"`` is a run of elements of the top-level list ``key``, without
    the brackets (``b"[" + payload[start:end] + b"]"`` parses). The cuts are
    checked against the payload: ``None`` when they do not rebuild it
    exactly, or when the payload is small enough to parse in one go.

    A reader's adoption thread parses a large config this way and lets
    other threads run between pieces, so that a request waits for one piece
    at most, not for the whole parse (orjson holds the GIL for a call).
    """
    if len(payload) < SECTIONED_FROM:
        return None
    found: list[list[Any]] = []
    view = memoryview(payload)
    at = 1  # past "{"
    for index, key in enumerate(sorted(data)):
        if not isinstance(key, str):
            return None
        head = (b"," if index else b"") + orjson.dumps(key) + b":"
        if view[at : at + len(head)] != head:
            return None
        at += len(head)
        value = data[key]
        if isinstance(value, list) and len(value) > 1:
            # Runs of about SECTION_BYTES, each element serialized once: the
            # run length follows the elements' size as it goes.
            at += 1  # "["
            first, per = 0, 16
            while first < len(value):
                run = orjson.dumps(value[first : first + per], option=orjson.OPT_SORT_KEYS)[1:-1]
                if view[at : at + len(run)] != run:
                    return None
                found.append([key, at, at + len(run), "items"])
                at += len(run) + 1  # "," or "]"
                first += per
                per = max(1, SECTION_BYTES * per // max(1, len(run)))
        else:
            encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            if view[at : at + len(encoded)] != encoded:
                return None
            found.append([key, at, at + len(encoded), "value"])
            at += len(encoded)
    # Every cut checked in place, and they end where the payload does.
    return found if at + 1 == len(payload) and len(found) > 1 else None


def digest(payload: bytes) -> str:
    """Hex SHA-256 of a canonical payload."""
    return hashlib.sha256(payload).hexdigest()


def changed_paths(old: Any, new: Any, limit: int = MAX_CHANGED_PATHS) -> list[str]:
    """Dotted paths whose values differ between two configs, sorted.

    Mappings are compared key by key; anything else (lists included) is a
    leaf. Past ``limit`` paths the list ends with ``"..."``.
    """
    found: list[str] = []
    for path in _diff(old, new, ()):
        if len(found) == limit:
            found.append("...")
            break
        found.append(".".join(path) or "(root)")
    return sorted(found)


def _diff(old: Any, new: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                yield (*path, str(key))
            else:
                yield from _diff(old[key], new[key], (*path, str(key)))
    elif old != new or type(old) is not type(new):
        yield path


def value_at_path(data: Any, path: Sequence[str]) -> Any:
    """The value at a dotted path of plain data; ``KeyError`` naming the path if absent."""
    node = data
    for depth, part in enumerate(path):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(".".join(path[: depth + 1]))
    return node


def secret_paths(instance: Any) -> list[str]:
    """Dotted paths of the ``SecretStr``/``SecretBytes`` values in a validated model.

    List items are named by index. The publisher stores these with each
    generation so that tools without the model still redact them. Only the
    fields whose type can hold a secret are visited (see
    :func:`_secret_fields`), so a large config with two secrets costs a
    walk of two fields, not of every value.
    """
    from pydantic import BaseModel, SecretBytes, SecretStr

    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, (SecretStr, SecretBytes)):
            found.append(".".join(path))
        elif isinstance(node, BaseModel):
            for name in secret_field_names(type(node)):
                walk(getattr(node, name, None), (*path, name))
        elif isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*path, str(key)))
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, (*path, str(index)))

    walk(instance, ())
    return found


@functools.cache
def secret_field_names(model: type[Any]) -> tuple[str, ...]:
    """The fields of a model class whose annotation can hold a secret value."""
    return tuple(
        name for name, info in model.model_fields.items()
        if _may_hold_secret(info.annotation, set())
    )


def _may_hold_secret(annotation: Any, seen: set[type[Any]]) -> bool:
    """Whether a value of this type can be or contain a SecretStr/SecretBytes.

    ``Any`` and plain types cannot: pydantic only makes secrets where the
    model asks for them. Containers, unions and nested models are searched.
    """
    from pydantic import BaseModel, SecretBytes, SecretStr

    if isinstance(annotation, type):
        if issubclass(annotation, (SecretStr, SecretBytes)):
            return True
        if issubclass(annotation, BaseModel):
            if annotation in seen:  # a recursive model: its other fields decide
                return False
            seen.add(annotation)
            return any(_may_hold_secret(f.annotation, seen)
                       for f in annotation.model_fields.values())
    return any(_may_hold_secret(arg, seen) for arg in typing.get_args(annotation))


def looks_secret(key: str) -> bool:
    """Whether a key name suggests a secret (used when there is no model)."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(data: Any, secret: Collection[str] = (), path: tuple[str, ...] = ()) -> Any:
    """A copy of plain config data with secrets replaced by ``REDACTED``.

    A value is secret when its dotted path is in ``secret`` (from the model)
    or its key looks secret (``looks_secret``). Everything under a secret
    key is hidden, whatever its type.
    """
    dotted = ".".join(path)
    if path and (dotted in secret or looks_secret(path[-1])):
        return REDACTED
    if isinstance(data, Mapping):
        return {k: redact(v, secret, (*path, str(k))) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v, secret, (*path, str(i))) for i, v in enumerate(data)]
    return data
