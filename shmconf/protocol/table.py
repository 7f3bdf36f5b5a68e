"""The reader table ``shmconf-V.NAME@readers``: which process holds which generation.

The table is an object of its own, and nobody maps it: a reader writes its
64-byte entry with ``pwrite`` when it attaches and when it adopts a new
generation (never on the plain ``get()`` path), and ``status`` reads the
table with ``pread``. A group member who truncates or scribbles on it can
make listings wrong for a moment; it cannot crash anyone, and every reader
rewrites its entry on its next adoption.

Each reader holds a **non-blocking lock** on its entry's bytes (an
open-file-description lock, ``F_OFD_SETLK``) for as long as it reads. That
lock is the liveness of an entry: the kernel drops it when the process exits,
however it exits, so an entry whose lock is free belongs to nobody, whatever
pid it names. No pid is ever probed (pids repeat, and differ across pid
namespaces). Claiming never waits: a reader tries entries until it gets one's
lock, past the end when all are held, so the table grows with the readers up
to ``TABLE_MAX_ENTRIES``. Offsets: ``layout.py``.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import struct
from collections.abc import Collection
from typing import Final, NamedTuple

from shmconf.protocol import layout as L
from shmconf.protocol.block import SharedBlock

#: Open-file-description locks (Linux 3.15): owned by the descriptor, not the
#: process, so closing some other descriptor of the table never drops them.
SUPPORTED: Final = hasattr(fcntl, "F_OFD_SETLK")
#: ``struct flock`` on 64-bit Linux: type, whence, start, len, pid.
_FLOCK: Final = struct.Struct("hhqqi4x")
_ZERO_ENTRY: Final = bytes(L.TABLE_ENTRY_SIZE)
_U32: Final = 0xFFFFFFFF
#: Entries a claim tries near its start, at random, and past the end. Each try
#: is a lock request whose cost grows with the locks the table holds, so a
#: group member holding thousands of them must not make a claim try them all.
_NEAR_PROBES: Final = 16
_RANDOM_PROBES: Final = 16
_GROWTH_PROBES: Final = 8


class ReaderEntry(NamedTuple):
    """One entry as ``status`` reports it."""

    slot: int
    pid: int
    generation: int
    flags: int
    adopted_ns: int
    #: The newest generation this reader refused (it did not fit its model), or 0.
    refused: int
    #: Its reader holds the entry's lock: the process is alive.
    alive: bool
    #: Health under ``generation``, counted in rollout ``counted_in`` (low 32 bits).
    requests: int = 0
    failures: int = 0
    checks_failed: int = 0
    counted_in: int = 0
    #: The rollout this entry's reader is a canary of (the anchor's canary
    #: list names it), else 0.
    canary_of: int = 0

    @property
    def idle_adoption(self) -> bool:
        return bool(self.flags & L.ENTRY_IDLE_ADOPTION)

    @property
    def checking(self) -> bool:
        """A canary still running its health checks on the generation it holds."""
        return bool(self.flags & L.ENTRY_CHECKING)

    def canary_in(self, rollout: int) -> bool:
        """Whether the publisher made this entry's reader a canary of ``rollout``."""
        return bool(rollout) and self.canary_of == rollout

    def counts_in(self, rollout: int) -> tuple[int, int, int]:
        """``(requests, failures, checks_failed)`` if counted in ``rollout``, else zeros."""
        if self.counted_in != rollout & 0xFFFFFFFF:
            return 0, 0, 0
        return self.requests, self.failures, self.checks_failed


def create_table(name: str, *, mode: int = 0o600, gid: int | None = None) -> SharedBlock:
    """Create the (empty) reader table of ``name``."""
    return SharedBlock.create(L.table_shm_name(name), 0, mode=mode, gid=gid, mapped=False)


def open_table(
    name: str, *, writable: bool, trusted_uids: frozenset[int] | None = None
) -> SharedBlock:
    """Open the reader table of ``name`` after the owner and mode checks (``FileNotFoundError``)."""
    return SharedBlock.open(L.table_shm_name(name), writable=writable, min_size=0,
                            trusted_uids=trusted_uids, mapped=False)


def _lock_request(kind: int, index: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, index * L.TABLE_ENTRY_SIZE, L.TABLE_ENTRY_SIZE, 0)


def _try_lock(table: SharedBlock, index: int) -> bool:
    try:
        fcntl.fcntl(table.fileno(), fcntl.F_OFD_SETLK, _lock_request(fcntl.F_WRLCK, index))
    except (BlockingIOError, PermissionError):
        return False  # held by another descriptor: a live reader
    return True


def _unlock(table: SharedBlock, index: int) -> None:
    fcntl.fcntl(table.fileno(), fcntl.F_OFD_SETLK, _lock_request(fcntl.F_UNLCK, index))


def _held(table: SharedBlock, index: int) -> bool:
    """Whether another descriptor holds entry ``index``'s lock."""
    found = fcntl.fcntl(table.fileno(), fcntl.F_OFD_GETLK, _lock_request(fcntl.F_WRLCK, index))
    return bool(_FLOCK.unpack(found)[0] != fcntl.F_UNLCK)


