"""Data segments and their two slots: the write and the verified read, used by both sides.

A data segment ``shmconf-V.NAME@SERIAL`` holds two slots of equal capacity;
generation ``g`` lives in slot ``g % 2``. The writer fills a slot under its
sequence word (W1-W3, :func:`write_slot`); every read of a slot, by a reader
or by the writer itself, goes through :func:`read_slot`, which makes the
checks R3-R6. The steps are numbered as in ``docs/design.md``.

Nobody maps a data segment: both sides use ``pwrite``/``pread``. A segment
truncated under a reader (by its owner's tooling, say) then reads short and
fails R3 or R6, where a load from a mapping past the end would have killed
the process with SIGBUS.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from shmconf.errors import SegmentError
from shmconf.protocol import layout as L
from shmconf.protocol.block import SharedBlock

#: Bytes 12..63 of a slot header (meta_len, generation, payload_len,
#: published_ns and the reserved tail), the part the checksum covers.
_CHECKED_HEADER: Final = struct.Struct("<IQQQ24x")
_SEQ: Final = struct.Struct("<Q")


def create_data(
    name: str, serial: int, capacity: int, *, mode: int = 0o600, gid: int | None = None
) -> SharedBlock:
    """Create data segment ``serial`` of ``name`` with two empty slots of ``capacity``."""
    block = SharedBlock.create(
        L.data_shm_name(name, serial), L.data_segment_size(capacity), mode=mode, gid=gid,
        mapped=False,
    )
    stride = L.SLOT_HEADER_SIZE + capacity
    block.pwrite(
        0,
        L.DATA_PREFIX.pack(
            L.DATA_MAGIC, L.LAYOUT_VERSION, L.DATA_HEADER_SIZE, serial, capacity, stride
        ),
    )
    return block


def open_data(
    name: str, serial: int, *, writable: bool, trusted_uids: frozenset[int] | None = None
) -> tuple[SharedBlock, int, int]:
    """Attach data segment ``serial``; returns ``(block, slot_capacity, slot_stride)``."""
    block = SharedBlock.open(
        L.data_shm_name(name, serial),
        writable=writable,
        min_size=L.DATA_HEADER_SIZE,
        trusted_uids=trusted_uids,
        mapped=False,
    )
    try:
        capacity, stride = check_data(block, serial)
    except BaseException:
        block.close()
        raise
    return block, capacity, stride


def check_data(block: SharedBlock, serial: int) -> tuple[int, int]:
    """Validate a data segment header; returns ``(slot_capacity, slot_stride)``."""
    header = block.pread(0, L.DATA_PREFIX.size)
    if len(header) < L.DATA_PREFIX.size:
        raise SegmentError(block.shm_name, "truncated: shorter than its header")
    magic, version, header_size, found_serial, capacity, stride = L.DATA_PREFIX.unpack(header)
    if magic != L.DATA_MAGIC or version != L.LAYOUT_VERSION:
        raise SegmentError(
            block.shm_name, f"bad magic or version ({magic!r}, {version}): not a data segment"
        )
    if (
        header_size != L.DATA_HEADER_SIZE
        or found_serial != serial
        or stride != L.SLOT_HEADER_SIZE + capacity
        or stride % 8
        or L.slot_offset(2, stride) > block.size
    ):
        raise SegmentError(
            block.shm_name,
            f"header bounds do not fit the mapping (serial {found_serial}, capacity "
            f"{capacity}, mapping {block.size} bytes): the segment is corrupted",
        )
    return capacity, stride


def write_slot(
    block: SharedBlock,
    offset: int,
    *,
    generation: int,
    meta: bytes,
    payload: bytes,
    published_ns: int,
) -> None:
    """Fill the slot at ``offset`` under its sequence word (steps W1-W3)."""
    found = block.pread(offset, 8)
    seq = _SEQ.unpack(found)[0] if len(found) == 8 else 0
    # A seq left odd by a writer killed mid-write stays odd: start past it.
    odd = seq + 1 if seq % 2 == 0 else seq + 2
    block.pwrite(offset, _SEQ.pack(odd))  # W1: pairs with the reader's R3/R5 seq checks
    checked = _CHECKED_HEADER.pack(len(meta), generation, len(payload), published_ns)
    checksum = zlib.crc32(payload, zlib.crc32(meta, zlib.crc32(checked)))
    body = offset + L.SLOT_HEADER_SIZE
    block.pwrite(body, meta)
    block.pwrite(body + len(meta), payload)
    block.pwrite(offset + 8, struct.pack("<I", checksum) + checked)  # W2
    block.pwrite(offset, _SEQ.pack(odd + 1))  # W3


def read_slot(
    block: SharedBlock, generation: int, stride: int, capacity: int, expect: int = 0
) -> tuple[bytes, bytes, int] | None:
    """Copy generation ``generation`` out of its slot and verify it (steps R3-R6).

    Returns ``(meta, payload, published_ns)``, or ``None`` when any check
    fails: the slot is being written, holds another generation, claims more
    than the slot holds, is cut short, changed while it was copied, or fails
    its checksum. The caller retries from R1.

    ``expect`` guesses the bytes of meta and payload (the last slot's, say):
    when the guess is large enough, the header and the body come in one
    ``pread``, and the read costs two system calls instead of three.
    """
    offset = L.slot_offset(generation % 2, stride)
    head = L.SLOT_HEADER_SIZE
    raw = block.pread(offset, head + min(expect, capacity))  # R3 (and R4 when expected)
    if len(raw) < head:
        return None
    seq, checksum, meta_len, slot_gen, payload_len, published_ns = L.SLOT_HEADER.unpack_from(raw)
    used = meta_len + payload_len
    if seq % 2 or slot_gen != generation or used > capacity:
        return None
    if len(raw) >= head + used:
        # One buffer holds header, meta and payload: one checksum call over it.
        crc = zlib.crc32(memoryview(raw)[L.SLOT_CHECKED_FROM : head + used])
        meta, payload = raw[head : head + meta_len], raw[head + meta_len : head + used]
    else:
        body = block.pread(offset + head, used)  # R4
        if len(body) != used:
            return None
        crc = zlib.crc32(body, zlib.crc32(memoryview(raw)[L.SLOT_CHECKED_FROM : head]))
        meta, payload = body[:meta_len], body[meta_len:]
    if block.pread(offset, 8) != raw[:8]:  # R5: pairs with a later writer's W1
        return None
    if crc != checksum:  # R6: what catches a torn copy
        return None
    return meta, payload, published_ns


def read_slot_meta(
    block: SharedBlock, generation: int, stride: int, capacity: int
) -> tuple[bytes, int, int] | None:
    """The meta of generation ``generation`` without its payload, for ``status``.

    Returns ``(meta, published_ns, used)`` where ``used`` is the bytes of
    meta and payload the slot holds, or ``None`` when the slot is being
    written or holds another generation. The checksum covers the payload
    too, so it is not checked here; the caller parses the meta and retries
    when that fails.
    """
    offset = L.slot_offset(generation % 2, stride)
    header = block.pread(offset, L.SLOT_HEADER_SIZE)
    if len(header) < L.SLOT_HEADER_SIZE:
        return None
    seq, _, meta_len, slot_gen, payload_len, published_ns = L.SLOT_HEADER.unpack_from(header)
    if seq % 2 or slot_gen != generation or meta_len + payload_len > capacity:
        return None
    meta = block.pread(offset + L.SLOT_HEADER_SIZE, meta_len)
    if len(meta) != meta_len or block.pread(offset, 8) != header[:8]:
        return None
    return meta, published_ns, meta_len + payload_len
