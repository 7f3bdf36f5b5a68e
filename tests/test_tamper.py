"""The publisher owns its anchor words: damage is logged, restored, and never continued from."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import shmconf
from shmconf import status
from shmconf.protocol import layout as L
from shmconf.protocol.anchor import open_anchor
from shmconf.protocol.block import SHM_DIR
from tests.helpers import REPO, wait_until


def scribble(name: str, index: int, value: int) -> None:
    """Write one anchor word as a careless process of the owner could."""
    anchor = open_anchor(name, writable=True)
    try:
        anchor.words[index] = value
    finally:
        anchor.close()


def test_a_bumped_generation_is_restored_and_publishing_goes_on(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    with shmconf.Publisher(name) as publisher:
        assert publisher.publish({"v": 1}) == 1
        reader = shmconf.attach(name)
        scribble(name, L.A_GENERATION, 2**63 - 3)
        with caplog.at_level(logging.WARNING, logger="shmconf.writer"):
            assert publisher.publish({"v": 2}) == 2
        assert "anchor word generation was 9223372036854775805, expected 1" in caplog.text
        assert reader.get()["v"] == 2
        reader.close()
        publisher.unlink()


def test_a_damaged_data_serial_is_restored_by_the_heartbeat(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name)
        serial = publisher.writer.anchor.words[L.A_DATA_SERIAL]
        scribble(name, L.A_DATA_SERIAL, 7)
        with caplog.at_level(logging.WARNING, logger="shmconf.writer"):
            publisher.writer.heartbeat()
        assert f"anchor word data_serial was 7, expected {serial}" in caplog.text
        publisher.publish({"v": 2})
        assert reader.get()["v"] == 2  # adopted: the readers were led back
        reader.close()
        publisher.unlink()


def test_a_restart_never_continues_from_an_absurd_generation(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        for value in range(3):
            publisher.publish({"v": value})
    scribble(name, L.A_GENERATION, 2**63 - 3)
    with shmconf.Publisher(name) as publisher:
        assert publisher.generation == 3
        assert publisher.publish({"v": 9}) == 4
        publisher.unlink()


def test_the_advice_for_an_exhausted_count_works(name: str) -> None:
    # Anchor and history both past any real count: the message's advice,
    # followed literally, gives a name that publishes again.
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        history = publisher.history.directory
    (history / f"{2**63 - 1:020d}.json").write_bytes(
        (history / f"{1:020d}.json").read_bytes().replace(b'"generation":1', b'"generation":'
                                                          + str(2**63 - 1).encode()))
    with shmconf.Publisher(name) as publisher, pytest.raises(shmconf.SegmentError) as info:
        publisher.publish({"v": 2})
    advice = str(info.value)
    assert "`shmconf unlink NAME --purge`" in advice
    result = subprocess.run([sys.executable, "-m", "shmconf", "unlink", name, "--purge"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    with shmconf.Publisher(name) as publisher:
        assert publisher.publish({"v": 3}) == 1
        publisher.unlink()


def test_an_owner_truncating_the_data_segment_kills_no_one(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    # Were the segment mapped, the next read of it would kill this process
    # with SIGBUS. It is read with pread: a short read fails a check.
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1, "pad": "x" * 5000})
        reader = shmconf.attach(name)
        old = publisher.generation
        publisher.publish({"v": 2, "pad": "x" * 5000})
        serial = publisher.writer.anchor.words[L.A_DATA_SERIAL]
        os.truncate(os.path.join(SHM_DIR, L.data_shm_name(name, serial)), 0)
        assert reader.get()["v"] == 1  # generation 2 fails its checks: the last good
        assert reader.generation == old
        with caplog.at_level(logging.WARNING, logger="shmconf.writer"):
            publisher.writer.heartbeat()
        assert f"data segment {serial} was damaged or tampered with (0 of" in caplog.text
        # Restored, and the damaged generation's content published again.
        assert reader.get()["v"] == 2
        assert reader.generation == old + 2
        with shmconf.attach(name) as fresh:
            assert fresh.get()["v"] == 2
        reader.close()
        publisher.unlink()


def test_a_scribbled_published_slot_is_republished_by_the_heartbeat(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name, idle_adoption=True)
        publisher.publish({"v": 2})
        wait_until(lambda: reader.generation == 2, 5, 0.001, "adoption of 2")
        data = publisher.writer._data
        assert data is not None
        offset = L.slot_offset(0, publisher.writer._stride) + L.SLOT_HEADER_SIZE
        data.pwrite(offset, b"garbage")
        with caplog.at_level(logging.WARNING, logger="shmconf.writer"):
            publisher.writer.heartbeat()
        assert "published slot unreadable); restored" in caplog.text
        wait_until(lambda: reader.generation == 3, 5, 0.001, "the republished generation")
        assert reader.get()["v"] == 2
        reader.close()
        publisher.unlink()


def test_an_owner_truncating_the_reader_table_kills_no_one(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name, idle_adoption=True)
        os.truncate(os.path.join(SHM_DIR, L.table_shm_name(name)), 0)
        assert status.collect(name, reclaim=False).readers == []
        publisher.publish({"v": 2})
        # The adoption rewrote this reader's entry.
        wait_until(lambda: [(r.pid, r.generation) for r in status.collect(
            name, reclaim=False).readers] == [(os.getpid(), 2)], 5, 0.005, "relisted")
        reader.close()
        publisher.unlink()


def test_a_removed_reader_table_is_made_again(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name, idle_adoption=True)
        os.unlink(os.path.join(SHM_DIR, L.table_shm_name(name)))
        assert status.collect(name, reclaim=False).readers_unlisted is not None
        publisher.writer.heartbeat()
        # The next adoption relists it (the table's name is checked at most once a second).
        generations = iter(range(2, 1000))

        def relisted() -> bool:
            generation = publisher.publish({"v": next(generations)})
            wait_until(lambda: reader.generation == generation, 5, 0.001, "adopted")
            return [(r.pid, r.generation) for r in status.collect(
                name, reclaim=False).readers] == [(os.getpid(), generation)]

        wait_until(relisted, 10, 0.2, "relisted")
        reader.close()
        publisher.unlink()
