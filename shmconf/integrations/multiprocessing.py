"""A worker initializer for ``multiprocessing.Pool`` and ``ProcessPoolExecutor``.

::

    from multiprocessing import get_context
    from shmconf.integrations.multiprocessing import initializer

    ctx = get_context("spawn")
    args = ("myapp", "myapp.settings:Settings")
    with ctx.Pool(4, initializer=initializer, initargs=args) as pool:
        ...

    with ProcessPoolExecutor(4, mp_context=ctx, initializer=initializer,
                             initargs=("myapp",)) as pool:
        ...

In the tasks, ``shmconf.current()`` returns the current snapshot. It works
under every start method: with ``fork`` a worker inherits the parent's
reader (if it had one for the name) and keeps using it with its own
reader-table entry; with ``spawn`` and ``forkserver`` it attaches anew.

multiprocessing pickles ``initargs`` to hand them to spawned workers, which
is why they are a name and a model *import string*: plain strings. shmconf
itself never pickles; the config reaches the workers through shared memory.
"""

from __future__ import annotations

import multiprocessing.util
from typing import Any, Final

from shmconf.integrations._worker import attach_worker, detach_worker
from shmconf.model import import_model

#: Runs the worker's clean-up before multiprocessing's own (higher runs first).
_EXIT_PRIORITY: Final = 10


def initializer(
    name: str,
    model: str | type[Any] | None = None,
    timeout: float = 5.0,
    idle_adoption: bool = True,
    *,
    refresh_interval_s: float | None = None,
    trusted_owner: int | str | None = None,
) -> None:
    """Attach this pool worker to ``name`` and make it the process reader.

    Args:
        name: the config's name.
        model: a model import string ``"pkg.mod:Class"`` (or the class, which
            is pickled by reference, i.e. by the same import string).
        timeout: seconds to wait for the segment and its first generation.
        idle_adoption: adopt each new generation as soon as it is published,
            on a thread that sleeps until then, so idle workers run their
            change callbacks and ``status --wait-for`` converges.
        refresh_interval_s: deprecated; means ``idle_adoption=True``.
        trusted_owner: the user (name or uid) the publisher runs as, when it
            is not the workers' (``shmconf publish --group``); a pool passes it
            with ``functools.partial(initializer, trusted_owner=...)``.

    Raises:
        AttachTimeout: nothing was published in time (the pool reports it).
    """
    cls = import_model(model) if isinstance(model, str) else model
    attach_worker(name, cls, timeout=timeout, idle_adoption=idle_adoption,
                  refresh_interval_s=refresh_interval_s, trusted_owner=trusted_owner)
    # Free this worker's reader-table entry when it exits normally (the pool
    # closing, maxtasksperchild); a terminated worker's entry is reclaimed later.
    multiprocessing.util.Finalize(None, detach_worker, args=(name,), exitpriority=_EXIT_PRIORITY)
