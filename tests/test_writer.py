"""The write path: generation continuity, one writer per name, growth."""

from __future__ import annotations

import pytest

import shmconf
from shmconf.protocol import layout as L
from shmconf.protocol.block import list_shm_names
from shmconf.protocol.layout import anchor_shm_name, data_shm_name, table_shm_name
from shmconf.protocol.slot import create_data


def test_restarted_publisher_continues_the_generation_count(name: str) -> None:
    with shmconf.Publisher(name) as first:
        assert first.publish({"v": 1}) == 1
        assert first.publish({"v": 2}) == 2
    reader = shmconf.attach(name)
    try:
        with shmconf.Publisher(name) as second:
            assert second.generation == 2
            # The same content again publishes nothing, also after a restart.
            assert second.publish({"v": 2}) == 2
            assert second.publish({"v": 3}) == 3
            assert reader.get()["v"] == 3
            second.unlink()
    finally:
        reader.close()


def test_generations_continue_from_history_after_unlink(name: str) -> None:
    with shmconf.Publisher(name) as first:
        for v in range(5):
            first.publish({"v": v})
        first.unlink()
    assert list_shm_names(name) == []
    with shmconf.Publisher(name) as second:
        assert second.publish({"v": 99}) == 6
        second.unlink()


def test_second_publisher_is_refused(name: str) -> None:
    with shmconf.Publisher(name) as first:
        first.publish({"v": 1})
        with pytest.raises(shmconf.PublisherRunningError, match=r"already published by pid \d+"):
            shmconf.Publisher(name)
        first.unlink()


def test_second_publisher_in_another_process_is_refused(name: str) -> None:
    from tests.helpers import python

    with shmconf.Publisher(name) as first:
        first.publish({"v": 1})
        proc = python("-c", f"import shmconf; shmconf.Publisher({name!r})")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "PublisherRunningError" in err
        assert "--standby" in err
        first.unlink()


def test_config_larger_than_slot_grows_without_reattach(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": "small"})
        reader = shmconf.attach(name)
        try:
            big = "x" * (L.DEFAULT_SLOT_CAPACITY * 5)
            publisher.publish({"v": big})
            assert reader.get()["v"] == big
            assert publisher.writer.slot_capacity >= len(big)
            # Only the anchor, the newest data segment and the table keep a name.
            names = list_shm_names(name)
            assert names == [anchor_shm_name(name), data_shm_name(name, 2), table_shm_name(name)]
            publisher.publish({"v": "small again"})
            assert reader.get()["v"] == "small again"
        finally:
            reader.close()
        publisher.unlink()


def test_restart_removes_leftover_data_segments(name: str) -> None:
    with shmconf.Publisher(name) as first:
        first.publish({"v": 1})
    # A publisher killed while growing leaves a half-made next segment.
    create_data(name, 7, L.DEFAULT_SLOT_CAPACITY).close()
    with shmconf.Publisher(name) as second:
        assert data_shm_name(name, 7) not in list_shm_names(name)
        assert second.generation == 1
        second.unlink()
