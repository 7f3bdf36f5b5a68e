"""Pausing the cyclic garbage collector while a config document is built.

Parsing or validating a config allocates a container per node and makes no
reference cycles, yet every few hundred allocations the collector runs and,
now and then, rescans every object the process holds. On a 1 MB config that
is more than half the time of a parse. Reference counting still frees
everything; the collector resumes as soon as the document is built.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disable the collector for the block; re-enable it only if it was enabled.

    Process-wide, as ``gc.disable()`` is: with two threads in such a block,
    the first one out may resume collection early, which costs time only.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
