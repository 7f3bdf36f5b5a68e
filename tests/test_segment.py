"""Segment create/attach checks: mode, owner, magic, version, bounds, names."""

from __future__ import annotations

import _posixshmem
import os
import stat
import struct

import pytest

import shmconf
from shmconf.protocol import layout as L
from shmconf.protocol.block import SHM_DIR, SharedBlock, list_shm_names
from shmconf.protocol.layout import anchor_shm_name, data_shm_name, table_shm_name


def test_segments_are_created_0600(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        for shm_name in list_shm_names(name):
            mode = stat.S_IMODE(os.stat(os.path.join(SHM_DIR, shm_name)).st_mode)
            assert mode == 0o600, shm_name
        publisher.unlink()
    assert list_shm_names(name) == []


def test_group_publisher_makes_only_the_reader_table_group_writable(name: str) -> None:
    gid = os.getegid()
    with shmconf.Publisher(name, group=gid) as publisher:
        publisher.publish({"a": 1})
        modes = {
            shm: stat.S_IMODE(os.stat(os.path.join(SHM_DIR, shm)).st_mode)
            for shm in list_shm_names(name)
        }
        # What readers map or copy from is read-only to the group: a member
        # cannot truncate or scribble on it. Only the table, which nobody maps.
        assert modes[anchor_shm_name(name)] == 0o640
        assert modes[data_shm_name(name, 1)] == 0o640
        assert modes[table_shm_name(name)] == 0o660
        publisher.unlink()


@pytest.mark.parametrize(
    "bad", ["", "a/b", "../x", "a@1", ".hidden", "x" * 101, "a..b", "sp ace"]
)
def test_names_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(shmconf.InvalidNameError, match="invalid config name"):
        shmconf.attach(bad, timeout=0)
    with pytest.raises(shmconf.InvalidNameError):
        shmconf.Publisher(bad)


def test_attach_to_missing_name_times_out_clearly(name: str) -> None:
    with pytest.raises(shmconf.AttachTimeout, match=r"after 0.2s: no segment") as info:
        shmconf.attach(name, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert f"shmconf publish {name}" in str(info.value)


def test_attach_waits_for_first_generation(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        with pytest.raises(shmconf.AttachTimeout, match="nothing published yet"):
            shmconf.attach(name, timeout=0.1)
        publisher.unlink()


def _make_foreign(name: str, *, magic: bytes = b"NOTSHMC!", version: int = L.LAYOUT_VERSION,
                  header_size: int = L.ANCHOR_HEADER_SIZE, size: int = L.ANCHOR_SIZE,
                  mode: int = 0o600) -> None:
    block = SharedBlock.create(anchor_shm_name(name), size, mode=mode)
    try:
        block.write(0, struct.pack("<8sII", magic, version, header_size))
        block.words[L.A_GENERATION] = 1
    finally:
        block.close()


def test_bad_magic_is_refused(name: str) -> None:
    _make_foreign(name)
    with pytest.raises(shmconf.SegmentError, match=r"bad magic.*not a shmconf segment"):
        shmconf.attach(name, timeout=0.1)
    with pytest.raises(shmconf.SegmentError, match="bad magic"):
        shmconf.Publisher(name)


def test_other_layout_version_is_refused(name: str) -> None:
    _make_foreign(name, magic=L.ANCHOR_MAGIC, version=99)
    with pytest.raises(shmconf.SegmentError, match="layout version 99"):
        shmconf.attach(name, timeout=0.1)


def test_bounds_beyond_the_mapping_are_refused(name: str) -> None:
    _make_foreign(name, magic=L.ANCHOR_MAGIC, header_size=10**6)
    with pytest.raises(shmconf.SegmentError, match="bounds do not fit the layout"):
        shmconf.attach(name, timeout=0.1)


def test_too_small_mapping_is_refused(name: str) -> None:
    _make_foreign(name, magic=L.ANCHOR_MAGIC, size=64)
    with pytest.raises(shmconf.SegmentError, match="does not fit the layout"):
        shmconf.attach(name, timeout=0.1)


def test_unsized_anchor_counts_as_being_created(name: str) -> None:
    # What a publisher killed between shm_open and sizing leaves (or what a
    # reader sees during that instant): readers wait, a publisher replaces it.
    fd = _posixshmem.shm_open("/" + anchor_shm_name(name), os.O_CREAT | os.O_RDWR,
                              mode=0o600)
    os.close(fd)
    with pytest.raises(shmconf.AttachTimeout, match="being created"):
        shmconf.attach(name, timeout=0.1)
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        with shmconf.attach(name, timeout=1) as reader:
            assert reader.get()["v"] == 1
        publisher.unlink()


def test_world_accessible_segment_is_refused(name: str) -> None:
    _make_foreign(name, magic=L.ANCHOR_MAGIC, mode=0o666)
    with pytest.raises(shmconf.SegmentPermissionError, match="every user on the host"):
        shmconf.attach(name, timeout=0.1)


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_segment_owned_by_another_user_is_refused(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        for shm_name in list_shm_names(name):  # as if that user's publisher made them
            os.chown(os.path.join(SHM_DIR, shm_name), 65534, -1)
        with pytest.raises(shmconf.SegmentPermissionError, match="owned by uid 65534") as info:
            shmconf.attach(name, timeout=0.1)
        assert isinstance(info.value, PermissionError)
        # Trusting that user explicitly lets the reader in.
        reader = shmconf.attach(name, timeout=1, trusted_owner=65534)
        assert reader.get()["a"] == 1
        reader.close()
        publisher.unlink()


def test_errors_survive_a_process_boundary() -> None:
    import copyreg  # noqa: F401 - __reduce__ is what the pickle protocol would call

    error = shmconf.SegmentError("shmconf.x", "bad magic")
    rebuilt = error.__reduce__()[0](*error.__reduce__()[1])
    assert str(rebuilt) == str(error)
    assert isinstance(rebuilt, OSError)


def test_a_failed_create_leaves_nothing(name: str) -> None:
    shm_name = anchor_shm_name(name)
    with pytest.raises(ValueError):  # noqa: PT011 - mmap's own message
        SharedBlock.create(shm_name, 0)
    assert list_shm_names(name) == []
