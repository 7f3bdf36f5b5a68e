"""Rollouts under attack and accident: what must still hold.

A group member who truncates the reader table or plants fake readers, a
candidate that kills the workers that adopt it, a canary's forked child, a
health check that raises ``SystemExit`` or never returns, damaged anchor
words, a policy that cannot travel. Real processes; the group member is a
real second user (``nobody``), so those tests need root.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import shmconf
from shmconf import Publisher, Reader, Rollout
from shmconf.protocol import layout as L
from shmconf.rollout import LOST_CANARIES_LIMIT
from tests.helpers import python, wait_until

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second user needs root")


@pytest.fixture
def workers(name: str) -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes (``tests.procs.canary_reader``); killed afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.communicate()


def start_workers(name: str, started: list[subprocess.Popen[str]], count: int,
                  *args: str) -> None:
    for _ in range(count):
        proc = python("-m", "tests.procs.canary_reader", name, *args, stdin=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready ")
        started.append(proc)


def serving(publisher: Publisher, started: list[subprocess.Popen[str]], count: int,
            *args: str) -> None:
    """Publish the stable version, start the publisher and ``count`` workers, wait for them."""
    publisher.publish({"v": 1})
    publisher.start()
    start_workers(publisher.name, started, count, *args)
    listed(publisher, count)


def listed(publisher: Publisher, count: int) -> None:
    """Wait until ``count`` live readers adopt while idle (the ones that can be canaries)."""
    wait_until(lambda: len([e for e in publisher.writer.readers()
                            if e.alive and e.idle_adoption]) == count, 20)


def outcome(publisher: Publisher, before: object, timeout: float = 15) -> dict[str, Any]:
    wait_until(lambda: publisher.last_rollout is not before, timeout, 0.02, "the rollout's end")
    assert publisher.last_rollout is not None
    return publisher.last_rollout


@needs_root
def test_a_group_member_truncating_the_table_cannot_get_a_candidate_promoted(
        name: str, workers: list[subprocess.Popen[str]]) -> None:
    publisher = Publisher(name, group=NOBODY,
                          rollout=Rollout(canary=1, bake_s=600, min_requests=10_000))
    try:
        serving(publisher, workers, 3)
        publisher.publish({"v": 2})
        wait_until(lambda: publisher.rollout is not None
                   and publisher.rollout.canary_health.workers == 1, 10)
        table = f"/dev/shm/{L.table_shm_name(name)}"
        subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "sh", "-c", f"for i in $(seq 100); do truncate -s 0 {table}; done"],
                       check=True)
        # Every reader writes its entry again within 0.25 s; the canary is still
        # the one it was, and nothing was promoted.
        run = publisher.rollout
        assert run is not None
        canaries = dict(run.canaries)
        listed(publisher, 3)
        wait_until(lambda: publisher.rollout is not None
                   and publisher.rollout.canary_health.workers == 1, 10)
        assert publisher.rollout is run
        assert run.canaries == canaries
        assert publisher.generation == 1
    finally:
        publisher.stop()
        publisher.unlink()


def test_a_candidate_that_kills_its_canaries_is_rolled_back(
        name: str, workers: list[subprocess.Popen[str]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600, min_requests=10_000))
    try:
        serving(publisher, workers, 3, "--exit-on", "crash")
        before = publisher.last_rollout
        publisher.publish({"v": 2, "crash": True})  # whoever adopts it exits
        deaths = 0

        def ended_while_respawning() -> bool:
            nonlocal deaths
            for index, proc in enumerate(workers):
                if proc.poll() is not None:  # as a master starts a new worker
                    deaths += 1
                    workers.pop(index).communicate()
                    start_workers(name, workers, 1, "--exit-on", "crash")
                    break
            return publisher.last_rollout is not before

        wait_until(ended_while_respawning, 30, 0.02, "the rollout's end")
        ended = outcome(publisher, before)
        assert ended["outcome"] == "rolled back", ended
        assert "canaries exited within 10 s of becoming canaries" in ended["reason"]
        assert deaths <= LOST_CANARIES_LIMIT + 1  # one more may be listed as the last dies
    finally:
        publisher.stop()
        publisher.unlink()


def _report(reader: Reader[Any], answers: Any) -> None:
    answers.put((reader.get()["v"], reader.canary))


def test_a_canarys_forked_child_serves_the_stable_version(name: str) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    reader = None
    try:
        publisher.publish({"v": 1})
        publisher.start()
        reader = shmconf.attach(name, idle_adoption=True)
        listed(publisher, 1)
        publisher.publish({"v": 2})
        wait_until(lambda: reader is not None and reader.canary and reader.get()["v"] == 2)
        context = multiprocessing.get_context("fork")
        answers = context.Queue()
        child = context.Process(target=_report, args=(reader, answers))
        child.start()
        assert answers.get(timeout=10) == (1, False)  # the publisher never made it one
        child.join(10)
        assert child.exitcode == 0
    finally:
        if reader is not None:
            reader.close()
        publisher.stop()
        publisher.unlink()


def test_a_health_check_that_raises_systemexit_fails_the_candidate(name: str) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600, min_requests=0))
    reader = None
    try:
        publisher.publish({"v": 1})
        publisher.start()
        reader = shmconf.attach(name, idle_adoption=True)

        def check(config: Any) -> bool:
            raise SystemExit("a timeout library's exception")

        reader.add_health_check(check)
        listed(publisher, 1)
        before = publisher.last_rollout
        publisher.publish({"v": 2})
        assert outcome(publisher, before)["outcome"] == "rolled back"
        wait_until(lambda: reader is not None and reader.get()["v"] == 1 and not reader.canary)
        assert reader.idle_adoption
        assert reader._adopter is not None
        assert reader._adopter._thread.is_alive()  # the adoption thread lives on
    finally:
        if reader is not None:
            reader.close()
        publisher.stop()
        publisher.unlink()


@pytest.mark.parametrize("replaced", [False, True], ids=["candidate", "replaced candidate"])
def test_a_health_check_that_never_returns_fails_after_its_deadline(
        name: str, monkeypatch: pytest.MonkeyPatch, replaced: bool) -> None:
    from shmconf import reader as reader_module

    monkeypatch.setattr(reader_module, "HEALTH_CHECK_TIMEOUT_S", 0.5)
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600, min_requests=0))
    reader = None
    release = threading.Event()
    try:
        publisher.publish({"v": 1})
        publisher.start()
        reader = shmconf.attach(name, idle_adoption=True)
        reader.add_health_check(lambda config: release.wait(60))
        listed(publisher, 1)
        before = publisher.last_rollout
        publisher.publish({"v": 2})
        if replaced:
            wait_until(lambda: reader is not None and reader._checking, 10)
            publisher.publish({"v": 3})  # replaces the candidate while its check hangs
        ended = outcome(publisher, before)
        while ended["outcome"] == "replaced":  # the first one ended as replaced
            before = publisher.last_rollout
            ended = outcome(publisher, before)
        assert ended["outcome"] == "rolled back", ended
        assert "health check" in ended["reason"]
    finally:
        release.set()
        if reader is not None:
            reader.close()
        publisher.stop()
        publisher.unlink()


@needs_root
def test_fake_readers_a_group_member_plants_are_never_made_canaries(
        name: str, workers: list[subprocess.Popen[str]]) -> None:
    publisher = Publisher(name, group=NOBODY,
                          rollout=Rollout(canary=1, bake_s=1, min_requests=50))
    member = None
    try:
        publisher.publish({"v": 1})
        publisher.start()
        start_workers(name, workers, 2)
        member = python("-m", "tests.procs.fake_canaries", name, "100", "30")
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "ready"
        listed(publisher, 102)
        publisher.publish({"v": 2})
        run = publisher.rollout
        assert run is not None
        wait_until(lambda: run.canary_health.workers == 1, 10)
        assert set(run.canaries.values()) <= {proc.pid for proc in workers}
        # The real canary serves no request: the step waits for them.
        wait_until(lambda: "waiting for requests" in run.waiting, 10)
        assert publisher.rollout is run
    finally:
        if member is not None:
            member.kill()
            out, _ = member.communicate()
            assert "was made a canary" not in out
        publisher.stop()
        publisher.unlink()


def test_a_publisher_killed_between_a_promotions_two_stores_finishes_it(name: str) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    publisher.publish({"v": 1})
    reader = shmconf.attach(name, idle_adoption=True)
    try:
        candidate = publisher.publish({"v": 2})
        wait_until(lambda: reader.generation == candidate)
        publisher.stop()
        # The first store of a promotion, and no second: then the process died.
        publisher.writer.anchor.words[L.A_GENERATION] = candidate
        publisher.close()
        successor = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
        try:
            assert successor.generation == candidate  # nothing rolled back
            assert successor.writer.rollout == 0
            assert successor.last_rollout is not None
            assert successor.last_rollout["outcome"] == "promoted"
            version = successor.history.get(candidate)
            assert version is not None
            assert version.rollout == "promoted"
        finally:
            successor.unlink()
    finally:
        reader.close()


@pytest.mark.parametrize("canary_generation", [0, 1 << 62])
def test_an_implausible_canary_word_is_not_taken_for_a_rollout(
        name: str, canary_generation: int) -> None:
    publisher = Publisher(name)
    publisher.publish({"v": 1})
    publisher.publish({"v": 2})
    publisher.writer.anchor.words[L.A_CANARY_GENERATION] = canary_generation
    publisher.close()
    successor = Publisher(name)
    try:
        assert successor.generation == 2  # neither rolled back nor jumped
        assert successor.writer.candidate_generation == 2
        assert successor.last_rollout is None
        version = successor.history.get(1)
        assert version is not None
        assert version.rollout == ""
    finally:
        successor.unlink()


def test_a_policy_that_cannot_travel_to_the_publisher_process_is_refused_at_once() -> None:
    from shmconf.integrations.process import _portable_options

    with pytest.raises(ValueError, match="finite"):
        _portable_options({"rollout": {"bake_s": float("inf")}})


def test_a_rollout_goes_on_when_the_reader_table_is_made_again(
        name: str, workers: list[subprocess.Popen[str]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=1, min_requests=0))
    try:
        serving(publisher, workers, 3)
        before = publisher.last_rollout
        publisher.publish({"v": 2})
        wait_until(lambda: publisher.rollout is not None
                   and publisher.rollout.canary_health.workers == 1, 10)
        # The owner's tooling removes the table; the publisher makes it again at
        # its next heartbeat and every reader takes a new entry there.
        os.unlink(f"/dev/shm/{L.table_shm_name(name)}")
        ended = outcome(publisher, before, 20)
        assert ended["outcome"] == "promoted", ended  # neither wedged nor rolled back
    finally:
        publisher.stop()
        publisher.unlink()


def test_a_canary_recycled_long_after_it_became_one_is_no_verdict(
        name: str, workers: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from shmconf import rollout

    monkeypatch.setattr(rollout, "LOST_WINDOW_S", 0.2)
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600, min_requests=0))
    try:
        serving(publisher, workers, 3)
        publisher.publish({"v": 2})
        run = publisher.rollout
        assert run is not None
        for _ in range(3):  # as gunicorn's max_requests recycles a worker now and then
            wait_until(lambda: run.canary_health.workers == 1, 10)
            # A canary for longer than the window (0.2 s here, 10 s by default).
            wait_until(lambda: min(run._listed_at.values(), default=0) < time.monotonic() - 0.3)
            (canary,) = [p for p in workers if p.pid in run.canaries.values()]
            canary.kill()
            canary.communicate()
            workers.remove(canary)
            start_workers(name, workers, 1)
            gone = canary.pid
            wait_until(lambda: gone not in run.canaries.values(), 10)  # noqa: B023
        assert publisher.rollout is run  # still running, no rollback
        assert run.lost == 0
    finally:
        publisher.stop()
        publisher.unlink()
