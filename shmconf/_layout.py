"""Byte layout of shmconf's shared-memory segments. Offsets and constants only; no I/O.

A published name owns two kinds of POSIX shared-memory objects:

* the **anchor**, ``shmconf.NAME``: a fixed-size header that holds the
  published generation (the commit point every read starts from), the serial
  of the data segment that holds the slots, the publisher's pid and heartbeat,
  and a table of attached readers. It never moves and never grows, so a
  reader's hot path is one aligned 8-byte load from a mapping that never
  changes.
* a **data segment**, ``shmconf.NAME@SERIAL``: two slots of equal capacity.
  A config that outgrows them is published into a larger data segment with
  the next serial; the anchor then points at it (see ``docs/design.md``).

All integers are little-endian, every 64-bit word is 8-byte aligned, and
every size is a multiple of 8, so that a ``memoryview`` cast to ``"Q"`` reads
and writes whole words. ``docs/design.md`` gives the same tables with the
writer's and the reader's steps.

Anchor header (``ANCHOR_HEADER_SIZE`` bytes)::

    0   magic              8s   b"SHMCONF\\0"
    8   version            u32  LAYOUT_VERSION
    12  header_size        u32  ANCHOR_HEADER_SIZE
    16  generation         u64  published generation; the commit point
    24  data_serial        u64  serial of the data segment holding the slots
    32  slot_capacity      u64  capacity of one slot in that data segment
    40  publisher_pid      u64  pid of the publisher holding the writer lock, 0 if none
    48  heartbeat_ns       u64  time.time_ns() of the publisher's last heartbeat
    56  started_ns         u64  time.time_ns() when that publisher took over
    64  table_offset       u32  byte offset of the reader table
    68  table_entries      u32  number of reader table entries
    72  flags              u64  FLAG_RETIRED once the anchor was unlinked
    80  ..255              reserved, zero

Reader table entry (``TABLE_ENTRY_SIZE`` bytes), ``table_entries`` of them::

    0   pid                u32  0 when free
    4   reserved           u32
    8   generation         u64  generation that reader holds

Data segment header (``DATA_HEADER_SIZE`` bytes), then two slots::

    0   magic              8s   b"SHMCDATA"
    8   version            u32  LAYOUT_VERSION
    12  header_size        u32  DATA_HEADER_SIZE
    16  serial             u64
    24  slot_capacity      u64  bytes of meta + payload one slot can hold
    32  slot_stride        u64  SLOT_HEADER_SIZE + slot_capacity
    40  ..63               reserved, zero

Slot ``i`` starts at ``DATA_HEADER_SIZE + i * slot_stride``::

    0   seq                u64  odd while the writer is filling the slot
    8   checksum           u32  zlib.crc32 of bytes [12, 64 + meta_len + payload_len)
    12  meta_len           u32  length of the meta JSON object
    16  generation         u64  generation this slot carries
    24  payload_len        u64  length of the payload (canonical JSON of the config)
    32  published_ns       u64  time.time_ns() of the publish
    40  ..63               reserved, zero
    64  meta               meta_len bytes: JSON object (digest, changed paths, sources, ...)
    64+meta_len  payload   payload_len bytes
"""

from __future__ import annotations

import struct
from typing import Final

#: Identifies an anchor; a zero magic means "being created", anything else is foreign.
ANCHOR_MAGIC: Final = b"SHMCONF\0"
#: Identifies a data segment.
DATA_MAGIC: Final = b"SHMCDATA"
#: Bumped on any incompatible change of the offsets below; readers refuse other versions.
LAYOUT_VERSION: Final = 1

#: Prefix of every shared-memory name shmconf creates (``/dev/shm/shmconf.*`` on Linux).
SHM_PREFIX: Final = "shmconf."

# -- anchor -----------------------------------------------------------------

ANCHOR_HEADER_SIZE: Final = 256
#: Word indexes into the anchor viewed as u64 (``memoryview.cast("Q")``).
A_GENERATION: Final = 16 // 8
A_DATA_SERIAL: Final = 24 // 8
A_SLOT_CAPACITY: Final = 32 // 8
A_PUBLISHER_PID: Final = 40 // 8
A_HEARTBEAT_NS: Final = 48 // 8
A_STARTED_NS: Final = 56 // 8
A_FLAGS: Final = 72 // 8
#: magic, version, header_size.
ANCHOR_PREFIX: Final = struct.Struct("<8sII")
#: table_offset, table_entries at byte 64.
ANCHOR_TABLE: Final = struct.Struct("<II")
ANCHOR_TABLE_AT: Final = 64

#: Set in the anchor's flags when ``unlink`` removed its name: attached readers
#: keep their snapshot and look for a new anchor under the same name.
FLAG_RETIRED: Final = 1

TABLE_ENTRY_SIZE: Final = 16
#: Room for this many attached reader processes; more still read, unlisted.
TABLE_ENTRIES: Final = 1008
ANCHOR_SIZE: Final = ANCHOR_HEADER_SIZE + TABLE_ENTRIES * TABLE_ENTRY_SIZE  # 16 KiB

# -- data segment ------------------------------------------------------------

DATA_HEADER_SIZE: Final = 64
#: magic, version, header_size, serial, slot_capacity, slot_stride.
DATA_PREFIX: Final = struct.Struct("<8sIIQQQ")

SLOT_HEADER_SIZE: Final = 64
#: seq, checksum, meta_len, generation, payload_len, published_ns.
SLOT_HEADER: Final = struct.Struct("<QIIQQQ")
#: The checksum covers the slot from meta_len on, so a torn length or
#: generation fails it just like a torn payload does.
SLOT_CHECKED_FROM: Final = 12

#: Slot capacity of the first data segment of a name: most configs fit, and
#: two slots of it cost 128 KiB of shared memory.
DEFAULT_SLOT_CAPACITY: Final = 64 * 1024
#: Granularity of slot capacities, so segments are whole pages.
CAPACITY_ALIGN: Final = 4096


def slot_offset(index: int, stride: int) -> int:
    """Byte offset of slot ``index`` (0 or 1) in a data segment."""
    return DATA_HEADER_SIZE + index * stride


def data_segment_size(capacity: int) -> int:
    """Bytes of a data segment whose slots hold ``capacity`` bytes each."""
    return DATA_HEADER_SIZE + 2 * (SLOT_HEADER_SIZE + capacity)


def capacity_for(needed: int, current: int = 0) -> int:
    """Slot capacity for a config of ``needed`` bytes: at least double, page aligned.

    Doubling keeps the number of grown segments logarithmic in the config size.
    """
    capacity = max(DEFAULT_SLOT_CAPACITY, current)
    while capacity < needed:
        capacity *= 2
    return -(-capacity // CAPACITY_ALIGN) * CAPACITY_ALIGN
