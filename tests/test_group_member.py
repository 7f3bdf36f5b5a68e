"""What a member of the publisher's group can and cannot do (docs/faults.md, the threat model).

The publisher runs as root with ``group=65534``; the member is a real
process of the user ``nobody`` (``tests.procs.group_member``), which drops to
that user after starting. Skipped unless the tests run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import shmconf
from shmconf import status
from shmconf.protocol import layout as L
from shmconf.protocol.block import SHM_DIR
from tests.helpers import python, wait_until

NOBODY = 65534

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="a second user needs root"),
]


class Member:
    """The group member's process: one command, one JSON answer."""

    def __init__(self, name: str, *options: str) -> None:
        self.proc = python("-m", "tests.procs.group_member", name, *options,
                           stdin=subprocess.PIPE)
        assert self.ask_raw() == {"uid": NOBODY}

    def ask_raw(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else "no output"
        return dict(orjson.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.ask_raw()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def published(name: str) -> Iterator[shmconf.Publisher]:
    with shmconf.Publisher(name, group=NOBODY) as publisher:
        publisher.publish({"v": 1})
        yield publisher
        publisher.unlink()


@pytest.fixture
def member(name: str, published: shmconf.Publisher) -> Iterator[Member]:
    process = Member(name)
    try:
        yield process
    finally:
        process.close()


def test_a_member_reads_with_trusted_owner_and_is_listed(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    refused = member.ask("attach")
    assert "owned by uid 0" in refused["error"]
    assert "trusted_owner=0 (attach()" in refused["error"]
    # The advice, followed literally.
    attached = member.ask("attach trusted")
    assert attached["v"] == 1
    listed = {(r.pid, r.generation, r.alive) for r in status.collect(name).readers}
    assert (attached["pid"], 1, True) in listed
    published.publish({"v": 2})
    wait_until(lambda: member.ask("read")["held"] == 2, 5, 0.01,
               "the member's adoption thread")


def test_a_member_cannot_truncate_what_readers_map_or_copy(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    assert member.ask("write-anchor")["refused"] == "Permission denied"
    serial = status.collect(name).data_serial
    assert member.ask(f"write-data {serial}")["refused"] == "Permission denied"


def test_damage_to_the_reader_table_crashes_no_one(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    assert member.ask("attach trusted")["v"] == 1
    with shmconf.attach(name, idle_adoption=True) as own:
        assert member.ask("truncate-table") == {"done": True}
        assert member.ask("scribble-table") == {"done": True}
        assert own.get()["v"] == 1
        published.publish({"v": 2})
        wait_until(lambda: own.generation == 2, 5, 0.005, "the owner's reader")
        # The member adopts on its adoption thread; a read meanwhile serves what it has.
        wait_until(lambda: member.ask("read")["generation"] == 2, 5, 0.01, "the member")
        # Each adoption rewrote its entry over the garbage.
        readers = status.collect(name, reclaim=False).readers
        live = {r.pid for r in readers if r.alive and r.generation == 2}
        assert os.getpid() in live
        assert member.proc.pid in live


def test_entry_locks_held_by_a_member_never_block_a_reader(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    assert member.ask("lock-table 64") == {"held": 64}
    # Claiming tries each lock without waiting and takes one past those held.
    with shmconf.attach(name, timeout=2) as reader:
        assert reader.get()["v"] == 1
        mine = [r for r in status.collect(name, reclaim=False).readers if r.pid == os.getpid()]
        assert len(mine) == 1


def test_a_worker_that_drops_privileges_after_attaching_follows_a_grown_config(
        name: str, published: shmconf.Publisher) -> None:
    # gunicorn's user=/group=: the worker attaches as root, then runs as nobody.
    # The next data segment (the config outgrew its slot) is still the
    # publisher's, and readable through the group.
    member = Member(name, "--attach-first")
    try:
        big = "x" * 100_000
        generation = published.publish({"v": big})
        assert status.collect(name).data_serial == 2
        wait_until(lambda: member.ask("read")["held"] == generation, 5, 0.01,
                   "the grown config adopted after the drop")
    finally:
        member.close()


def _cpu_s(thread: threading.Thread) -> float:
    """CPU seconds of one thread of this process (/proc/self/task/TID/schedstat)."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat", encoding="ascii") as f:
        return int(f.read().split()[0]) / 1e9


def test_names_another_user_planted_stop_neither_a_restart_nor_growth(name: str) -> None:
    # The publisher runs as nobody; another user (root here) plants objects
    # under the name's names, which nobody cannot remove (/dev/shm is sticky).
    runtime = Path(tempfile.mkdtemp(prefix="shmconf-nobody-", dir="/tmp"))
    os.chown(runtime, NOBODY, NOBODY)
    publisher = Member(name)
    planted = [os.path.join(SHM_DIR, f"{L.SHM_PREFIX}{name}{suffix}")
               for suffix in ("@stale", "@2")]
    try:
        assert publisher.ask(f"publisher {runtime}")["generation"] == 1
        for path in planted:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL, 0o600))
        grown = publisher.ask("publish 100000")
        assert grown["generation"] == 2
        assert grown["serial"] == 3  # @2 is another user's: skipped
        with shmconf.attach(name, timeout=2, trusted_owner=NOBODY) as reader:
            assert len(reader.get()["v"]) == 100_000
        # A restart meets both planted names and goes on.
        assert publisher.ask(f"restart-publisher {runtime}")["generation"] == 3
    finally:
        publisher.close()
        for path in planted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_member_waking_readers_in_a_loop_costs_them_little(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    with shmconf.attach(name, idle_adoption=True) as reader:
        thread = next(t for t in threading.enumerate() if t.name == f"shmconf-adopt-{name}")
        before = _cpu_s(thread)
        answer = member.ask("wake-loop 2")
        assert answer["wakes"] > 10_000
        # Each wake with no news rests 50 ms: at most 20 wake-ups a second.
        assert _cpu_s(thread) - before < 0.1
        published.publish({"v": 2})
        wait_until(lambda: reader.generation == 2, 5, 0.005, "a real publish still adopted")


def test_entries_no_reader_could_have_written_are_ignored(
        name: str, published: shmconf.Publisher, member: Member) -> None:
    with shmconf.attach(name, idle_adoption=True):
        assert member.ask("fake-entries 50") == {"done": True}
        found = status.collect(name, reclaim=False)
        assert [r.pid for r in found.readers] == [os.getpid()]
        assert found.readers_ignored == 50
        waited = subprocess.run(
            [sys.executable, "-m", "shmconf", "status", name, "--wait-for", "1",
             "--timeout", "5"], capture_output=True, text=True, timeout=30, check=False)
        assert waited.returncode == 0, waited.stderr


def test_a_planted_reader_table_is_refused_with_advice_that_works(name: str) -> None:
    process = Member(name)
    try:
        assert process.ask("symlink-table") == {"done": True}
    finally:
        process.close()
    with pytest.raises(shmconf.SegmentError, match="another user may have planted it") as info:
        shmconf.Publisher(name)
    assert f"Remove /dev/shm/{L.SHM_PREFIX}{name}@readers" in str(info.value)
    # The advice, followed literally (we are root).
    os.unlink(f"/dev/shm/{L.SHM_PREFIX}{name}@readers")
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})
        publisher.unlink()
