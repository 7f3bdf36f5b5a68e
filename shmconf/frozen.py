"""Read-only containers: what ``get()`` returns when there is no model.

A snapshot is shared by every request of a worker, so it must not change
under one of them: :class:`FrozenDict` and :class:`FrozenList` refuse every
mutating method. They subclass ``dict`` and ``list``, so ``json.dumps``,
``orjson.dumps``, ``isinstance(x, dict)`` and equality with plain data work
as they are. (``dict.__setitem__(snapshot, ...)`` still gets through, as it
does for any Python object; nothing in shmconf or a well-behaved library
calls a builtin's method on an instance of a subclass that way.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import orjson

from shmconf._fastpath import speedups


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"a config snapshot is read-only ({type(self).__name__}); copy it "
                    "first (copy.deepcopy, or dict(...)/list(...) for one level)")


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses every change (made by :func:`loads` and :func:`freeze`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = __init__ = _refuse  # __init__ too: cfg.__init__({...}) would refill it

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> NoReturn:
        # Nothing shmconf makes is pickled; a copy is made with copy.deepcopy.
        raise TypeError("a config snapshot is not pickled; copy.deepcopy() gives plain data")

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        from copy import deepcopy

        return {key: deepcopy(value, memo) for key, value in self.items()}

    def __copy__(self) -> dict[str, Any]:
        return dict(self)


class FrozenList(list[Any]):
    """A ``list`` that refuses every change (made by :func:`loads` and :func:`freeze`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = _refuse
    sort = reverse = __iadd__ = __imul__ = __init__ = _refuse

    def __repr__(self) -> str:
        return f"FrozenList({list.__repr__(self)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a config snapshot is not pickled; copy.deepcopy() gives plain data")

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        from copy import deepcopy

        return [deepcopy(value, memo) for value in self]

    def __copy__(self) -> list[Any]:
        return list(self)


class _NewDict(dict[str, Any]):
    """A dict on its way to becoming a :class:`FrozenDict`.

    Same layout, and dict's own ``__init__``: ``_NewDict(d)`` is one call
    into C, where ``FrozenDict``, whose ``__init__`` refuses, needs
    ``dict.__new__`` and ``dict.__init__`` called from Python. Assigning
    ``__class__`` afterwards is allowed between two such subclasses.
    """

    __slots__ = ()


class _NewList(list[Any]):
    """A list on its way to becoming a :class:`FrozenList` (see :class:`_NewDict`)."""

    __slots__ = ()


def loads(payload: bytes, previous: Any = None) -> Any:
    """Parse JSON into read-only containers: what ``get()`` returns without a model.

    orjson builds plain dicts and lists, which no one else holds yet, so
    they are frozen in place. With shmconf's C speedups each one is given
    its read-only class where it lies (``shmconf/_speedups.c``): the freeze
    costs a walk over the containers.

    Without them each container is copied once into its read-only class (in
    C) and its frozen children are stored into it; then ``previous``, the
    snapshot this one replaces, pays off: a top-level value (a section of
    the config) equal to the one under the same key there is taken from it
    instead of being frozen again, so a change confined to a few sections
    costs little more than the parse (docs/bench.md measures both). The C
    freeze is cheaper than that comparison, so it ignores ``previous``.
    Raises ``orjson.JSONDecodeError`` like ``orjson.loads``.
    """
    if speedups is not None:
        return speedups.freeze(orjson.loads(payload))
    if previous is None:
        return _freeze_owned(orjson.loads(payload))
    return _freeze_reusing(orjson.loads(payload), previous)


