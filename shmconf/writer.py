"""The write side of the segment protocol: fill the inactive slot, then commit.

A :class:`Writer` owns the anchor and the data segment of one name: it keeps
the generation floor (generations only grow, across restarts and unlinks),
publishes through the steps W1-W4 of ``docs/design.md`` (W1-W3 in
:func:`shmconf.protocol.slot.write_slot`, W4 here), and grows into a larger
data segment (G1-G4) when a config does not fit a slot. The steps carry
their labels at the lines that perform them.

Python has no store barriers; the reader's checksum (R6) is what makes a
torn copy impossible to accept on every CPU (``docs/design.md``, "Why it
holds"). Exactly one writer may run for a name: the publisher holds a file
lock around its :class:`Writer` for its whole life.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import time
from collections.abc import Collection
from typing import Final

from shmconf.errors import AnchorNotReady, SegmentError
from shmconf.protocol import layout as L
from shmconf.protocol import table
from shmconf.protocol.anchor import create_anchor, open_anchor
from shmconf.protocol.block import (
    SharedBlock,
    list_shm_names,
    other_layout_names,
    reserve,
    unlink_shm,
    unused_other_layouts,
)
from shmconf.protocol.layout import anchor_shm_name, data_shm_name, table_shm_name, validate_name
from shmconf.protocol.slot import create_data, open_data, read_slot, write_slot
from shmconf.protocol.table import create_table, open_table
from shmconf.protocol.wake import WakeWord, announce
from shmconf.protocol.wake import available as wake_available

log = logging.getLogger("shmconf.writer")

#: How far the anchor's generation may lead the history's last one at open
#: (publishes whose history record failed); beyond it the count is damage.
_MAX_UNRECORDED: Final = 1 << 32
#: Names of the owned anchor words, for the tamper warning.
_WORD_NAMES: Final = {L.A_GENERATION: "generation", L.A_DATA_SERIAL: "data_serial",
                      L.A_SLOT_CAPACITY: "slot_capacity", L.A_PUBLISHER_PID: "publisher_pid",
                      L.A_FLAGS: "flags", L.A_CANARY_GENERATION: "canary_generation",
                      L.A_ROLLOUT: "rollout", L.A_CANARY_COUNT: "canary_count"}
#: Published slots up to this capacity are read back at every heartbeat;
#: larger ones every _SLOT_VERIFY_EVERY_S (a 64 MiB read and checksum is 30 ms).
_SLOT_VERIFY_ALWAYS: Final = 1 << 20
_SLOT_VERIFY_EVERY_S: Final = 60.0
#: Serials tried past one that another user planted, before giving up.
_SERIAL_TRIES: Final = 64
#: No real publisher gets near 2**63 generations; a count that does was
#: overwritten by something else, and must not wrap the u64 word.
_GENERATION_LIMIT: Final = 1 << 63

class Writer:
    """Publishes snapshots into the anchor and data segment of one name.

    Opening continues an existing segment: the next generation follows the
    one it holds (or ``min_generation``, whichever is larger), so generations
    only grow across publisher restarts. Not thread-safe: one caller at a
    time, and one Writer per name across the host (the publisher's lock).
    """

    _anchor: SharedBlock | None = None
    _data: SharedBlock | None = None
    _table: SharedBlock | None = None
    _wake: WakeWord | None = None
    #: ``(meta, payload, published_ns)`` of the published generation, to put
    #: it back if its slot is damaged (see _check_data()).
    _published: tuple[bytes, bytes, int] | None = None
    #: The same for the candidate of the running rollout.
    _candidate: tuple[bytes, bytes, int] | None = None
    #: Why the reader table could not be made again at the last heartbeat.
    _table_problem = ""
    #: Until when a large published slot counts as read back (see _check_data()).
    _slot_checked_at = 0.0

    def __init__(
        self,
        name: str,
        *,
        mode: int = 0o600,
        gid: int | None = None,
        min_generation: int = 0,
        slot_capacity: int = L.DEFAULT_SLOT_CAPACITY,
    ) -> None:
        self.name = validate_name(name)
        # Readers write only the reader table: everything they map or copy
        # from is read-only to the group, so a group member cannot truncate
        # or scribble on it.
        self._mode = mode & ~0o022
        self._table_mode = mode
        self._gid = gid
        # Generations only grow: a segment recreated after an unlink starts at
        # 0, and the first publish then follows the history's last generation.
        self._floor = min_generation
        try:
            self._open(slot_capacity)
        except BaseException:
            self.close()  # nothing opened so far stays open (descriptors, mappings)
            raise

    def _open(self, slot_capacity: int) -> None:
        name, gid = self.name, self._gid
        self._open_table()
        try:
            anchor = open_anchor(name, writable=True)
        except FileNotFoundError:
            anchor = create_anchor(name, mode=self._mode, gid=gid)
        except AnchorNotReady:
            # Only a writer creates anchors, and we hold the writer lock: this
            # one was left by a publisher killed while creating it.
            unlink_shm(anchor_shm_name(name))
            anchor = create_anchor(name, mode=self._mode, gid=gid)
        self._anchor = anchor
        if wake_available():
            self._wake = WakeWord(anchor.fileno())
        words = anchor.words
        self._open_data(slot_capacity)
        self._remove_leftovers()
        found = self.current_slot()
        self._published = found
        # Objects of other layout versions of this name (a `kill -USR2`
        # upgrade's old workers may still read them): removed once unmapped.
        self._old_layouts = bool(other_layout_names(name))
        self.remove_old_layouts()
        now = time.time_ns()
        words[L.A_PUBLISHER_PID] = os.getpid()
        words[L.A_STARTED_NS] = now
        words[L.A_HEARTBEAT_NS] = now
        words[L.A_FLAGS] = 0
        generation = int(words[L.A_GENERATION])
        if self._floor and generation > self._floor + _MAX_UNRECORDED:
            # The history records (nearly) every publish: a count this far past
            # it was written by something else. Continue from the history.
            # (A smaller lead is real: publishes whose record failed, or the
            # writer used without a Publisher; generations never go back.)
            log.warning("config %r: the anchor's generation %d is past the history's last "
                        "(%d): damaged or tampered with; continuing from %d", self.name,
                        generation, self._floor, self._floor)
            words[L.A_GENERATION] = generation = self._floor
            words[L.A_CANARY_GENERATION] = generation
            words[L.A_ROLLOUT] = 0
            words[L.A_CANARY_COUNT] = 0
        #: The words this writer owns, as it last wrote them (see check_words()).
        self._owned: dict[int, int] = {
            L.A_GENERATION: generation, L.A_DATA_SERIAL: int(words[L.A_DATA_SERIAL]),
            L.A_SLOT_CAPACITY: int(words[L.A_SLOT_CAPACITY]),
            L.A_PUBLISHER_PID: os.getpid(), L.A_FLAGS: 0,
            L.A_CANARY_GENERATION: int(words[L.A_CANARY_GENERATION]),
            L.A_ROLLOUT: int(words[L.A_ROLLOUT]),
            L.A_CANARY_COUNT: int(words[L.A_CANARY_COUNT]),
        }
        #: The canary list as this writer wrote it (see check_words()).
        self._canaries: list[int] = []
        #: Set when this writer found a rollout its predecessor left unresolved:
        #: ``(candidate, "rolled back" or "promoted")``.
        self.resolved_rollout: tuple[int, str] | None = None
        candidate = int(words[L.A_CANARY_GENERATION])
        if candidate != generation and not generation < candidate <= generation + (
                _MAX_UNRECORDED):
            # No candidate is below the stable generation or this far above it.
            log.warning("config %r: the anchor's canary generation %d is implausible "
                        "(damaged or tampered with); no rollout runs", self.name, candidate)
            self._set(L.A_CANARY_GENERATION, generation)
            self._end_rollout()
        elif words[L.A_ROLLOUT] and candidate == generation:
            # Killed between a promotion's two stores: every reader has it.
            self.resolved_rollout = (candidate, "promoted")
            self._end_rollout()
        elif words[L.A_ROLLOUT] or candidate != generation:
            self._resolve_rollout()
        else:
            self._set(L.A_CANARY_COUNT, 0)  # no rollout: no canaries

    def _resolve_rollout(self) -> None:
        """A publisher died mid-rollout: roll its candidate back (docs/rollout.md).

        Every worker holds a complete version (the stable one, or the
        candidate on canaries); the candidate was never judged, so the stable
        content is published again as a new generation, which every worker
        adopts. The publisher then publishes its sources as usual: a change
        there goes through a rollout of its own, from the start.
        """
        candidate = int(self.anchor.words[L.A_CANARY_GENERATION])
        self.resolved_rollout = (candidate, "rolled back")
        log.warning("config %r: the last publisher stopped during a rollout of generation %d; "
                    "rolling it back", self.name, candidate)
        if self._published is not None:
            meta, payload, published_ns = self._published
            self._write(meta, payload, published_ns)
        else:  # the stable slot is unreadable too: nothing to go back to but the words
            self._set(L.A_CANARY_GENERATION, int(self.anchor.words[L.A_GENERATION]))
            self._end_rollout()
            announce(self.anchor.words, self._wake)

    def _end_rollout(self) -> None:
        """No rollout runs: its id and its canary list cleared."""
        self._set(L.A_ROLLOUT, 0)
        self._set(L.A_CANARY_COUNT, 0)
        self._canaries = []

    def _set(self, index: int, value: int) -> None:
        """Write an anchor word this writer owns (and remember it for check_words())."""
        self.anchor.words[index] = value
        self._owned[index] = value

    def check_words(self, *, verify_slot: bool = False) -> None:
        """Restore the anchor words this writer owns if something else changed them.

        Called before each publish and with each heartbeat. Only the writer
        writes these words; a different value means damage, or a process of
        the owner (or root) scribbling on the segment. It is logged as a
        warning, with what was found, and put back, so that readers are led
        back to the real generation and data segment within a heartbeat.
        """
        if not os.fstat(self.anchor.fileno()).st_nlink:
            # `shmconf unlink --force` removed the name under this publisher: what
            # it would publish now reaches no new reader, and a new publisher may
            # already hold the name. Stop rather than write into the void, and
            # tell the readers of this anchor to look for the next one.
            if not words_retired(self.anchor.words):
                _retire(self.anchor, self._wake)
            raise SegmentError(
                self.anchor.shm_name,
                "the name was removed (`shmconf unlink`) while this publisher ran; it stops "
                "publishing: start the publisher again to publish the name afresh",
            )
        words = self.anchor.words
        for index, expected in self._owned.items():
            found = int(words[index])
            if found != expected:
                log.warning("config %r: anchor word %s was %d, expected %d (damaged or "
                            "tampered with); restored", self.name, _WORD_NAMES[index],
                            found, expected)
                words[index] = expected
        listed = L.CANARY_LIST_WORD + len(self._canaries)
        if words[L.CANARY_LIST_WORD:listed].tolist() != self._canaries:
            log.warning("config %r: the anchor's canary list was changed (damaged or "
                        "tampered with); restored", self.name)
            words[L.CANARY_LIST_WORD:listed] = array.array("Q", self._canaries)
        self._check_data(verify_slot=verify_slot)

    def _check_data(self, *, verify_slot: bool) -> None:
        """Put back the data segment's size, header and published slot if they changed.

        Nobody maps a data segment, so a truncated or scribbled one kills no
        process: readers fail their checks and keep their last snapshot. This
        repairs it, and publishes the damaged generation's content again as a
        new generation, so that readers which refused it adopt it.
        """
        data = self._data
        if data is None:
            return
        serial = int(self._owned[L.A_DATA_SERIAL])
        header = L.DATA_PREFIX.pack(L.DATA_MAGIC, L.LAYOUT_VERSION, L.DATA_HEADER_SIZE, serial,
                                    self._capacity, self._stride)
        size = os.fstat(data.fileno()).st_size
        generation = int(self._owned[L.A_GENERATION])
        header_ok = data.pread(0, len(header)) == header
        # The published slot is read back only with the heartbeat (a publish
        # replaces it anyway), and a large one at most once a minute.
        now = time.monotonic()
        slot_ok = (not verify_slot or generation == 0 or now < self._slot_checked_at
                   or read_slot(data, generation, self._stride, self._capacity) is not None)
        if verify_slot and self._capacity > _SLOT_VERIFY_ALWAYS:
            self._slot_checked_at = max(self._slot_checked_at, now + _SLOT_VERIFY_EVERY_S)
        if size == data.size and header_ok and slot_ok:
            return
        log.warning("config %r: data segment %d was damaged or tampered with (%d of %d bytes, "
                    "header %s, published slot %s); restored", self.name, serial, size,
                    data.size, "intact" if header_ok else "changed",
                    "intact" if slot_ok else "unreadable")
        if size < data.size:
            reserve(data.fileno(), data.size, data.shm_name)
        elif size > data.size:
            os.ftruncate(data.fileno(), data.size)
        data.pwrite(0, header)
        if not slot_ok and self._published is not None:
            meta, payload, published_ns = self._published
            self._write(meta, payload, published_ns)

    def _open_table(self) -> None:
        """Open the reader table, or make it; a removed one is made again."""
        if self._table is not None:
            if os.fstat(self._table.fileno()).st_nlink:
                return
            self._table.close()  # unlinked under us: readers move to the new one
            self._table = None
        shm_name = table_shm_name(self.name)
        try:
            try:
                self._table = open_table(self.name, writable=True)
            except FileNotFoundError:
                self._table = create_table(self.name, mode=self._table_mode, gid=self._gid)
        except OSError as exc:  # a symlink (ELOOP), another user's object, no access
            raise SegmentError(
                shm_name,
                f"cannot use it ({exc.strerror or exc}): not this publisher's reader table; "
                f"another user may have planted it. Remove /dev/shm/{shm_name} (as root if "
                "another user owns it), then start the publisher again",
            ) from None

    def _open_data(self, slot_capacity: int) -> None:
        words = self.anchor.words
        serial = words[L.A_DATA_SERIAL]
        if serial:
            try:
                self._data, self._capacity, self._stride = open_data(
                    self.name, serial, writable=True
                )
                return
            except (FileNotFoundError, SegmentError) as exc:
                # Lost or damaged: readers copy from it and fail their checks
                # until the next publish points them at a fresh segment.
                log.warning(
                    "data segment %d of %r unusable (%s); replacing it", serial, self.name, exc
                )
        capacity = L.capacity_for(slot_capacity)
        serial, self._data = self._new_data(serial + 1, capacity)
        self._capacity, self._stride = capacity, L.SLOT_HEADER_SIZE + capacity
        words[L.A_SLOT_CAPACITY] = capacity
        words[L.A_DATA_SERIAL] = serial

    def _new_data(self, serial: int, capacity: int) -> tuple[int, SharedBlock]:
        """Create a data segment at ``serial`` or the first free serial after it.

        A name left half made by a writer killed while growing is removed
        first. One that cannot be removed belongs to another user (``/dev/shm``
        is sticky): planted there to stop this name from growing. It is
        skipped, since readers follow whatever serial the anchor names, and
        only check that its owner is the anchor's.
        """
        for _ in range(_SERIAL_TRIES):
            shm_name = data_shm_name(self.name, serial)
            try:
                unlink_shm(shm_name)
                return serial, create_data(self.name, serial, capacity, mode=self._mode,
                                           gid=self._gid)
            except (PermissionError, FileExistsError):
                log.warning("config %r: %s belongs to another user; skipped (remove it as "
                            "root)", self.name, shm_name)
                serial += 1
        raise SegmentError(data_shm_name(self.name, serial),
                           f"{_SERIAL_TRIES} data segment names in a row belong to another "
                           "user: remove /dev/shm/" + anchor_shm_name(self.name) + "@* as root")

    def _remove_leftovers(self) -> None:
        """Unlink data segments a killed publisher left half-made or unreclaimed.

        Only names of this layout's data segments (``@SERIAL``); another
        user's object is left, with a warning: it cannot be removed, and
        nothing of shmconf reads it.
        """
        keep = (anchor_shm_name(self.name), table_shm_name(self.name),
                data_shm_name(self.name, self.anchor.words[L.A_DATA_SERIAL]))
        prefix = anchor_shm_name(self.name) + "@"
        for shm_name in list_shm_names(self.name):
            if shm_name in keep or not shm_name.removeprefix(prefix).isdigit():
                continue
            log.info("removing leftover segment %s", shm_name)
            try:
                unlink_shm(shm_name)
            except PermissionError:
                log.warning("config %r: cannot remove %s: another user's (remove it as root)",
                            self.name, shm_name)

    @property
    def anchor(self) -> SharedBlock:
        if self._anchor is None:
            raise ValueError(f"writer of {self.name!r} is closed")
        return self._anchor

    @property
    def generation(self) -> int:
        """The published generation (0 before the first publish)."""
        return int(self.anchor.words[L.A_GENERATION])

    @property
    def never_published(self) -> bool:
        """Nothing was ever published under this name (nor kept in its history)."""
        return self.generation == 0 and self._floor == 0

    @property
    def slot_capacity(self) -> int:
        return self._capacity

    def current(self) -> tuple[bytes, bytes] | None:
        """``(meta, payload)`` of the published generation, or ``None``.

        A slot that fails its checks (a writer killed mid-write, or damage)
        counts as nothing published.
        """
        found = self.current_slot()
        return None if found is None else found[:2]

    def current_slot(self) -> tuple[bytes, bytes, int] | None:
        """``(meta, payload, published_ns)`` of the published generation, or ``None``."""
        generation = self.generation
        data = self._data
        if generation == 0 or data is None:
            return None
        return read_slot(data, generation, self._stride, self._capacity)

    def publish(self, payload: bytes, meta: bytes = b"{}", published_ns: int | None = None) -> int:
        """Publish ``payload`` as the next generation; returns that generation.

        When the data does not fit a slot, a larger data segment is made first
        (steps G1-G4). A failure there (a full ``/dev/shm``) raises before
        anything a reader can see has changed.
        """
        self.check_words()
        return self._write(meta, payload, published_ns)

    def _write(
        self, meta: bytes, payload: bytes, published_ns: int | None, *, rollout: int = 0
    ) -> int:
        """W1-W4 of a new generation; a candidate of ``rollout`` when it is not 0.

        Every write goes into the slot that does not hold the stable
        generation (the one ``A_GENERATION`` names), which workers outside a
        rollout read: a new generation is the next number whose slot
        (``generation % 2``) is the other one, so a candidate that replaces a
        candidate skips a number.
        """
        words = self.anchor.words
        generation = self.next_generation()
        if generation >= _GENERATION_LIMIT:
            raise SegmentError(
                self.anchor.shm_name,
                f"generation {generation - 1} is beyond any real count, in the anchor and "
                "the history alike: run `shmconf unlink NAME --purge` (it removes the "
                "history too) and restart the publisher",
            )
        if len(meta) + len(payload) > self._capacity:
            self._grow(len(meta) + len(payload))  # G1-G3; W1-W4 below are then G4
        if published_ns is None:
            published_ns = time.time_ns()
        data = self._data
        assert data is not None
        write_slot(
            data,
            L.slot_offset(generation % 2, self._stride),
            generation=generation,
            meta=meta,
            payload=payload,
            published_ns=published_ns,
        )
        if rollout:
            # Canaries follow the canary word; everyone else keeps the stable one.
            self._set(L.A_ROLLOUT, rollout)
            self._set(L.A_CANARY_GENERATION, generation)  # W4 for the canaries
            self._candidate = (meta, payload, published_ns)
        else:
            self._set(L.A_CANARY_GENERATION, generation)
            self._set(L.A_GENERATION, generation)  # W4: the commit point; pairs with R1
            self._end_rollout()
            self._published, self._candidate = (meta, payload, published_ns), None
        words[L.A_HEARTBEAT_NS] = published_ns
        announce(words, self._wake)  # idle readers wake and adopt it
        return generation

    def next_generation(self) -> int:
        """The generation the next publish (or candidate) will get."""
        words = self.anchor.words
        stable = int(words[L.A_GENERATION])
        generation = max(stable, int(words[L.A_CANARY_GENERATION]), self._floor) + 1
        if stable and generation % 2 == stable % 2:
            generation += 1
        return generation

    def publish_candidate(
        self, payload: bytes, meta: bytes, published_ns: int | None, rollout: int
    ) -> int:
        """Publish ``payload`` to the canaries of ``rollout`` only; returns its generation.

        The readers the publisher assigned to ``rollout`` in the reader table
        (:meth:`add_canaries`, before or after this call) adopt it; every other
        reader keeps the stable generation. A candidate already out is
        replaced. :meth:`promote` or a plain :meth:`publish` ends the rollout.
        """
        if not rollout:
            raise ValueError("a candidate needs a rollout id")
        self.check_words()
        # W1-W3 into the slot the stable generation is not in, W4 into the canary word.
        return self._write(meta, payload, published_ns, rollout=rollout)

    def promote(self) -> int:
        """Make the candidate the stable generation, for every reader; returns it."""
        self.check_words()
        words = self.anchor.words
        candidate = int(words[L.A_CANARY_GENERATION])
        if not words[L.A_ROLLOUT]:
            return int(words[L.A_GENERATION])
        self._set(L.A_GENERATION, candidate)  # W4 for everyone: the slot was written
        self._end_rollout()
        if self._candidate is not None:
            self._published, self._candidate = self._candidate, None
        words[L.A_HEARTBEAT_NS] = time.time_ns()
        announce(words, self._wake)
        return candidate

    def canary_room(self) -> int:
        """How many more canaries the anchor's list holds."""
        return L.CANARY_LIST_MAX - len(self._canaries)

    def reset_canaries(self, canaries: list[tuple[int, int]]) -> None:
        """Write the canary list again with just ``canaries`` (``(entry, pid)``).

        The count goes to 0 first: a reader that looks meanwhile finds no
        list and stays as it is until its next look (``Reader._check_role``).
        """
        self._set(L.A_CANARY_COUNT, 0)
        self._canaries = []
        self.add_canaries(canaries)

    def add_canaries(self, canaries: list[tuple[int, int]]) -> int:
        """Add ``(table entry, pid)`` readers to the canary list; returns how many fit.

        The list is the anchor's, which only the publisher writes: the words
        first, then the count, so a reader never finds a half-written one.
        It lasts until the rollout ends (:meth:`promote`, a plain
        :meth:`publish`), through candidates that replace candidates. A
        reader finds out when its adoption thread next wakes
        (:meth:`wake_readers`, or the next candidate).
        """
        words = self.anchor.words
        room = L.CANARY_LIST_MAX - len(self._canaries)
        added = [L.canary_key(entry, pid) for entry, pid in canaries[:max(room, 0)]]
        start = L.CANARY_LIST_WORD + len(self._canaries)
        words[start:start + len(added)] = array.array("Q", added)
        self._canaries += added
        self._set(L.A_CANARY_COUNT, len(self._canaries))
        return len(added)

    def wake_readers(self) -> None:
        """Wake every reader's adoption thread (new canaries, a flush of health counts)."""
        announce(self.anchor.words, self._wake)

    def readers(
        self, *, only: Collection[int] | None = None, locks_of: Collection[int] | None = None
    ) -> list[table.ReaderEntry]:
        """The reader table's entries, canaries marked (see ``table.entries``)."""
        if self._table is None:
            return []
        return table.entries(self._table, self.rollout, frozenset(self._canaries), only=only,
                             locks_of=locks_of)

    def reader_alive(self, entry: int, pid: int) -> bool:
        """Whether table entry ``entry`` is held by a live process ``pid`` (a canary to be)."""
        from shmconf.status import pid_alive

        # A pid that no process has was written by someone else.
        return self._table is not None and table.held(self._table, entry) and pid_alive(pid)

    @property
    def rollout(self) -> int:
        """The running rollout's id, 0 when none runs."""
        return int(self.anchor.words[L.A_ROLLOUT])

    @property
    def candidate_generation(self) -> int:
        """The generation canaries hold (the stable one when no rollout runs)."""
        return int(self.anchor.words[L.A_CANARY_GENERATION])

    def _grow(self, needed: int) -> None:
        words = self.anchor.words
        old = self._data
        assert old is not None
        capacity = L.capacity_for(needed, self._capacity * 2)
        serial, new = self._new_data(words[L.A_DATA_SERIAL] + 1, capacity)  # G1
        stride = L.SLOT_HEADER_SIZE + capacity
        published = words[L.A_GENERATION] % 2
        src = L.slot_offset(published, self._stride)
        used = L.SLOT_HEADER_SIZE + self._used_bytes(old, src)
        new.pwrite(L.slot_offset(published, stride), old.pread(src, used))  # G2
        self._set(L.A_SLOT_CAPACITY, capacity)
        self._set(L.A_DATA_SERIAL, serial)  # G3: pairs with the reader's R2
        self._data, self._capacity, self._stride = new, capacity, stride
        old.close()
        old.unlink()  # readers that mapped it keep their mapping until they move on
        log.info("grew %r to %d bytes per slot (data segment %d)", self.name, capacity, serial)

    def _used_bytes(self, block: SharedBlock, offset: int) -> int:
        raw = block.pread(offset, L.SLOT_HEADER.size)
        if len(raw) < L.SLOT_HEADER.size:
            return 0
        header = L.SLOT_HEADER.unpack(raw)
        used = int(header[2] + header[4])  # meta_len + payload_len
        return min(used, self._capacity)

    def heartbeat(self) -> None:
        """Record that the publisher is alive (``status`` reads this).

        While objects of another layout version of the name remain, also
        remove those that no process maps any more.
        """
        self.check_words(verify_slot=True)
        self.anchor.words[L.A_HEARTBEAT_NS] = time.time_ns()
        try:
            self._open_table()
        except SegmentError as exc:
            # Readers read on, unlisted; publishing goes on. Said once.
            if str(exc) != self._table_problem:
                self._table_problem = str(exc)
                log.error("config %r: %s", self.name, exc)
        else:
            self._table_problem = ""
        if self._old_layouts:
            self.remove_old_layouts()

    def remove_old_layouts(self) -> None:
        """Unlink the name's objects of other layout versions whose last reader is gone."""
        if not self._old_layouts:
            return
        for shm_name in unused_other_layouts(self.name):
            log.info("removed %s: an older layout of %r that no process maps any more",
                     shm_name, self.name)
        self._old_layouts = bool(other_layout_names(self.name))

    def close(self) -> None:
        """Stop publishing: mark the segment as having no publisher, then unmap.

        The segments stay, and readers keep serving the last generation; a
        restarted publisher continues from it.
        """
        if self._anchor is not None:
            with contextlib.suppress(ValueError):
                self._anchor.words[L.A_PUBLISHER_PID] = 0
            self._anchor.close()
            self._anchor = None
        for block in (self._data, self._table):
            if block is not None:
                block.close()
        self._data = self._table = None
        if self._wake is not None:
            self._wake.close()
            self._wake = None

    def unlink(self) -> None:
        """Remove the segments' names: nobody can attach any more (see :func:`unlink_name`)."""
        if self._anchor is not None:
            _retire(self._anchor, self._wake)
        unlink_name(self.name)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def words_retired(words: memoryview) -> bool:
    """Whether an anchor says its name was unlinked."""
    return bool(words[L.A_FLAGS] & L.FLAG_RETIRED)


def _retire(anchor: SharedBlock, wake: WakeWord | None) -> None:
    """Tell attached readers that the name was unlinked: flag, then a new generation.

    Readers keep their last snapshot and look for a new anchor under the name
    now and then; the generation store wakes their slow path, the wake word
    their adoption threads.
    """
    words = anchor.words
    words[L.A_FLAGS] = words[L.A_FLAGS] | L.FLAG_RETIRED
    retired = max(words[L.A_GENERATION], words[L.A_CANARY_GENERATION]) + 1
    words[L.A_CANARY_GENERATION] = retired  # canaries look here
    words[L.A_GENERATION] = retired
    words[L.A_ROLLOUT] = 0
    words[L.A_CANARY_COUNT] = 0
    announce(words, wake)


def unlink_name(name: str) -> None:
    """Remove every shared-memory object of ``name``, of every layout version.

    Only the holder of the name's writer lock may call this. The anchor of
    this layout is marked retired first, so that attached readers know.
    """
    try:
        anchor = open_anchor(name, writable=True)
    except (OSError, AnchorNotReady, SegmentError):
        pass  # gone, half made, or damaged: nothing to tell readers through it
    else:
        try:
            if wake_available():
                with WakeWord(anchor.fileno()) as wake:
                    _retire(anchor, wake)
            else:
                _retire(anchor, None)
        finally:
            anchor.close()
    for shm_name in list_shm_names(name) + other_layout_names(name):
        unlink_shm(shm_name)
    unlink_shm(anchor_shm_name(name))
