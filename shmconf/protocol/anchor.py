"""The anchor: the fixed header every read starts from.

``shmconf-V.NAME`` holds the published generation (the commit point), the
serial and slot capacity of the data segment that holds the slots, the
publisher's pid and heartbeat, and the wake word (``wake.py``). It never
moves and never grows, so a reader's hot path is one aligned 8-byte load from
a mapping that never changes. Only the publisher writes it: readers map it
read-only. Offsets: ``layout.py``.
"""

from __future__ import annotations

from shmconf.errors import AnchorNotReady, SegmentError
from shmconf.protocol import layout as L
from shmconf.protocol.block import BlockNotSized, SharedBlock


def create_anchor(name: str, *, mode: int = 0o600, gid: int | None = None) -> SharedBlock:
    """Create the anchor of ``name``, at generation 0 (nothing published).

    The magic is written last: a reader that opens the anchor between its
    creation and that store sees a zero magic and waits, rather than failing.
    """
    block = SharedBlock.create(L.anchor_shm_name(name), L.ANCHOR_SIZE, mode=mode, gid=gid)
    block.write(0, L.ANCHOR_PREFIX.pack(L.ANCHOR_MAGIC, L.LAYOUT_VERSION, L.ANCHOR_HEADER_SIZE))
    return block


def open_anchor(
    name: str, *, writable: bool, trusted_uids: frozenset[int] | None = None
) -> SharedBlock:
    """Attach the anchor of ``name`` and check its header.

    Raises ``FileNotFoundError`` (no such name), :class:`AnchorNotReady`
    (created an instant ago: not sized or header not written yet), or a
    :class:`SegmentError` saying what is wrong with it.
    """
    try:
        block = SharedBlock.open(
            L.anchor_shm_name(name),
            writable=writable,
            min_size=L.ANCHOR_SIZE,
            trusted_uids=trusted_uids,
        )
    except BlockNotSized:
        # Created by shm_open an instant ago and not sized yet.
        raise AnchorNotReady(L.anchor_shm_name(name)) from None
    try:
        check_anchor(block)
    except BaseException:
        block.close()
        raise
    return block


def check_anchor(block: SharedBlock) -> None:
    """Validate an anchor header against the layout and the mapping's bounds."""
    magic, version, header_size = L.ANCHOR_PREFIX.unpack(block.read(0, L.ANCHOR_PREFIX.size))
    if magic == b"\0" * 8:
        raise AnchorNotReady(block.shm_name)
    if magic != L.ANCHOR_MAGIC:
        raise SegmentError(
            block.shm_name,
            f"bad magic {magic!r}: not a shmconf segment; another program uses this name",
        )
    if version != L.LAYOUT_VERSION:
        raise SegmentError(
            block.shm_name,
            f"layout version {version}, this shmconf reads version {L.LAYOUT_VERSION}; "
            "run the same shmconf version in the publisher and the workers",
        )
    if header_size != L.ANCHOR_HEADER_SIZE or block.size != L.ANCHOR_SIZE:
        raise SegmentError(
            block.shm_name,
            f"header bounds do not fit the layout (header {header_size}, mapping {block.size} "
            f"bytes, expected {L.ANCHOR_HEADER_SIZE} and {L.ANCHOR_SIZE}): the segment is "
            "corrupted; `shmconf unlink` it and restart the publisher",
        )


def canaries(words: memoryview) -> frozenset[int]:
    """The running rollout's canary list (``layout.canary_key`` words); empty when none runs."""
    count = int(words[L.A_CANARY_COUNT])
    if not words[L.A_ROLLOUT] or not 0 < count <= L.CANARY_LIST_MAX:
        return frozenset()
    return frozenset(words[L.CANARY_LIST_WORD:L.CANARY_LIST_WORD + count].tolist())
