"""The process's reader, as wired by an integration (gunicorn, uvicorn, a Pool).

An integration attaches once per worker and registers the reader here, so
application code can call ``shmconf.current()`` without passing a reader
around. Inside ``Reader.pinned()``, ``current()`` returns the pinned snapshot.
"""

from __future__ import annotations

from typing import Any

from shmconf.errors import NotAttachedError
from shmconf.reader import Reader, pinned_snapshot

_process_reader: Reader[Any] | None = None


def set_reader(reader: Reader[Any] | None) -> None:
    """Make ``reader`` the one ``current()`` and ``current_reader()`` use in this process."""
    global _process_reader  # noqa: PLW0603 - one reader per process is the point
    _process_reader = reader


def current_reader() -> Reader[Any]:
    """The reader attached in this process by an integration (or ``set_reader``).

    Named so that it does not shadow the module ``shmconf.reader``; the old
    ``shmconf.reader()`` still works for one release, with a DeprecationWarning.
    """
    if _process_reader is None:
        raise NotAttachedError
    return _process_reader


def current() -> Any:
    """The current snapshot (the pinned one inside ``Reader.pinned()``)."""
    pinned = pinned_snapshot.get()
    if pinned is not _UNPINNED:
        return pinned
    if _process_reader is None:
        raise NotAttachedError
    return _process_reader.get()


_UNPINNED = pinned_snapshot.get()
