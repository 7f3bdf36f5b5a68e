"""Readers in other processes never see a torn, mixed or older snapshot.

Several reader processes read in tight loops while this process publishes as
fast as it can; every config carries its own checksum. Then a config many
times the slot capacity is published and every reader must see it.
"""

from __future__ import annotations

import os
import time

import orjson
import pytest

import shmconf
from shmconf.protocol import layout as L
from tests.checked import config
from tests.helpers import python

READERS = 3


@pytest.mark.slow
def test_concurrent_readers_never_see_torn_or_older_snapshots(name: str) -> None:
    publisher = shmconf.Publisher(name)
    procs = []
    try:
        publisher.publish(config(0, 100))
        procs = [python("-m", "tests.procs.consistency_reader", name) for _ in range(READERS)]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "attached"
        # Drive the writer directly, as fast as it goes, so that it laps the
        # readers: a slot gets rewritten while a reader is copying it. Sizes
        # vary so that copies of different lengths overlap the writer's stores.
        payloads = [
            orjson.dumps(config(seq, 200 + (seq * 7919) % 30_000)) for seq in range(1, 400)
        ]
        seq = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            publisher.writer.publish(payloads[seq % len(payloads)])
            seq += 1
        big = L.DEFAULT_SLOT_CAPACITY * 6
        final_generation = publisher.publish(config(len(payloads) + 1, big, final=True))
        assert publisher.writer.slot_capacity >= big
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        publisher.unlink()
    # The figures, for whoever runs this with -s.
    print(f"\ntorn reads: {seq} publishes, {sum(r['checked'] for r in results)} reads, "
          f"{sum(r['generations'] for r in results)} snapshots checked by {READERS} readers")
    for result in results:
        assert result["errors"] == []
        assert result["final_size"] == big
        assert result["last"] == final_generation
        assert result["generations"] > 1
        assert result["checked"] > 1000
    assert seq > 100


def test_reader_that_loads_generation_before_slot_retries(name: str) -> None:
    """Weak ordering: the generation store may become visible before the slot.

    Simulate exactly that by committing a generation whose slot still holds
    older content: the reader must retry, and return the new snapshot only
    once the slot is complete.
    """
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name)
        try:
            assert reader.get()["v"] == 1
            writer = publisher.writer
            anchor_words = writer.anchor.words
            # Commit generation 2 without writing its slot (slot 0 holds nothing).
            anchor_words[L.A_GENERATION] = 2
            # The reader retries, then keeps serving generation 1.
            assert reader.get()["v"] == 1
            assert reader.generation == 1
            # The writer's stores "arrive": fill slot 0 for generation 2.
            anchor_words[L.A_GENERATION] = 1
            assert publisher.publish({"v": 2}) == 2
            # Generation 2 was marked unreadable; the next publish moves on.
            assert publisher.publish({"v": 3}) == 3
            assert reader.get()["v"] == 3
        finally:
            reader.close()
        publisher.unlink()


def test_corrupted_payload_is_never_returned(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name)
        try:
            publisher.publish({"v": 2, "pad": "x" * 100})
            # Flip one payload byte of the published slot: the checksum fails.
            data = publisher.writer._data
            assert data is not None
            offset = L.slot_offset(2 % 2, publisher.writer._stride) + L.SLOT_HEADER_SIZE + 200
            data.pwrite(offset, bytes([data.pread(offset, 1)[0] ^ 0xFF]))
            assert reader.get()["v"] == 1
            assert reader.generation == 1
            publisher.publish({"v": 3})
            assert reader.get()["v"] == 3
        finally:
            reader.close()
        publisher.unlink()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_reads_and_registers_itself(name: str) -> None:
    from shmconf.status import read_readers

    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name)
        try:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: read, report, leave without cleanup handlers
                try:
                    listed = {(r.pid, r.alive) for r in read_readers(name)[0]}
                    ok = reader.get()["v"] == 1 and {(os.getpid(), True),
                                                     (os.getppid(), True)} <= listed
                    os.write(write_end, b"ok" if ok else b"no")
                finally:
                    os._exit(0)
            os.close(write_end)
            assert os.read(read_end, 2) == b"ok"
            os.close(read_end)
            os.waitpid(pid, 0)
        finally:
            reader.close()
        publisher.unlink()
