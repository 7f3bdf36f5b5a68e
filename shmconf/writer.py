"""The write side of the segment protocol: fill the inactive slot, then commit.

Publishing generation ``n`` (the steps of ``docs/design.md``)::

    W1  seq = slot[n % 2].seq; store an odd seq          (slot is being written)
    W2  store meta, payload, then the slot header with its checksum
    W3  store seq + 1 (even)                             (slot is complete)
    W4  anchor.generation = n                            (commit point)

A config larger than a slot goes to a new data segment first::

    G1  create data segment serial+1 with a doubled capacity (posix_fallocate:
        a full /dev/shm fails here, before anything changed)
    G2  copy the published slot ``g % 2`` into it, unchanged
    G3  anchor.data_serial = serial+1
    G4  W1..W4 on the new segment, then unlink the old one's name

Python has no store barriers. On x86-64 stores become visible in program
order, so a reader that sees ``n`` in W4 sees the slot W1-W3 wrote. A weakly
ordered CPU may show W4 before W2; the reader then copies a slot whose seq,
generation or checksum does not match and retries. The checksum is what
makes a torn copy impossible to accept on every CPU.

Exactly one writer may run these steps for a name: the publisher holds a file
lock around a :class:`Writer` for its whole life.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zlib
from typing import Final

from shmconf import _layout as L
from shmconf import segment
from shmconf._errors import SegmentError

log = logging.getLogger("shmconf.writer")

#: No real publisher gets near 2**63 generations; a count that does was
#: overwritten by something else, and must not wrap the u64 word.
_GENERATION_LIMIT: Final = 1 << 63

#: Bytes 12..63 of a slot header (meta_len, generation, payload_len,
#: published_ns and the reserved tail), the part the checksum covers.
_CHECKED_HEADER: Final = struct.Struct("<IQQQ24x")


def write_slot(
    block: segment.SharedBlock,
    offset: int,
    *,
    generation: int,
    meta: bytes,
    payload: bytes,
    published_ns: int,
) -> None:
    """Fill the slot at ``offset`` under its sequence word (steps W1-W3)."""
    words = block.words
    seq_index = offset // 8
    seq = words[seq_index]
    # A seq left odd by a writer killed mid-write stays odd: start past it.
    odd = seq + 1 if seq % 2 == 0 else seq + 2
    words[seq_index] = odd  # W1: pairs with the reader's R3/R6 seq checks
    checked = _CHECKED_HEADER.pack(len(meta), generation, len(payload), published_ns)
    checksum = zlib.crc32(payload, zlib.crc32(meta, zlib.crc32(checked)))
    body = offset + L.SLOT_HEADER_SIZE
    block.write(body, meta)
    block.write(body + len(meta), payload)
    block.write(offset + 8, struct.pack("<I", checksum) + checked)  # W2
    words[seq_index] = odd + 1  # W3


class Writer:
    """Publishes snapshots into the anchor and data segment of one name.

    Opening continues an existing segment: the next generation follows the
    one it holds (or ``min_generation``, whichever is larger), so generations
    only grow across publisher restarts. Not thread-safe: one caller at a
    time, and one Writer per name across the host (the publisher's lock).
    """

    _anchor: segment.SharedBlock | None = None
    _data: segment.SharedBlock | None = None

    def __init__(
        self,
        name: str,
        *,
        mode: int = 0o600,
        gid: int | None = None,
        min_generation: int = 0,
        slot_capacity: int = L.DEFAULT_SLOT_CAPACITY,
    ) -> None:
        self.name = segment.validate_name(name)
        self._mode = mode
        self._data_mode = mode & ~0o022  # readers never write a data segment
        self._gid = gid
        # Generations only grow: a segment recreated after an unlink starts at
        # 0, and the first publish then follows the history's last generation.
        self._floor = min_generation
        try:
            anchor = segment.open_anchor(name, writable=True)
        except FileNotFoundError:
            anchor = segment.create_anchor(name, mode=mode, gid=gid)
        except segment.AnchorNotReady:
            # Only a writer creates anchors, and we hold the writer lock: this
            # one was left by a publisher killed while creating it.
            segment.unlink_shm(segment.anchor_shm_name(name))
            anchor = segment.create_anchor(name, mode=mode, gid=gid)
        self._anchor = anchor
        words = anchor.words
        self._open_data(slot_capacity)
        self._remove_leftovers()
        now = time.time_ns()
        words[L.A_PUBLISHER_PID] = os.getpid()
        words[L.A_STARTED_NS] = now
        words[L.A_HEARTBEAT_NS] = now
        words[L.A_FLAGS] = 0

    def _open_data(self, slot_capacity: int) -> None:
        words = self.anchor.words
        serial = words[L.A_DATA_SERIAL]
        if serial:
            try:
                self._data, self._capacity, self._stride = segment.open_data(
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
        serial += 1
        segment.unlink_shm(segment.data_shm_name(self.name, serial))
        self._data = segment.create_data(
            self.name, serial, capacity, mode=self._data_mode, gid=self._gid
        )
        self._capacity, self._stride = capacity, L.SLOT_HEADER_SIZE + capacity
        words[L.A_SLOT_CAPACITY] = capacity
        words[L.A_DATA_SERIAL] = serial

    def _remove_leftovers(self) -> None:
        """Unlink data segments a killed publisher left half-made or unreclaimed."""
        current = segment.data_shm_name(self.name, self.anchor.words[L.A_DATA_SERIAL])
        anchor_name = segment.anchor_shm_name(self.name)
        for shm_name in segment.list_shm_names(self.name):
            if shm_name not in (anchor_name, current):
                log.info("removing leftover segment %s", shm_name)
                segment.unlink_shm(shm_name)

    @property
    def anchor(self) -> segment.SharedBlock:
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

        Only the writer may read its slot without the reader's checks: no
        one else writes it. A slot that fails its checksum (a writer killed
        mid-write, or damage) counts as nothing published.
        """
        generation = self.generation
        data = self._data
        if generation == 0 or data is None:
            return None
        offset = L.slot_offset(generation % 2, self._stride)
        header = data.read(offset, offset + L.SLOT_HEADER_SIZE)
        seq, checksum, meta_len, slot_gen, payload_len, _ = L.SLOT_HEADER.unpack_from(header)
        if seq % 2 or slot_gen != generation or meta_len + payload_len > self._capacity:
            return None
        start = offset + L.SLOT_HEADER_SIZE
        body = data.read(start, start + meta_len + payload_len)
        if zlib.crc32(body, zlib.crc32(header[L.SLOT_CHECKED_FROM :])) != checksum:
            return None
        return body[:meta_len], body[meta_len:]

    def publish(self, payload: bytes, meta: bytes = b"{}", published_ns: int | None = None) -> int:
        """Publish ``payload`` as the next generation; returns that generation.

        When the data does not fit a slot, a larger data segment is made first
        (steps G1-G4). A failure there (a full ``/dev/shm``) raises before
        anything a reader can see has changed.
        """
        words = self.anchor.words
        generation = max(words[L.A_GENERATION], self._floor) + 1
        if generation >= _GENERATION_LIMIT:
            raise SegmentError(
                self.anchor.shm_name,
                f"generation {generation - 1} is beyond any real count: the anchor is "
                "corrupted; `shmconf unlink` the name and restart the publisher",
            )
        if len(meta) + len(payload) > self._capacity:
            self._grow(len(meta) + len(payload))
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
        words[L.A_GENERATION] = generation  # W4: the commit point; pairs with the reader's R1
        words[L.A_HEARTBEAT_NS] = published_ns
        return generation

    def _grow(self, needed: int) -> None:
        words = self.anchor.words
        old = self._data
        assert old is not None
        capacity = L.capacity_for(needed, self._capacity * 2)
        serial = words[L.A_DATA_SERIAL] + 1
        # A writer killed while growing may have left this serial half made.
        segment.unlink_shm(segment.data_shm_name(self.name, serial))
        new = segment.create_data(  # G1
            self.name, serial, capacity, mode=self._data_mode, gid=self._gid
        )
        stride = L.SLOT_HEADER_SIZE + capacity
        published = words[L.A_GENERATION] % 2
        src = L.slot_offset(published, self._stride)
        used = L.SLOT_HEADER_SIZE + self._used_bytes(old, src)
        new.write(L.slot_offset(published, stride), old.read(src, src + used))  # G2
        words[L.A_SLOT_CAPACITY] = capacity
        words[L.A_DATA_SERIAL] = serial  # G3: pairs with the reader's R2
        self._data, self._capacity, self._stride = new, capacity, stride
        old.close()
        old.unlink()  # readers that mapped it keep their mapping until they move on
        log.info("grew %r to %d bytes per slot (data segment %d)", self.name, capacity, serial)

    def _used_bytes(self, block: segment.SharedBlock, offset: int) -> int:
        header = L.SLOT_HEADER.unpack(block.read(offset, offset + L.SLOT_HEADER.size))
        used = int(header[2] + header[4])  # meta_len + payload_len
        return min(used, self._capacity)

    def heartbeat(self) -> None:
        """Record that the publisher is alive (``status`` reads this)."""
        self.anchor.words[L.A_HEARTBEAT_NS] = time.time_ns()

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
        if self._data is not None:
            self._data.close()
            self._data = None

    def unlink(self) -> None:
        """Remove the segments' names: nobody can attach any more.

        Attached readers are told by the anchor's retired flag and keep their
        last snapshot until a new anchor appears under the name.
        """
        if self._anchor is not None:
            words = self._anchor.words
            words[L.A_FLAGS] = words[L.A_FLAGS] | L.FLAG_RETIRED
            words[L.A_GENERATION] = words[L.A_GENERATION] + 1  # wakes readers' slow path
        for shm_name in segment.list_shm_names(self.name):
            segment.unlink_shm(shm_name)
        segment.unlink_shm(segment.anchor_shm_name(self.name))

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
