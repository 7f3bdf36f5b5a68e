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

from typing import Any, NoReturn


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"a config snapshot is read-only ({type(self).__name__}); copy it "
                    "first (copy.deepcopy, or dict(...)/list(...) for one level)")


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses every change (made by :func:`freeze`)."""

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
    """A ``list`` that refuses every change (made by :func:`freeze`)."""

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


def freeze(value: Any) -> Any:
    """Parsed JSON as read-only containers, all the way down.

    Calls itself only for containers: most values of a config are scalars.
    The containers are filled through ``dict.__init__``/``list.__init__``:
    their own ``__init__`` refuses.
    """
    if type(value) is dict:
        frozen_dict = dict.__new__(FrozenDict)
        dict.__init__(frozen_dict, {key: freeze(item) if type(item) is dict
                                    or type(item) is list else item
                                    for key, item in value.items()})
        return frozen_dict
    if type(value) is list:
        frozen_list = list.__new__(FrozenList)
        list.__init__(frozen_list, [freeze(item) if type(item) is dict or type(item) is list
                                    else item for item in value])
        return frozen_list
    return value
