"""Byte layout and names of shmconf's shared-memory objects: offsets, constants, names; no I/O.

This module is the one home of the layout. ``docs/design.md`` draws it as
tables, with the writer's and the reader's steps, and
``tests/test_docs_layout.py`` checks those tables against the constants
here, so the two cannot drift.

A published name owns two kinds of POSIX shared-memory objects:

* the **anchor**, ``shmconf-V.NAME``: a fixed-size header (the published
  generation, the commit point every read starts from; the serial and slot
  capacity of the data segment; the publisher's pid and heartbeat; flags)
  and the reader table. It never moves and never grows, so a reader's hot
  path is one aligned 8-byte load from a mapping that never changes.
* a **data segment**, ``shmconf-V.NAME@SERIAL``: a header and two slots of
  equal capacity. A config that outgrows them is published into a larger
  data segment with the next serial; the anchor then points at it.

All integers are little-endian, every 64-bit word is 8-byte aligned, and
every size is a multiple of 8, so that a ``memoryview`` cast to ``"Q"`` reads
and writes whole words.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from shmconf.errors import InvalidNameError

#: Identifies an anchor; a zero magic means "being created", anything else is foreign.
ANCHOR_MAGIC: Final = b"SHMCONF\0"
#: Identifies a data segment.
DATA_MAGIC: Final = b"SHMCDATA"

# -- layout versions and names ------------------------------------------------
#
# The policy, for every change of this file:
#
# 1. Any change of the bytes (an offset, a size, the meaning of a word or a
#    flag) bumps LAYOUT_VERSION, in the same commit.
# 2. The version is part of every shared-memory name (SHM_PREFIX), so a new
#    layout never reuses the names of an old one. During a `kill -USR2`
#    upgrade the old workers keep reading the old objects while the new ones
#    read the new; neither ever maps bytes of a layout it does not know.
# 3. A publisher that holds a name removes the objects of other layouts of
#    that name once no process maps them any more (their last reader is gone):
#    see block.unused_other_layouts().
# 4. Readers refuse a header whose version is not LAYOUT_VERSION (a clear
#    error, never a misread), which only a hand-made object can show.
#
# Version 1 named its objects ``shmconf.NAME`` and ``shmconf.NAME@SERIAL``,
# with no version; from version 2 on they are ``shmconf-V.NAME[@SERIAL]``.
# No config name can make one look like another: names start with a letter
# or a digit, and the prefixes differ before the first '.'.

#: The version of the layout below; see the policy above.
LAYOUT_VERSION: Final = 2
#: Prefix of every shared-memory name of this layout (``/dev/shm/shmconf-2.*``).
SHM_PREFIX: Final = f"shmconf-{LAYOUT_VERSION}."
#: Matches the shared-memory names of every layout, this one included; group
#: 1 is the version ("" for version 1), group 2 the config name.
SHM_NAME_RE: Final = re.compile(r"shmconf(?:-(\d+))?\.([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@\d+)?")

#: A name becomes part of a shared-memory name and of file names, so it may not
#: hold a slash (directory escape) or '@' (which separates the data serial).
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")

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


# -- names ---------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a config, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            str(name),
            "use 1-100 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit",
        )
    if ".." in name:
        raise InvalidNameError(name, "'..' is not allowed in a name")
    return name


def anchor_shm_name(name: str) -> str:
    """Shared-memory name of the anchor of ``name``."""
    return SHM_PREFIX + validate_name(name)


def data_shm_name(name: str, serial: int) -> str:
    """Shared-memory name of the data segment ``serial`` of ``name``."""
    return f"{anchor_shm_name(name)}@{serial}"
