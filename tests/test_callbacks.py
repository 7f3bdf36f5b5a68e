"""Change callbacks: once per relevant change, never for unrelated paths, across threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shmconf
from shmconf.integrations._worker import attach_worker, detach_worker
from tests.apps.servers import nothing_left, write_doc_files
from tests.helpers import REPO, wait_until


def cfg(host: str = "db1", port: int = 5432, debug: bool = False, **extra: Any) -> dict[str, Any]:
    return {"database": {"host": host, "port": port}, "debug": debug, **extra}


@pytest.fixture
def publisher(name: str) -> Iterator[shmconf.Publisher]:
    pub = shmconf.Publisher(name)
    pub.publish(cfg())
    try:
        yield pub
    finally:
        pub.unlink()


@pytest.fixture
def reader(name: str, publisher: shmconf.Publisher) -> Iterator[shmconf.Reader[Any]]:
    r = shmconf.attach(name)
    try:
        yield r
    finally:
        r.close()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.threads: list[str] = []

    def __call__(self, old: Any, new: Any) -> None:
        self.calls.append((plain(old), plain(new)))
        self.threads.append(threading.current_thread().name)


def plain(value: Any) -> Any:
    from shmconf.integrations.debug import plain as to_plain

    return to_plain(value)


def test_once_per_relevant_change_and_never_for_unrelated_paths(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any]
) -> None:
    host, database, port, everything = Recorder(), Recorder(), Recorder(), Recorder()
    reader.on_change(host, path="database.host")
    reader.on_change(database, path="database")
    reader.on_change(port, path="database.port")
    reader.on_change(everything)

    steps = [cfg(debug=True), cfg("db2", debug=True), cfg("db2", 6432, debug=True),
             cfg("db2", 6432, debug=True, extra=1)]
    for step in steps:
        publisher.publish(step)
        for _ in range(3):  # repeated reads of one generation call nothing again
            reader.get()

    assert host.calls == [("db1", "db2")]
    assert port.calls == [(5432, 6432)]
    assert database.calls == [
        ({"host": "db1", "port": 5432}, {"host": "db2", "port": 5432}),
        ({"host": "db2", "port": 5432}, {"host": "db2", "port": 6432}),
    ]
    assert len(everything.calls) == 4


def test_skipped_generations_compare_what_was_held_with_what_is_adopted(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any]
) -> None:
    host = Recorder()
    reader.on_change(host, path="database.host")
    for step in ("db2", "db3", "db4"):  # three publishes, no read in between
        publisher.publish(cfg(step))
    reader.get()
    assert host.calls == [("db1", "db4")]

    publisher.publish(cfg("db5"))
    publisher.publish(cfg("db4"))  # changed and changed back before the next read
    reader.get()
    assert host.calls == [("db1", "db4")]
    assert reader.generation == 6


def test_path_that_appears_or_disappears_passes_none(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any]
) -> None:
    cache = Recorder()
    reader.on_change(cache, path="cache.url")
    publisher.publish(cfg(cache={"url": "redis://a"}))
    reader.get()
    publisher.publish(cfg())
    reader.get()
    assert cache.calls == [(None, "redis://a"), ("redis://a", None)]


def test_removed_callback_is_not_called(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any]
) -> None:
    host = Recorder()
    reader.on_change(host, path="database.host")
    reader.remove_callback(host)
    publisher.publish(cfg("db2"))
    reader.get()
    assert host.calls == []


def test_many_reading_threads_call_it_once_per_adopted_generation(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any]
) -> None:
    seen = Recorder()
    reader.on_change(seen, path="n")
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                reader.get()
                time.sleep(0.0001)  # a request's worth of other work
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, name=f"reader-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 51):
            publisher.publish(cfg(n=n))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    reader.get()
    assert not errors
    # A chain from nothing to the last value: every adopted change exactly once,
    # each call starting where the previous one ended.
    assert seen.calls[0][0] is None
    assert seen.calls[-1][1] == 50
    for (_, new), (old, _) in zip(seen.calls, seen.calls[1:], strict=False):
        assert new == old
    values = [new for _, new in seen.calls]
    assert values == sorted(set(values))
    assert set(seen.threads) <= {t.name for t in threads} | {threading.current_thread().name}


def test_callback_runs_after_the_cache_holds_the_new_version_and_errors_are_logged(
    publisher: shmconf.Publisher, reader: shmconf.Reader[Any], caplog: pytest.LogCaptureFixture
) -> None:
    inside: list[str] = []

    def failing(old: Any, new: Any) -> None:
        inside.append(reader.get()["database"]["host"])
        raise RuntimeError("reconnect failed")

    good = Recorder()
    reader.on_change(failing, path="database")
    reader.on_change(good, path="database")
    publisher.publish(cfg("db2"))
    with caplog.at_level(logging.ERROR, logger="shmconf.reader"):
        assert reader.get()["database"]["host"] == "db2"
    assert inside == ["db2"]
    assert good.calls == [({"host": "db1", "port": 5432}, {"host": "db2", "port": 5432})]
    assert "reconnect failed" in caplog.text


def test_idle_adoption_runs_callbacks_in_an_idle_worker(
    name: str, publisher: shmconf.Publisher
) -> None:
    host = Recorder()
    reader = attach_worker(name, on_attach=lambda r: r.on_change(host, path="database.host"))
    try:
        assert reader.idle_adoption  # the integrations' default
        publisher.publish(cfg("db2"))
        # Nobody calls get(): the adoption thread, woken by the publish, adopts it.
        wait_until(lambda: host.calls == [("db1", "db2")], 5, 0.005, "the adoption thread")
        assert host.threads == ["shmconf-adopt-" + name]
        assert shmconf.current_reader() is reader
    finally:
        detach_worker(name)
    assert reader.closed


def test_refresh_interval_is_deprecated_and_means_idle_adoption(
    name: str, publisher: shmconf.Publisher
) -> None:
    with pytest.warns(DeprecationWarning, match="idle_adoption=True"):
        reader = attach_worker(name, idle_adoption=False, refresh_interval_s=0.01)
    try:
        assert reader.idle_adoption
    finally:
        detach_worker(name)


def test_documented_reconnect_pattern_runs_as_written(tmp_path: Path, name: str) -> None:
    write_doc_files(REPO / "docs" / "callbacks.md", tmp_path)
    result = subprocess.run(
        [sys.executable, "reconnect.py"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, "CONFIG_NAME": name},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "connected to db1:5432\nconnected to db2:5432\nclosed db1:5432\nclosed db2:5432\n"
    )
    assert nothing_left(name)
