"""Byte layout and names of shmconf's shared-memory objects: offsets, constants, names; no I/O.

This module is the one home of the layout. ``docs/design.md`` draws it as
tables, with the writer's and the reader's steps, and
``tests/test_docs_layout.py`` checks those tables against the constants
here, so the two cannot drift.

A published name owns three kinds of POSIX shared-memory objects:

* the **anchor**, ``shmconf-V.NAME``: one page holding the published
  generation (the commit point every read starts from), the serial and slot
  capacity of the data segment, the publisher's pid and heartbeat, the wake
  word readers sleep on, and flags. It never moves and never grows, so a
  reader's hot path is one aligned 8-byte load from a mapping that never
  changes. Only the publisher writes it; it is the one object readers map.
* a **data segment**, ``shmconf-V.NAME@SERIAL``: a header and two slots of
  equal capacity. A config that outgrows them is published into a larger
  data segment with the next serial; the anchor then points at it. Nobody
  maps it: the publisher writes it with ``pwrite`` and readers copy a slot
  out with ``pread``, so a truncated segment fails a check instead of
  killing a process with SIGBUS.
* the **reader table**, ``shmconf-V.NAME@readers``: one 64-byte entry per
  attached reader process, which each reader writes with ``pwrite`` and
  holds with a non-blocking lock for as long as it lives (``table.py``).
  It grows with the number of readers and is never mapped.

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

# Version 3 moved the reader table out of the anchor into its own object,
# added the wake word, and stopped mapping data segments. Version 4 added the
# rollout: the canary word, the rollout id and the canary list in the anchor,
# and health counts in the reader's part of a table entry; a slot is still
# ``generation % 2``, but generations may skip a number so that a candidate
# never lands in the stable one's slot.

#: The version of the layout below; see the policy above.
LAYOUT_VERSION: Final = 4
#: Prefix of every shared-memory name of this layout (``/dev/shm/shmconf-2.*``).
SHM_PREFIX: Final = f"shmconf-{LAYOUT_VERSION}."
#: Matches the shared-memory names of every layout, this one included; group
#: 1 is the version ("" for version 1), group 2 the config name.
SHM_NAME_RE: Final = re.compile(
    r"shmconf(?:-(\d+))?\.([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@(?:\d+|readers))?"
)

#: A name becomes part of a shared-memory name and of file names, so it may not
#: hold a slash (directory escape) or '@' (which separates the data serial).
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")

# -- anchor -----------------------------------------------------------------

#: The anchor is one page: readers map exactly this, and the wake word's
#: futex lives in it.
ANCHOR_SIZE: Final = 4096
ANCHOR_HEADER_SIZE: Final = 256
#: Word indexes into the anchor viewed as u64 (``memoryview.cast("Q")``).
A_GENERATION: Final = 16 // 8
A_DATA_SERIAL: Final = 24 // 8
A_SLOT_CAPACITY: Final = 32 // 8
A_PUBLISHER_PID: Final = 40 // 8
A_HEARTBEAT_NS: Final = 48 // 8
A_STARTED_NS: Final = 56 // 8
#: The wake word: its low 32 bits count publishes (and other news for
#: readers) modulo 2**32; readers sleep on it with ``futex`` (``wake.py``).
A_WAKE: Final = 64 // 8
A_FLAGS: Final = 72 // 8
#: The generation canary workers hold: a candidate during a rollout, else the
#: same as A_GENERATION. A canary's fast path loads this word instead (its
#: view of the anchor starts CANARY_VIEW words later, so the load is the same
#: ``words[2]``).
A_CANARY_GENERATION: Final = 80 // 8
#: The running rollout's id (0: none); its canaries are in the canary list.
A_ROLLOUT: Final = 88 // 8
#: How many canaries the list below holds (0 outside a rollout).
A_CANARY_COUNT: Final = 96 // 8
#: Offset, in words, of a canary's view of the anchor (see A_CANARY_GENERATION).
CANARY_VIEW: Final = A_CANARY_GENERATION - A_GENERATION
#: The running rollout's canaries, after the header: one word each, the
#: reader's table entry in the high 32 bits and its pid in the low 32. The
#: anchor is the publisher's alone (read-only to the group), so only the
#: publisher decides who is a canary; a reader finds itself here.
CANARY_LIST_WORD: Final = ANCHOR_HEADER_SIZE // 8
#: The most canaries one rollout holds at once (the rest of the page).
CANARY_LIST_MAX: Final = (ANCHOR_SIZE - ANCHOR_HEADER_SIZE) // 8


def canary_key(entry: int, pid: int) -> int:
    """The canary list's word for the reader of table entry ``entry`` with ``pid``."""
    return entry << 32 | pid
#: Byte offset of the wake word's 32-bit futex (the low half of A_WAKE).
WAKE_OFFSET: Final = A_WAKE * 8
#: magic, version, header_size.
ANCHOR_PREFIX: Final = struct.Struct("<8sII")

#: Set in the anchor's flags when ``unlink`` removed its name: attached readers
#: keep their snapshot and look for a new anchor under the same name.
FLAG_RETIRED: Final = 1

# -- reader table --------------------------------------------------------------

#: Bytes of one entry; entry ``i`` is at ``i * TABLE_ENTRY_SIZE``, no header.
TABLE_ENTRY_SIZE: Final = 64
#: The part of an entry its reader writes; the rest is the publisher's.
TABLE_READER_PART: Final = 48
#: pid (0: free), flags, generation held, adopted_ns, refused generation, then
#: the health counts under the generation held (requests, failed requests,
#: failed checks) and the low 32 bits of the rollout id they were counted in.
TABLE_ENTRY: Final = struct.Struct("<IIQQQIIII")
#: Entry flags: the reader adopts new generations while idle (a thread
#: sleeps on the wake word), so being behind is only ever momentary.
ENTRY_IDLE_ADOPTION: Final = 1
#: Entry flags: a canary is running its health checks on the generation it
#: holds; a rollout's step waits for them.
ENTRY_CHECKING: Final = 2
#: The table grows to this many entries (4 MiB); a reader that finds every
#: entry held reads on, unlisted, and ``status`` says the table is full.
TABLE_MAX_ENTRIES: Final = 1 << 16

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


def table_shm_name(name: str) -> str:
    """Shared-memory name of the reader table of ``name``."""
    return f"{anchor_shm_name(name)}@readers"
