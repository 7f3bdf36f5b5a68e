"""What a member of the publisher's group can and cannot do (docs/faults.md, the threat model).

The publisher runs as root with ``group=65534``; the member is a real
process of the user ``nobody`` (``tests.procs.group_member``), which drops to
that user after starting. Skipped unless the tests run as root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import shmconf
from shmconf import status
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
        assert member.ask("read")["generation"] == 2
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
