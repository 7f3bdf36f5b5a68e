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
import os
from collections.abc import Iterator
from typing import Final

#: Pauses in progress that turned the collector off (a list: no global
#: statement). A process that another thread forks meanwhile inherits the
#: collector off and none of those pauses to turn it back on: see
#: _resume_in_child().
PAUSING: Final[list[int]] = [0]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disable the collector for the block; re-enable it only if it was enabled.

    Process-wide, as ``gc.disable()`` is: with two threads in such a block,
    the first one out may resume collection early, which costs time only.
    (``Reader._parse`` does the same inline, with ``PAUSING``: a generator
    costs about 1 us on every new generation.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    PAUSING[0] += was_enabled
    try:
        yield
    finally:
        if was_enabled:
            PAUSING[0] -= 1
            gc.enable()


def _resume_in_child() -> None:
    if PAUSING[0]:
        PAUSING[0] = 0
        gc.enable()


os.register_at_fork(after_in_child=_resume_in_child)
