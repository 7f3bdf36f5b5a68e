"""Reader behaviour in one process: cache, models, pinning, callbacks, close."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import pytest
from pydantic import BaseModel, ConfigDict

import shmconf


class Database(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str
    port: int = 5432


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)
    database: Database
    debug: bool = False


@pytest.fixture
def publisher(name: str):  # type: ignore[no-untyped-def]
    pub = shmconf.Publisher(name, model=Settings)
    pub.publish({"database": {"host": "db1"}})
    yield pub
    pub.unlink()


def test_get_returns_the_same_object_until_a_new_generation(name: str, publisher) -> None:
    reader = shmconf.attach(name, model=Settings)
    try:
        first = reader.get()
        assert isinstance(first, Settings)
        assert reader.get() is first
        assert reader.generation == 1
        publisher.publish({"database": {"host": "db2"}})
        second = reader.get()
        assert second is not first
        assert second.database.host == "db2"
        assert reader.generation == 2
        assert reader.meta["changed"] == ["database.host"]
        assert reader.published_at > 0
    finally:
        reader.close()


def test_without_model_snapshot_is_read_only(name: str, publisher) -> None:
    reader = shmconf.attach(name)
    try:
        cfg = reader.get()
        assert isinstance(cfg, Mapping)
        assert cfg["database"]["host"] == "db1"
        with pytest.raises(TypeError):
            cfg["database"]["host"] = "evil"  # type: ignore[index]
    finally:
        reader.close()


def test_pinned_keeps_one_snapshot_for_the_block(name: str, publisher) -> None:
    reader = shmconf.attach(name, model=Settings)
    shmconf.set_reader(reader)
    try:
        with reader.pinned() as cfg:
            publisher.publish({"database": {"host": "db2"}})
            assert shmconf.current() is cfg
            assert cfg.database.host == "db1"
        assert shmconf.current().database.host == "db2"
    finally:
        shmconf.set_reader(None)
        reader.close()


def test_current_without_integration_says_what_to_do() -> None:
    with pytest.raises(shmconf.NotAttachedError, match="set_reader"):
        shmconf.current()


def test_on_change_fires_once_per_change_of_its_path(name: str, publisher) -> None:
    reader = shmconf.attach(name, model=Settings)
    calls: list[tuple[object, object]] = []
    everything: list[int] = []
    reader.on_change(lambda old, new: calls.append((old, new)), path="database.host")
    reader.on_change(lambda old, new: everything.append(1))
    try:
        publisher.publish({"database": {"host": "db1"}, "debug": True})  # unrelated path
        reader.get()
        assert calls == []
        publisher.publish({"database": {"host": "db2"}, "debug": True})
        reader.get()
        reader.get()
        assert calls == [("db1", "db2")]
        assert len(everything) == 2
    finally:
        reader.close()


def test_callback_sees_new_snapshot_and_its_errors_do_not_break_reads(
    name: str, publisher, caplog: pytest.LogCaptureFixture
) -> None:
    reader = shmconf.attach(name, model=Settings)
    seen = []

    def bad(old: object, new: object) -> None:
        seen.append(reader.get().database.host)
        raise RuntimeError("boom")

    reader.on_change(bad, path="database")
    try:
        publisher.publish({"database": {"host": "db2"}})
        with caplog.at_level(logging.ERROR, logger="shmconf.reader"):
            assert reader.get().database.host == "db2"
        assert seen == ["db2"]
        assert "change callback" in caplog.text
    finally:
        reader.close()


def test_model_mismatch_in_worker_keeps_last_good(name: str, publisher) -> None:
    class Strict(BaseModel):
        database: Database
        required_new_field: int

    with pytest.raises(shmconf.ConfigValidationError, match="required_new_field"):
        shmconf.attach(name, model=Strict, timeout=1)


def test_reader_table_records_pid_and_generation(name: str, publisher) -> None:
    import os

    from shmconf.status import read_readers

    def listed() -> list[tuple[int, int, bool]]:
        return [(r.pid, r.generation, r.alive) for r in read_readers(name)[0]]

    reader = shmconf.attach(name)
    try:
        assert listed() == [(os.getpid(), 1, True)]
        publisher.publish({"database": {"host": "db2"}})
        reader.get()
        assert listed() == [(os.getpid(), 2, True)]
    finally:
        reader.close()
    assert listed() == []


def test_reader_table_liveness_is_the_entry_lock_not_the_pid(name: str, publisher) -> None:
    import os

    from shmconf.protocol import layout as L
    from shmconf.status import read_readers

    # An entry left by a process killed with SIGKILL, naming a pid that exists
    # now (pid 1: reused, as pids are): nobody holds its lock, so it is dead,
    # and free for the next reader to claim.
    block = publisher.writer._table
    block.pwrite(0, L.TABLE_ENTRY.pack(1, 0, 7, 0, 0, 0, 0, 0, 0))
    readers, _, _ = read_readers(name)
    assert [(r.pid, r.generation, r.alive) for r in readers] == [(1, 7, False)]
    reader = shmconf.attach(name, timeout=1)
    try:
        readers, _, _ = read_readers(name)
        assert [(r.pid, r.generation, r.alive) for r in readers] == [(os.getpid(), 1, True)]
    finally:
        reader.close()


def test_closed_reader_raises_and_leaves_segment(name: str, publisher) -> None:
    from shmconf.protocol.block import list_shm_names
    from shmconf.protocol.layout import anchor_shm_name

    reader = shmconf.attach(name)
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        reader.get()
    assert anchor_shm_name(name) in list_shm_names(name)


def test_threads_in_get_while_the_reader_closes_see_it_closed(name: str) -> None:
    import threading

    errors: list[BaseException] = []
    served: list[int] = []
    with shmconf.Publisher(name) as pub:
        pub.publish({"v": 0})
        reader = shmconf.attach(name, make_current=False)
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    served.append(reader.get()["v"])
                except BaseException as exc:  # every kind is checked below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for v in range(1, 30):  # each one sends the threads down the slow path
            pub.publish({"v": v})
        reader.close()
        for thread in threads:
            thread.join(timeout=30)
        stop.set()
        pub.unlink()
    assert served
    assert len(errors) == 4  # each thread ends on the closed reader
    assert all(isinstance(e, ValueError) and "closed" in str(e) for e in errors), errors


def test_close_from_inside_an_adoption_returns(name: str) -> None:
    import threading

    from pydantic import field_validator

    holder: dict[str, shmconf.Reader[object]] = {}

    class ClosesOnTwo(BaseModel):  # a validator runs while get() holds the adoption lock
        v: int

        @field_validator("v")
        @classmethod
        def close_on_two(cls, v: int) -> int:
            if v == 2:
                holder["reader"].close()
            return v

    with shmconf.Publisher(name) as pub:
        pub.publish({"v": 1})
        reader = holder["reader"] = shmconf.attach(name, model=ClosesOnTwo, make_current=False)
        pub.publish({"v": 2})
        done = threading.Event()
        threading.Thread(target=lambda: (reader.get(), done.set()), daemon=True).start()
        assert done.wait(10), "close() inside an adoption hung"
        with pytest.raises(ValueError, match="closed"):
            reader.get()
        pub.unlink()


def test_a_ctrl_c_as_get_takes_the_lock_leaves_it_free(name: str) -> None:
    import os
    import signal
    import threading
    import time

    with shmconf.Publisher(name) as pub:
        pub.publish({"v": 0})
        for attempt in range(1, 40):
            reader = shmconf.attach(name, make_current=False)
            pub.publish({"v": attempt})
            reader._lock.acquire()  # another thread adopting; get() waits for it

            def release_then_interrupt(reader: shmconf.Reader[object] = reader) -> None:
                time.sleep(0.002)
                reader._lock.release()
                os.kill(os.getpid(), signal.SIGINT)  # as the waiting get() takes the lock

            thread = threading.Thread(target=release_then_interrupt)
            thread.start()
            with contextlib.suppress(KeyboardInterrupt):
                reader.get()
                time.sleep(1)  # the signal lands here if not during get()
            thread.join()
            assert not reader._lock.locked(), f"attempt {attempt}: the lock was left held"
            reader.close()
        pub.unlink()


def test_unlinked_anchor_keeps_serving_then_follows_new_publisher(name: str) -> None:
    pub = shmconf.Publisher(name)
    pub.publish({"v": 1})
    reader = shmconf.attach(name)
    try:
        pub.unlink()
        assert reader.get()["v"] == 1
        with shmconf.Publisher(name) as pub2:
            generation = pub2.publish({"v": 2})
            assert generation > 1
            from tests.helpers import wait_until

            wait_until(lambda: reader.get()["v"] == 2, timeout=5, message="follow new anchor")
            pub2.unlink()
    finally:
        reader.close()
