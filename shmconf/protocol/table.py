"""The reader table (in the anchor): which process holds which generation.

A reader writes its entry when it attaches and when it adopts a new
generation, never on the plain ``get()`` path. Claiming and freeing an entry
happen under a POSIX byte-range lock on the table (``lockf`` on the anchor's
descriptor); updating one's own generation is a single aligned word store
that needs no lock, since no other process writes a live reader's entry.
An entry whose pid no longer exists is free to be claimed again; ``status``
shows such entries as dead until something reclaims them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import NamedTuple

from shmconf.protocol import layout as L
from shmconf.protocol.block import SharedBlock


class ReaderEntry(NamedTuple):
    slot: int
    pid: int
    generation: int


def _pid_word(index: int) -> int:
    return (L.ANCHOR_HEADER_SIZE + index * L.TABLE_ENTRY_SIZE) // 8


@contextlib.contextmanager
def _locked(anchor: SharedBlock) -> Iterator[None]:
    length = L.TABLE_ENTRIES * L.TABLE_ENTRY_SIZE
    fcntl.lockf(anchor.fileno(), fcntl.LOCK_EX, length, L.ANCHOR_HEADER_SIZE)
    try:
        yield
    finally:
        fcntl.lockf(anchor.fileno(), fcntl.LOCK_UN, length, L.ANCHOR_HEADER_SIZE)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone).

    A pid outside 1 .. 2**31 - 1 can only come from a damaged entry: no
    process has it, and ``os.kill`` would refuse it (or, for 0, signal a
    whole process group).
    """
    if not 0 < pid < 1 << 31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(anchor: SharedBlock, pid: int, generation: int) -> int | None:
    """Take a free (or dead) entry for ``pid``; ``None`` when the table is full.

    Probing starts at ``pid % entries`` so that concurrent claimers rarely
    meet, and the lock makes sure they never take the same entry.
    """
    words = anchor.words
    with _locked(anchor):
        for step in range(L.TABLE_ENTRIES):
            index = (pid + step) % L.TABLE_ENTRIES
            at = _pid_word(index)
            holder = words[at] & 0xFFFFFFFF
            if holder in (pid, 0) or not pid_alive(holder):
                words[at + 1] = generation
                words[at] = pid
                return index
    return None


def update(anchor: SharedBlock, index: int, generation: int) -> None:
    """Record that the reader in entry ``index`` now holds ``generation``."""
    anchor.words[_pid_word(index) + 1] = generation


def release(anchor: SharedBlock, index: int, pid: int) -> None:
    """Free entry ``index`` if ``pid`` still holds it."""
    words = anchor.words
    at = _pid_word(index)
    with _locked(anchor):
        if words[at] & 0xFFFFFFFF == pid:
            words[at] = 0
            words[at + 1] = 0


def entries(anchor: SharedBlock) -> list[ReaderEntry]:
    """Every occupied entry, live or dead, in table order."""
    words = anchor.words
    found = []
    for index in range(L.TABLE_ENTRIES):
        at = _pid_word(index)
        pid = words[at] & 0xFFFFFFFF
        if pid:
            found.append(ReaderEntry(index, pid, int(words[at + 1])))
    return found


def reclaim_dead(anchor: SharedBlock) -> list[ReaderEntry]:
    """Free the entries of processes that no longer exist; returns what was freed."""
    if not anchor.writable:
        return []
    words = anchor.words
    freed = []
    with _locked(anchor):
        for entry in entries(anchor):
            if not pid_alive(entry.pid):
                at = _pid_word(entry.slot)
                words[at] = 0
                words[at + 1] = 0
                freed.append(entry)
    return freed