def loads_in_sections(
    payload: bytes, sections: list[list[Any]], pause: Callable[[], object],
    previous: Any = None,
) -> FrozenDict:
    """:func:`loads` of a large payload piece by piece, calling ``pause()`` between pieces.

    ``sections`` are the publisher's cuts (``shmconf.content.sections``). The
    result is the same as ``loads(payload)``; the pauses let other threads
    run, where one ``orjson.loads`` would hold the GIL for the whole parse.
    """
    view = memoryview(payload)
    result: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    old = previous if type(previous) is FrozenDict else {}
    for key, start, end, kind in sections:
        if kind == "value":
            parsed = orjson.loads(view[start:end])
            if speedups is not None:
                result[key] = speedups.freeze(parsed)
            else:
                prior = old.get(key)
                result[key] = prior if _same(parsed, prior) else _freeze_owned(parsed)
        elif kind == "items":
            run = _freeze(orjson.loads(b"[" + view[start:end].tobytes() + b"]"))
            if key not in lists:
                lists[key] = []
                result[key] = None  # its place in the key order, filled below
            lists[key].extend(run)
        else:
            raise ValueError(f"unknown section kind {kind!r}")
        pause()
    for key, items in lists.items():
        frozen_list = _NewList(items)
        frozen_list.__class__ = FrozenList
        result[key] = frozen_list
    frozen = _NewDict(result)
    frozen.__class__ = FrozenDict
    return frozen  # type: ignore[return-value]  # its class is FrozenDict now


def freeze(value: Any) -> Any:
    """``value`` (plain JSON data) as read-only containers, all the way down.

    ``value`` is left as it is: its dicts and lists are copied, then frozen;
    the values inside them are shared, as before.
    """
    return _freeze(_copy_containers(value))


def _copy_containers(value: Any) -> Any:
    if type(value) is dict:
        return {key: _copy_containers(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy_containers(item) for item in value]
    return value


def _freeze_owned(value: Any) -> Any:
    if type(value) is dict:
        return _freeze_dict(value)
    if type(value) is list:
        return _freeze_list(value)
    return value


# The hot loops below run once per container of every new generation (most of
# a model-less read), so they test exact types (orjson makes no subclasses)
# and touch only the containers: most values of a config are scalars.


def _freeze_dict(value: dict[str, Any]) -> FrozenDict:
    """Freeze ``value``'s containers in place, then copy it into a FrozenDict."""
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            value[key] = _freeze_dict(item)  # replacing a value keeps the iteration valid
        elif kind is list:
            value[key] = _freeze_list(item)
    frozen = _NewDict(value)
    frozen.__class__ = FrozenDict
    return frozen  # type: ignore[return-value]  # its class is FrozenDict now


def _freeze_reusing(value: Any, old: Any) -> Any:
    """:func:`_freeze_owned`, taking each top-level value equal to ``old``'s from ``old``.

    Only the top level is compared (each dict or list value once, deep, in
    C): an unchanged section of the config costs one comparison instead of
    a freeze, and a config in which everything changed costs no more than
    :func:`_freeze_owned` (comparing deeper levels too would compare the
    same containers again at each level; docs/bench.md measured both).
    """
    if type(value) is dict and type(old) is FrozenDict:
        prior_of = old.get
        for key, item in value.items():
            kind = type(item)
            if kind is dict or kind is list:
                prior = prior_of(key)
                value[key] = prior if _same(item, prior) else _freeze_owned(item)
        frozen = _NewDict(value)
        frozen.__class__ = FrozenDict
        return frozen
    return _freeze_owned(value)


def _same(new: Any, old: Any) -> bool:
    """Whether ``new`` (a fresh container) is the JSON ``old`` came from: equal, and as JSON.

    ``==`` alone is not enough: it holds between ``1``, ``1.0`` and ``true``,
    and a config whose ``1`` became ``1.0`` must not keep the int. Both are
    serialized only when ``==`` already held (orjson, in C: about a quarter
    of what parsing them cost).
    """
    kind = type(new)
    return ((kind is dict or kind is list) and bool(new == old)
            and orjson.dumps(new) == orjson.dumps(old))


def _freeze_list(value: list[Any]) -> FrozenList:
    """``value`` copied into a FrozenList, its containers frozen."""
    for item in value:
        kind = type(item)
        if kind is dict or kind is list:  # rebuild only a list that holds containers
            value = [_freeze_dict(x) if type(x) is dict
                     else _freeze_list(x) if type(x) is list else x for x in value]
            break
    frozen = _NewList(value)
    frozen.__class__ = FrozenList
    return frozen  # type: ignore[return-value]  # its class is FrozenList now


if speedups is not None:
    speedups.register(FrozenDict, FrozenList)
#: Freeze containers nobody else holds: in place in C, else copied in Python.
_freeze: Callable[[Any], Any] = speedups.freeze if speedups is not None else _freeze_owned
