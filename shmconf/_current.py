"""The process's current reader: the one ``shmconf.current()`` reads.

The first reader attached in a process becomes it (``attach(make_current=)``
says otherwise), and an integration sets its worker's reader here, so
application code can call ``shmconf.current()`` without passing a reader
around. Inside ``Reader.pinned()``, ``current()`` returns the pinned snapshot.
Both accessors take the model class, for the type checker's sake:
``shmconf.current(Settings)`` is a ``Settings``.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from shmconf.errors import NotAttachedError
from shmconf.reader import Reader, pinned_snapshot

_process_reader: Reader[Any] | None = None

M = TypeVar("M")


def process_reader() -> Reader[Any] | None:
    """The current reader, or ``None``."""
    return _process_reader


def set_reader(reader: Reader[Any] | None) -> None:
    """Make ``reader`` the one ``current()`` and ``current_reader()`` use in this process."""
    global _process_reader  # noqa: PLW0603 - one reader per process is the point
    _process_reader = reader


@overload
def current_reader() -> Reader[Any]: ...


@overload
def current_reader(model: type[M]) -> Reader[M]: ...


def current_reader(model: type[Any] | None = None) -> Reader[Any]:
    """The process's current reader (the first attached, or the integration's).

    Named so that it does not shadow the module ``shmconf.reader``; the old
    ``shmconf.reader()`` still works for one release, with a DeprecationWarning.

    Args:
        model: the model class the reader was attached with, for the type
            checker (``Reader[Settings]``); checked at run time.
    """
    if _process_reader is None:
        raise NotAttachedError
    if model is not None:
        _check_model(_process_reader.get(), model)
    return _process_reader


@overload
def current() -> Any: ...


@overload
def current(model: type[M]) -> M: ...


def current(model: type[Any] | None = None) -> Any:
    """The current snapshot (the pinned one inside ``Reader.pinned()``).

    Args:
        model: the model class, for the type checker (``shmconf.current(Settings)``
            is a ``Settings``); checked at run time.
    """
    pinned = pinned_snapshot.get()
    if pinned is not _UNPINNED:
        snapshot = pinned
    elif _process_reader is None:
        raise NotAttachedError
    else:
        snapshot = _process_reader.get()
    if model is not None:
        _check_model(snapshot, model)
    return snapshot


def _check_model(snapshot: Any, model: type[Any]) -> None:
    if not isinstance(snapshot, model):
        raise TypeError(f"the current config is a {type(snapshot).__name__}, not a "
                        f"{model.__name__}: attach with model={model.__name__}")


_UNPINNED = pinned_snapshot.get()
