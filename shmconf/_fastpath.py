"""The reader's fast path: C when shmconf._speedups is built, else the same in Python.

``Reader`` derives from :data:`FastPath`, which holds the three attributes
``get()`` touches while the config is unchanged: the anchor's words, the
generation cached and its snapshot. In Python, ``get()`` is a method call,
a memoryview load and a compare, about three dict lookups' time; in C
(``shmconf/_speedups.c``) it is an acquire load and a compare behind the
call, close to one dict lookup (docs/bench.md).

``SHMCONF_SPEEDUPS=0`` in the environment makes a process use the Python
paths; ``SHMCONF_SPEEDUPS=require`` makes importing shmconf fail where the
extension is not built (shmconf's own tests run so).
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Any, Final

#: What SHMCONF_SPEEDUPS may say: off, on when built (the default), or required.
_OFF: Final = ("0", "no", "off", "false")
_SETTINGS: Final = ("", "1", "yes", "on", "true", "require", *_OFF)


def _load_speedups() -> tuple[ModuleType | None, str]:
    setting = os.environ.get("SHMCONF_SPEEDUPS", "").strip().lower()
    if setting not in _SETTINGS:
        warnings.warn(f"SHMCONF_SPEEDUPS={setting!r} means nothing to shmconf (0, 1 or "
                      "require): the C speedups are used where built", stacklevel=2)
    if setting in _OFF:
        return None, "off (SHMCONF_SPEEDUPS=0)"
    try:
        module = importlib.import_module("shmconf._speedups")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "shmconf._speedups":
            why = ("not built (the install found no C compiler or Python's headers, or had "
                   "SHMCONF_SPEEDUPS=0): `pip install -v --force-reinstall --no-deps shmconf` "
                   "(or the path you installed from) builds them again and shows why not")
        else:  # built, but this Python cannot load it
            why = f"not loaded ({exc}): reinstall shmconf for this Python"
        if setting == "require":
            raise ImportError(f"SHMCONF_SPEEDUPS=require, but shmconf's C speedups are "
                              f"{why}") from exc
        return None, why
    return module, "on"


#: The C extension, or None where it is not built or SHMCONF_SPEEDUPS=0;
#: ``state`` says which (``shmconf --version`` prints it).
speedups, state = _load_speedups()


class PyFastPath:
    """``get()`` in Python: what ``shmconf._speedups.FastPath`` does in C."""

    # Slots: an attribute load from a slot is cheaper than from an instance dict.
    __slots__ = ("_gen", "_snapshot", "_words")
    _words: memoryview
    _gen: int
    _snapshot: Any

    def get(self) -> Any:
        """The current snapshot: a model instance, or a read-only mapping.

        Costs one 8-byte load and a compare while the config is unchanged;
        the first call after a publish copies, checks and parses it once.
        """
        # R1 on the fast path: an aligned word load, compared to the cache.
        # The literal 2 is L.A_GENERATION (checked at import): a module
        # attribute lookup here would cost every request.
        if self._words[2] == self._gen:
            return self._snapshot
        return self._refresh()

    def _refresh(self) -> Any:
        raise NotImplementedError


#: The base class of ``Reader``: C when built.
FastPath: type[PyFastPath] = speedups.FastPath if speedups is not None else PyFastPath
