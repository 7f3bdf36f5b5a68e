"""What every integration does in a worker: attach once, register, keep current.

gunicorn's ``post_fork``, the ASGI lifespan and the multiprocessing
initializer all end here, so a worker is wired the same way whichever server
started it: one :class:`~shmconf.Reader` per process, made the process reader
(``shmconf.current()``, ``shmconf.current_reader()``), with idle adoption on
by default: a worker adopts each publish at once, whether or not it serves
requests, so its change callbacks run and ``shmconf status --wait-for``
converges (``shmconf/adoption.py``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from typing import Any, Final

from shmconf import _current
from shmconf.errors import NotAttachedError
from shmconf.model import import_model
from shmconf.reader import Reader, attach

log = logging.getLogger("shmconf.integrations")

#: The WSGI environ key :class:`~shmconf.integrations.wsgi.HealthMiddleware`
#: sets on a request it counts, so that gunicorn's ``post_request`` hook,
#: installed as well, does not count it twice.
COUNTED_KEY: Final = "shmconf.counted"

#: ``on_attach(reader)``: called in each worker right after it attached.
AttachHook = Callable[[Reader[Any]], object]


def model_spec(model: type[Any] | str | None) -> tuple[type[Any] | None, str | None]:
    """The model class and its import string ``pkg.mod:Class``.

    A process that cannot share Python objects (the publisher's own process,
    a spawned pool worker) gets the import string and imports the class
    itself; nothing is pickled. A class that its import string does not lead
    back to (one defined in ``__main__``, in a gunicorn config file, inside a
    function) cannot be handed over that way, so it is refused here, early.
    """
    if model is None:
        return None, None
    if isinstance(model, str):
        return import_model(model), model
    if not hasattr(model, "model_validate"):
        raise TypeError(f"model must be a pydantic model class, got {model!r}")
    spec = f"{model.__module__}:{model.__qualname__}"
    found = None
    # Another interpreter's __main__ is another module: never the same class.
    if model.__module__ != "__main__":
        with contextlib.suppress(ImportError, TypeError):
            found = import_model(spec)
    if found is not model:
        raise TypeError(
            f"model {model.__qualname__} must be importable as {spec!r} so that other "
            "processes can import it; define it in a module (not in __main__, a gunicorn "
            "config file or a function), or pass the import string 'pkg.module:Class'"
        )
    return model, spec


def attach_worker(
    name: str,
    model: type[Any] | None = None,
    *,
    timeout: float = 5.0,
    idle_adoption: bool = True,
    refresh_interval_s: float | None = None,
    on_attach: AttachHook | None = None,
    trusted_owner: int | str | None = None,
) -> Reader[Any]:
    """Attach this process to ``name`` and make it the process reader.

    A reader for ``name`` that this process already holds (inherited across a
    fork and re-registered by the reader's fork handler, or attached by
    another integration in the same worker) is reused, so wiring a worker
    twice costs nothing and leaves one reader-table entry.

    ``refresh_interval_s`` is the old way to keep an idle worker current, a
    thread that polled; it is deprecated and now means ``idle_adoption=True``.
    """
    if refresh_interval_s is not None:
        warnings.warn("refresh_interval_s is deprecated: idle adoption is on by default "
                      "and wakes on each publish (idle_adoption=True)", DeprecationWarning,
                      stacklevel=3)
        if refresh_interval_s <= 0:
            raise ValueError(f"'refresh_interval_s' must be > 0 seconds, got {refresh_interval_s}")
        idle_adoption = True
    reader = existing_reader(name)
    if reader is None:
        reader = attach(name, model, timeout=timeout, trusted_owner=trusted_owner)
        _current.set_reader(reader)
    if idle_adoption:
        reader.start_idle_adoption()
    if on_attach is not None:
        on_attach(reader)
    return reader


def existing_reader(name: str) -> Reader[Any] | None:
    """The process reader, if it is an open reader of ``name``."""
    with contextlib.suppress(NotAttachedError):
        reader = _current.current_reader()
        if reader.name == name and not reader.closed:
            return reader
    return None


def detach_worker(name: str) -> None:
    """Close this process's reader of ``name`` (its reader-table entry is freed)."""
    reader = existing_reader(name)
    if reader is None:
        return
    _current.set_reader(None)
    reader.close()
