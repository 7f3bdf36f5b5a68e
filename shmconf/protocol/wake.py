"""The wake word: readers sleep until a publish, and every one of them wakes.

The publisher counts each publish (and each retirement) in the low 32 bits
of the anchor's wake word, then wakes every process sleeping on it with
``FUTEX_WAKE``. A reader's adoption thread reads the count, checks for news,
and sleeps with ``FUTEX_WAIT`` on that count: the kernel sleeps only while
the word still holds it, so a publish between the check and the sleep is
never missed. A sleeping reader costs nothing; one publish wakes all of
them at once (an eventfd or a pipe would wake one).

The futex is keyed by the shared object and the offset, so it works across
processes and across separate mappings of the anchor, read-only ones
included. ``futex`` is Linux's; elsewhere :func:`available` is False and
the adoption thread polls instead. The call goes through ``ctypes``, which
releases the GIL for the whole sleep.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import platform
import sys
from typing import Final

from shmconf.protocol import layout as L

#: ``SYS_futex`` per machine: 64-bit, little-endian ones (the wake count is the
#: low half of a native 64-bit word, which is its first 4 bytes only there).
_SYS_FUTEX: Final = {"x86_64": 202, "aarch64": 98, "arm64": 98, "ppc64le": 221,
                     "riscv64": 98}
_FUTEX_WAIT: Final = 0
_FUTEX_WAKE: Final = 1
_WAKE_ALL: Final = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_libc() -> tuple[ctypes.CDLL, int] | None:
    number = _SYS_FUTEX.get(platform.machine())
    if (not sys.platform.startswith("linux") or number is None
            or ctypes.sizeof(ctypes.c_long) != 8 or sys.byteorder != "little"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc, number


_LIBC: Final = _load_libc()


def available() -> bool:
    """Whether readers can sleep on the wake word (Linux with a known ``SYS_futex``)."""
    return _LIBC is not None


class WakeWord:
    """The wake word of one anchor, mapped on its own for the ``futex`` calls.

    ``fd`` is the anchor's descriptor; the page is mapped read-only (FUTEX_WAIT
    only reads the word, and FUTEX_WAKE does not touch it). Close when done.
    """

    def __init__(self, fd: int) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "futex is not available here")
        libc, self._sys_futex = _LIBC
        self._libc = libc
        address = libc.mmap(None, L.ANCHOR_SIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "cannot map the anchor for its wake word")
        self._page: int | None = address
        self._word = ctypes.c_uint32.from_address(address + L.WAKE_OFFSET)

    def value(self) -> int:
        """The wake count now."""
        if self._page is None:
            raise ValueError("wake word is closed")
        return int(self._word.value)

    def wait(self, seen: int, timeout_s: float) -> None:
        """Sleep while the count is still ``seen``, for ``timeout_s`` at most.

        Returns on a wake, a changed count, the timeout or a signal; the
        caller checks what happened.
        """
        if self._page is None:
            raise ValueError("wake word is closed")
        whole = int(timeout_s)
        limit = _Timespec(whole, int((timeout_s - whole) * 1e9))
        self._libc.syscall(self._sys_futex, ctypes.c_void_p(self._page + L.WAKE_OFFSET),
                           _FUTEX_WAIT, ctypes.c_uint32(seen), ctypes.byref(limit), None, 0)

    def wake_all(self) -> int:
        """Wake every process sleeping on this word; returns how many woke."""
        if self._page is None:
            raise ValueError("wake word is closed")
        woken = self._libc.syscall(self._sys_futex, ctypes.c_void_p(self._page + L.WAKE_OFFSET),
                                   _FUTEX_WAKE, _WAKE_ALL, None, None, 0)
        return max(0, int(woken))

    def close(self) -> None:
        if self._page is not None:
            self._libc.munmap(ctypes.c_void_p(self._page), L.ANCHOR_SIZE)
            self._page = None

    def __enter__(self) -> WakeWord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def announce(words: memoryview, wake: WakeWord | None) -> None:
    """Count one piece of news in the anchor's wake word and wake every sleeper.

    Called by the publisher after the commit point (W4) and after retiring
    an anchor. Without futex support (``wake`` is None) the count alone is
    enough: readers poll it.
    """
    words[L.A_WAKE] = (words[L.A_WAKE] + 1) & 0xFFFFFFFF
    if wake is not None:
        wake.wake_all()
