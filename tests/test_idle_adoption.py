"""Idle adoption: a reader's thread sleeps on the wake word and adopts each publish.

Real publishers, real forked and spawned processes; nobody calls get() where
the test says so.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time

import pytest

import shmconf
from shmconf import status
from tests.helpers import REPO, wait_until


def adoption_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"shmconf-adopt-{name}"]


def test_a_publish_is_adopted_without_any_read(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name, idle_adoption=True)
        try:
            seen: list[tuple[object, str]] = []
            reader.on_change(lambda old, new: seen.append((new, threading.current_thread().name)),
                             path="v")
            publisher.publish({"v": 2})
            wait_until(lambda: seen == [(2, f"shmconf-adopt-{name}")], 5, 0.001,
                       "the adoption thread")
            assert reader.generation == 2  # adopted: get() is the fast path now
            readers = status.collect(name, reclaim=False).readers
            assert [(r.pid, r.generation, r.idle_adoption) for r in readers] == [
                (os.getpid(), 2, True)]
        finally:
            reader.close()
        assert adoption_threads(name) == []  # close() stopped and joined it
        publisher.unlink()


def test_stop_and_start_again(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        with shmconf.attach(name) as reader:
            assert not reader.idle_adoption
            reader.start_idle_adoption()
            reader.start_idle_adoption()  # idempotent
            assert len(adoption_threads(name)) == 1
            reader.stop_idle_adoption()
            assert adoption_threads(name) == []
            assert not status.collect(name, reclaim=False).readers[0].idle_adoption
            publisher.publish({"v": 2})
            assert reader.generation == 1  # no thread: adopted on the next read
            assert reader.get()["v"] == 2
        publisher.unlink()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_adopts_on_its_own_thread(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        reader = shmconf.attach(name, idle_adoption=True)
        try:
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: wait for the publish, never read, report
                try:
                    os.read(to_child_r, 1)
                    wait_until(lambda: reader.generation == 2, 5, 0.001, "child adoption")
                    ok = len(adoption_threads(name)) == 1 and reader.get()["v"] == 2
                    os.write(from_child_w, b"ok" if ok else b"no")
                finally:
                    os._exit(0)
            os.close(from_child_w)
            wait_until(lambda: len(status.collect(name, reclaim=False).readers) == 2, 5, 0.005,
                       "the child listed")
            publisher.publish({"v": 2})
            os.write(to_child_w, b"x")
            assert os.read(from_child_r, 2) == b"ok"
            os.waitpid(pid, 0)
            for fd in (to_child_r, to_child_w, from_child_r):
                os.close(fd)
            wait_until(lambda: reader.generation == 2, 5, 0.001, "parent adoption")
        finally:
            reader.close()
        publisher.unlink()


def test_an_unlinked_and_republished_name_is_followed_without_a_read(name: str) -> None:
    publisher = shmconf.Publisher(name)
    publisher.publish({"v": 1})
    reader = shmconf.attach(name, idle_adoption=True)
    try:
        publisher.unlink()
        publisher.close()
        with shmconf.Publisher(name) as again:
            generation = again.publish({"v": 2})
            wait_until(lambda: reader.generation == generation, 5, 0.005, "the new anchor")
            again.unlink()
    finally:
        reader.close()


def test_status_tells_idle_adopting_readers_from_those_behind(name: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shmconf", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=30, check=False)

    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        idle = shmconf.attach(name, idle_adoption=True)
        lazy = shmconf.attach(name, make_current=False)
        try:
            publisher.publish({"v": 2})
            wait_until(lambda: idle.generation == 2, 5, 0.001, "the idle reader")
            shown = run("status", name).stdout
            assert "until its next read (no idle adoption)" in shown
            assert "when idle" in shown
            waited = run("status", name, "--wait-for", "2", "--timeout", "0.3")
            assert waited.returncode == 1
            assert "attach with idle_adoption=True" in waited.stderr
            # The advice, followed literally.
            lazy.start_idle_adoption()
            waited = run("status", name, "--wait-for", "2", "--timeout", "5")
            assert waited.returncode == 0, waited.stderr
        finally:
            lazy.close()
            idle.close()
        publisher.unlink()


def test_a_refused_generation_is_shown_as_refused(name: str) -> None:
    from pydantic import BaseModel

    class Strict(BaseModel):
        v: int

    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        with shmconf.attach(name, Strict, idle_adoption=True) as reader:
            publisher.publish({"v": "not a number"})
            wait_until(lambda: status.collect(name, reclaim=False).readers[0].refused == 2,
                       5, 0.005, "the refusal recorded")
            assert reader.generation == 1
            shown = subprocess.run([sys.executable, "-m", "shmconf", "status", name],
                                   capture_output=True, text=True, timeout=30,
                                   check=True).stdout
            assert "refused generation 2" in shown
            # Waiting cannot help a reader that refused it: --wait-for says so at once.
            started = time.monotonic()
            waited = subprocess.run(
                [sys.executable, "-m", "shmconf", "status", name, "--wait-for", "2",
                 "--timeout", "60"], capture_output=True, text=True, timeout=60, check=False)
            assert waited.returncode == 1
            assert time.monotonic() - started < 30
            assert "timed out" not in waited.stderr
            assert "does not fit that worker's model" in waited.stderr
        publisher.unlink()


def test_more_readers_than_the_old_fixed_table_are_all_listed(name: str) -> None:
    # Layout 2's table had 1,008 entries and dropped the rest silently; the
    # table object grows. Each Reader holds its own entry, so one process
    # can stand for many.
    count = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * count:
        pytest.skip(f"needs {4 * count} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * count), hard))
    readers: list[shmconf.Reader[object]] = []
    try:
        with shmconf.Publisher(name) as publisher:
            publisher.publish({"v": 1})
            readers = [shmconf.attach(name, make_current=False) for _ in range(count)]
            found = status.collect(name, reclaim=False)
            assert len(found.readers) == count
            assert all(r.alive and r.generation == 1 for r in found.readers)
            assert not found.readers_table_full
            for reader in readers:
                reader.close()
            readers = []
            assert status.collect(name, reclaim=False).readers == []
            publisher.unlink()
    finally:
        for reader in readers:
            reader.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_never_waits_for_the_backstop(name: str) -> None:
    # A wake sent between the thread's last look at its stop flag and its
    # sleep would be lost; close() wakes it until it has gone.
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        slowest = 0.0
        for _ in range(30):
            reader = shmconf.attach(name, idle_adoption=True)
            started = time.monotonic()
            reader.close()
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0
        assert adoption_threads(name) == []
        publisher.unlink()


def test_the_adoption_thread_parses_a_large_config_in_pieces(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shmconf import frozen

    calls: list[str] = []
    real = frozen.loads_in_sections

    def spy(payload: bytes, sections: list[list[object]], pause: object,
            previous: object = None) -> object:
        calls.append(threading.current_thread().name)
        return real(payload, sections, pause, previous)  # type: ignore[arg-type]

    monkeypatch.setattr(frozen, "loads_in_sections", spy)
    big = [{"name": f"upstream-{i}", "port": i} for i in range(20_000)]
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1, "big": big})
        lazy = shmconf.attach(name, make_current=False)
        with shmconf.attach(name, idle_adoption=True) as idle:
            publisher.publish({"v": 2, "big": big})
            wait_until(lambda: idle.generation == 2, 10, 0.005, "the large config adopted")
            assert idle.get() == {"v": 2, "big": big}
            assert calls == [f"shmconf-adopt-{name}"]
            # A reader without the thread adopts on its read, in one go.
            assert lazy.get()["v"] == 2
            assert calls == [f"shmconf-adopt-{name}"]
        lazy.close()
        publisher.unlink()