def _entry_count(table: SharedBlock) -> int:
    return min(os.fstat(table.fileno()).st_size // L.TABLE_ENTRY_SIZE, L.TABLE_MAX_ENTRIES)


def claim(table: SharedBlock, pid: int, generation: int, flags: int = 0) -> int | None:
    """Take a free entry for this process and write it; ``None`` when none was free.

    Probing starts at ``pid % entries`` so that concurrent claimers rarely
    meet; the lock makes sure they never take the same entry. A claim tries
    at most 48 entries: some after its start, some at random, then a few
    past the end (which grows the table): a table whose entries are all
    held by live readers grows, and one whose locks a hostile group member
    holds costs a bounded number of tries (and, if every one is held, the
    reader reads on unlisted). The entry's lock stays held on
    ``table``'s descriptor until :func:`release` or the process's exit.
    """
    if not SUPPORTED:
        return None
    count = _entry_count(table)
    start = pid % count if count else 0
    near = [(start + step) % count for step in range(min(_NEAR_PROBES, count))]
    spread = random.sample(range(count), min(_RANDOM_PROBES, count))
    past = range(count, min(count + _GROWTH_PROBES, L.TABLE_MAX_ENTRIES))
    # Then anywhere past the end: locks taken ahead of the end (no reader
    # does that) cost a claimer a few tries, not its listing.
    beyond = random.sample(range(count, L.TABLE_MAX_ENTRIES),
                           min(_GROWTH_PROBES, L.TABLE_MAX_ENTRIES - count))
    tried: set[int] = set()
    for index in itertools.chain(near, spread, past, beyond):
        if index in tried:
            continue
        tried.add(index)
        if _try_lock(table, index):
            table.pwrite(index * L.TABLE_ENTRY_SIZE, _ZERO_ENTRY)
            update(table, index, pid, generation, flags=flags)
            return index
    return None


def update(
    table: SharedBlock,
    index: int,
    pid: int,
    generation: int,
    *,
    flags: int = 0,
    adopted_ns: int = 0,
    refused: int = 0,
    health: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> None:
    """Write the reader's part of its own entry ``index`` (one ``pwrite``).

    ``health`` is ``(requests, failures, checks_failed, rollout id)``, each
    kept to 32 bits (a count saturates).
    """
    requests, failures, checks, rollout = health
    table.pwrite(index * L.TABLE_ENTRY_SIZE,
                 L.TABLE_ENTRY.pack(pid, flags, generation, adopted_ns, refused,
                                    min(requests, _U32), min(failures, _U32),
                                    min(checks, _U32), rollout & _U32))


def release(table: SharedBlock, index: int) -> None:
    """Clear this process's entry ``index`` and let go of its lock."""
    table.pwrite(index * L.TABLE_ENTRY_SIZE, _ZERO_ENTRY)
    _unlock(table, index)


def entries(
    table: SharedBlock, rollout: int = 0, canaries: frozenset[int] = frozenset(), *,
    only: Collection[int] | None = None, locks_of: Collection[int] | None = None,
) -> list[ReaderEntry]:
    """Every entry that names a process, live or dead, in table order.

    ``canaries`` is the anchor's canary list of ``rollout``
    (``anchor.canaries``): the entries it names are marked ``canary_of``.
    ``only``: just these entries. ``locks_of``: ask only these entries'
    locks (each is a system call whose cost grows with the locks the table
    holds); the others come back with ``alive`` False.
    """
    raw = table.pread(0, L.TABLE_MAX_ENTRIES * L.TABLE_ENTRY_SIZE)
    raw += bytes(-len(raw) % L.TABLE_ENTRY_SIZE)  # a table cut short mid-entry
    count = len(raw) // L.TABLE_ENTRY_SIZE
    found = []
    for index in range(count) if only is None else sorted(i for i in only if 0 <= i < count):
        at = index * L.TABLE_ENTRY_SIZE
        (pid, flags, generation, adopted_ns, refused, requests, failures, checks,
         counted_in) = L.TABLE_ENTRY.unpack_from(raw, at)
        if pid:
            canary = rollout if L.canary_key(index, pid) in canaries else 0
            asked = locks_of is None or index in locks_of
            found.append(ReaderEntry(index, pid, generation, flags, adopted_ns, refused,
                                     SUPPORTED and asked and _held(table, index), requests,
                                     failures, checks, counted_in, canary))
    return found


def held(table: SharedBlock, index: int) -> bool:
    """Whether a live reader holds entry ``index`` (its lock is taken)."""
    return SUPPORTED and _held(table, index)


def is_full(table: SharedBlock) -> bool:
    """The table reached its largest size: more readers may read unlisted."""
    return _entry_count(table) >= L.TABLE_MAX_ENTRIES


def reclaim_dead(table: SharedBlock) -> list[ReaderEntry]:
    """Clear the entries whose reader is gone; returns what was cleared.

    Each one is locked first, so an entry a reader claims meanwhile is never
    touched: that reader holds the lock.
    """
    if not table.writable or not SUPPORTED:
        return []
    cleared = []
    for entry in entries(table):
        if entry.alive or not _try_lock(table, entry.slot):
            continue
        try:
            table.pwrite(entry.slot * L.TABLE_ENTRY_SIZE, _ZERO_ENTRY)
        finally:
            _unlock(table, entry.slot)
        cleared.append(entry)
    return cleared
