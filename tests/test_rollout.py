"""Rollouts at the publisher and protocol level: candidates, canaries, promote, roll back.

Readers here are in this process (each has its own reader-table entry, so the
publisher can pick any of them as a canary) or, for the torn-read check, in
processes of their own. The real-server tests are in test_rollout_gunicorn.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import shmconf
from shmconf import Publisher, Reader, Rollout
from shmconf.protocol import layout as L
from shmconf.protocol.table import ReaderEntry
from shmconf.rollout import RolloutRun, workers_for
from tests.checked import config
from tests.helpers import python, wait_until

FAST = Rollout(canary=1, bake_s=0.3, min_requests=0)


@pytest.fixture
def readers(name: str) -> Iterator[list[Reader[Any]]]:
    """Reader objects opened by a test; closed afterwards."""
    opened: list[Reader[Any]] = []
    yield opened
    for reader in opened:
        reader.close()


def attach(name: str, opened: list[Reader[Any]], count: int = 3, **kwargs: Any) -> None:
    for _ in range(count):
        opened.append(shmconf.attach(name, idle_adoption=True, **kwargs))


def drive(publisher: Publisher, done: Callable[[], object], timeout: float = 10.0) -> None:
    """Judge the rollout as the service does (every 0.1 s) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"rollout still {publisher.rollout}"
        publisher.rollout_tick()
        time.sleep(0.02)


def canaries(opened: list[Reader[Any]]) -> list[Reader[Any]]:
    return [r for r in opened if r.canary]


def start_candidate(publisher: Publisher, opened: list[Reader[Any]], data: dict[str, Any],
                    expected_canaries: int = 1) -> int:
    """Publish ``data`` as a candidate and wait until its canaries hold it."""
    candidate = publisher.publish(data)
    assert publisher.rollout is not None
    assert publisher.rollout.candidate == candidate
    drive(publisher, lambda: len([r for r in canaries(opened)
                                  if r.generation == candidate]) == expected_canaries)
    return candidate


def test_a_candidate_reaches_its_canary_only_until_it_is_promoted(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=FAST)
    try:
        assert publisher.publish({"v": 1}) == 1  # the first publish goes to everyone
        assert publisher.rollout is None
        attach(name, readers)
        candidate = start_candidate(publisher, readers, {"v": 2})
        assert publisher.generation == 1  # the stable generation
        (canary,) = canaries(readers)
        assert canary.get()["v"] == 2
        assert all(r.get()["v"] == 1 and r.generation == 1 for r in readers if r is not canary)
        drive(publisher, lambda: publisher.rollout is None)
        assert publisher.last_rollout is not None
        assert publisher.last_rollout["outcome"] == "promoted"
        assert publisher.generation == candidate
        wait_until(lambda: all(r.generation == candidate for r in readers))
        assert all(r.get()["v"] == 2 for r in readers)
        version = publisher.history.get(candidate)
        assert version is not None
        assert version.rollout == "promoted"
    finally:
        publisher.unlink()


def test_failing_canaries_are_rolled_back_before_the_bake_ends_and_no_one_else_saw_it(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=60, min_requests=5))
    seen_by_others: list[Any] = []
    try:
        publisher.publish({"v": 1})
        attach(name, readers)
        candidate = start_candidate(publisher, readers, {"v": 2})
        (canary,) = canaries(readers)
        for reader in readers:
            if reader is not canary:
                reader.on_change(lambda old, new: seen_by_others.append(new), "v")
            for _ in range(10):
                reader.count_request(failed=reader is canary)
        drive(publisher, lambda: publisher.rollout is None)  # long before the 60 s bake
        last = publisher.last_rollout
        assert last is not None
        assert last["outcome"] == "rolled back"
        assert "failed 10 of 10 requests" in last["reason"]
        back = last["generation"]
        assert back > candidate
        assert publisher.generation == back
        wait_until(lambda: all(r.generation == back for r in readers))
        assert all(r.get()["v"] == 1 for r in readers)
        assert seen_by_others == []  # the same content again: no change for them
        version = publisher.history.get(candidate)
        assert version is not None
        assert version.rollout.startswith("rolled back: the canaries")
        rollback = publisher.history.get(back)
        assert rollback is not None
        assert rollback.rollout.startswith(f"rollback of {candidate}")
        # `shmconf rollback` with no target never goes back to the bad candidate.
        assert publisher.history.before(back, rollback.digest) is None
    finally:
        publisher.unlink()


def test_a_failed_health_check_in_a_canary_rolls_back_at_once(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=60, min_requests=100))
    try:
        publisher.publish({"db": "good"})
        attach(name, readers, 2)
        for reader in readers:
            reader.add_health_check(lambda cfg: cfg["db"] == "good")
        publisher.publish({"db": "unreachable"})
        drive(publisher, lambda: publisher.rollout is None)
        last = publisher.last_rollout
        assert last is not None
        assert last["outcome"] == "rolled back"
        assert "health check or change callback failed" in last["reason"]
        wait_until(lambda: all(r.get()["db"] == "good" and r.generation == publisher.generation
                               for r in readers))
    finally:
        publisher.unlink()


def test_a_change_callback_that_raises_in_a_canary_rolls_back(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=60, min_requests=100))

    def reconnect(old: Any, new: Any) -> None:
        raise ConnectionError(f"cannot reach {new}")

    try:
        publisher.publish({"db": "a"})
        attach(name, readers, 2)
        for reader in readers:
            reader.on_change(reconnect, "db")
        publisher.publish({"db": "b"})
        drive(publisher, lambda: publisher.rollout is None)
        assert publisher.last_rollout is not None
        assert publisher.last_rollout["outcome"] == "rolled back"
    finally:
        publisher.unlink()


def test_a_canary_whose_model_refuses_the_candidate_rolls_it_back(
        name: str, readers: list[Reader[Any]]) -> None:
    from tests.models import Strict

    publisher = Publisher(name, rollout=Rollout(canary=2, bake_s=60, min_requests=100))
    try:
        publisher.publish({"port": 8080})
        attach(name, readers, 2, model=Strict)
        publisher.publish({"port": "eighty"})  # no model here; the workers' refuses it
        drive(publisher, lambda: publisher.rollout is None)
        assert publisher.last_rollout is not None
        assert "refused it" in publisher.last_rollout["reason"]
        wait_until(lambda: all(r.generation == publisher.generation for r in readers))
        assert all(r.get().port == 8080 for r in readers)
    finally:
        publisher.unlink()


def test_steps_add_canaries_before_everyone_gets_it(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, steps=("50%",), bake_s=0.3,
                                                min_requests=0))
    sizes: set[int] = set()
    try:
        publisher.publish({"v": 1})
        attach(name, readers, 4)
        candidate = publisher.publish({"v": 2})

        def done() -> bool:
            run = publisher.rollout
            if run is not None:
                sizes.add(len(run.canaries))
            return run is None

        drive(publisher, done)
        assert {1, 2} <= sizes
        assert max(sizes) == 2
        assert publisher.generation == candidate
    finally:
        publisher.unlink()


def test_a_newer_change_replaces_the_candidate_in_the_same_canary(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=60, min_requests=0))
    try:
        publisher.publish({"v": 1})
        attach(name, readers)
        first = start_candidate(publisher, readers, {"v": 2})
        (canary,) = canaries(readers)
        second = publisher.publish({"v": 3})
        # The candidate's slot again, never the stable one's: a number is skipped.
        assert second == first + 2
        assert second % 2 == first % 2
        wait_until(lambda: canary.generation == second)
        assert canary.canary
        assert canary.get()["v"] == 3
        assert all(r.generation == 1 for r in readers if r is not canary)
        assert publisher.writer.current() is not None
        assert orjson.loads(publisher.writer.current()[1]) == {"v": 1}  # type: ignore[index]
        replaced = publisher.history.get(first)
        assert replaced is not None
        assert replaced.rollout == f"replaced by candidate {second}"
    finally:
        publisher.unlink()


def test_the_sources_going_back_to_the_stable_version_abort_the_rollout(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=60, min_requests=0))
    try:
        publisher.publish({"v": 1})
        attach(name, readers, 2)
        candidate = start_candidate(publisher, readers, {"v": 2})
        back = publisher.publish({"v": 1})
        assert back > candidate
        assert publisher.rollout is None
        wait_until(lambda: all(r.generation == back for r in readers))
        assert all(r.get()["v"] == 1 for r in readers)
    finally:
        publisher.unlink()


def test_with_no_worker_to_canary_a_rollout_waits_for_one(name: str) -> None:
    publisher = Publisher(name, rollout=FAST)
    try:
        publisher.publish({"v": 1})
        with shmconf.attach(name) as plain:  # no idle adoption: it cannot be a canary
            candidate = publisher.publish({"v": 2})
            drive(publisher, lambda: "no worker can be a canary" in getattr(
                publisher.rollout, "waiting", ""))
            assert plain.get()["v"] == 1  # never promoted without a judge
            with shmconf.attach(name, idle_adoption=True) as worker:  # one comes
                drive(publisher, lambda: publisher.rollout is None)
                assert worker.get()["v"] == 2
            assert plain.get()["v"] == 2
            assert plain.generation == candidate
        version = publisher.history.get(candidate)
        assert version is not None
        assert version.rollout == "promoted"
    finally:
        publisher.unlink()


def test_a_person_promotes_or_aborts_mid_bake(name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    try:
        with pytest.raises(shmconf.ShmconfError, match="no rollout is running"):
            publisher.promote()
        publisher.publish({"v": 1})
        attach(name, readers, 2)
        candidate = start_candidate(publisher, readers, {"v": 2})
        assert publisher.promote() == candidate
        wait_until(lambda: all(r.get()["v"] == 2 for r in readers))
        start_candidate(publisher, readers, {"v": 3})
        back = publisher.abort_rollout()
        wait_until(lambda: all(r.generation == back for r in readers))
        assert all(r.get()["v"] == 2 for r in readers)
        assert publisher.last_rollout is not None
        assert publisher.last_rollout["reason"] == "aborted by a person"
        with pytest.raises(shmconf.ShmconfError, match="no rollout is running"):
            publisher.abort_rollout()
    finally:
        publisher.unlink()


def test_a_rolled_back_candidate_stays_out_until_the_sources_change(
        name: str, tmp_path: Path, readers: list[Reader[Any]]) -> None:
    source = tmp_path / "app.json"
    source.write_text('{"v": 1}')
    publisher = Publisher(name, [source], rollout=Rollout(canary=1, bake_s=600))
    try:
        publisher.publish_now()
        attach(name, readers, 2)
        source.write_text('{"v": 2}')
        candidate = publisher.publish_now()
        assert publisher.rollout is not None
        assert publisher.rollout.candidate == candidate
        back = publisher.abort_rollout()
        assert publisher.publish_now() == back  # the same bad sources publish nothing
        assert publisher.rollout is None
        source.write_text('{"v": 3}')
        again = publisher.publish_now()  # fixed sources: a new rollout
        assert publisher.rollout is not None
        assert publisher.rollout.candidate == again > back
    finally:
        publisher.unlink()


def test_the_next_publisher_rolls_back_a_rollout_its_predecessor_left(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    publisher.publish({"v": 1})
    attach(name, readers)
    candidate = start_candidate(publisher, readers, {"v": 2})
    publisher.close()  # as if killed: nothing resolved, the anchor still says "rollout"
    successor = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    try:
        back = successor.generation
        assert back > candidate
        assert successor.writer.rollout == 0
        wait_until(lambda: all(r.generation == back for r in readers))
        assert all(r.get()["v"] == 1 and not r.canary for r in readers)
        assert successor.last_rollout is not None
        assert successor.last_rollout["outcome"] == "rolled back"
        record = successor.history.get(back)
        assert record is not None
        assert record.rollout.startswith(f"rollback of {candidate}")
        noted = successor.history.get(candidate)
        assert noted is not None
        assert noted.rollout.startswith("rolled back: the publisher")
    finally:
        successor.unlink()


def test_health_counts_reach_the_reader_table_during_a_rollout(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    try:
        publisher.publish({"v": 1})
        attach(name, readers, 2)
        start_candidate(publisher, readers, {"v": 2})
        for reader in readers:
            for failed in (False, False, True):
                reader.count_request(failed=failed)
        rollout = publisher.writer.rollout
        wait_until(lambda: sorted(e.counts_in(rollout)
                                  for e in publisher.writer.readers()) == [(3, 1, 0)] * 2)
        run = publisher.rollout
        assert run is not None
        # The others' counts are read with the whole table, once a second.
        drive(publisher, lambda: run.stable_health.failures == 1)
        assert run.canary_health.requests == 3
        assert run.stable_health.failures == 1
        status = run.to_json()
        assert status["canaries"] == [readers[0]._pid]
        assert status["step"] == 1
    finally:
        publisher.unlink()


@pytest.mark.parametrize("options", [
    {"canary": 0}, {"canary": "0%"}, {"canary": "150%"}, {"canary": "some"},
    {"canary": True}, {"bake_s": -1}, {"min_requests": -1}, {"max_failure_increase": 2},
    {"steps": ["x"]}, {"unknown": 1},
])
def test_a_bad_rollout_policy_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"canary|bake_s|min_requests|max_failure|step|rollout"):
        Rollout.of(options)


def test_shares_of_workers_round_up_to_at_least_one() -> None:
    assert workers_for("10%", 4) == 1
    assert workers_for("50%", 5) == 3
    assert workers_for(3, 2) == 2
    assert Rollout.of({"canary": "2", "steps": ["25%"]}) == Rollout(canary=2, steps=("25%",))


def entry(slot: int, generation: int, *, canary_of: int = 0, requests: int = 0,
          failures: int = 0, checks: int = 0, rollout: int = 9, refused: int = 0) -> ReaderEntry:
    return ReaderEntry(slot, 100 + slot, generation, L.ENTRY_IDLE_ADOPTION, 0, refused, True,
                       requests, failures, checks, rollout, canary_of)


def test_the_judge_waits_for_enough_requests_after_the_bake() -> None:
    run = RolloutRun(Rollout(canary=1, bake_s=0, min_requests=10), 9, 9, 8, "d", {},
                     canaries={0: 100})
    entries = [entry(0, 9, canary_of=9, requests=4), entry(1, 8, requests=50)]
    verdict = run.judge(entries)
    assert verdict.action == "wait"
    assert "4 of 10" in verdict.reason
    entries[0] = entry(0, 9, canary_of=9, requests=10, failures=1)
    entries[1] = entry(1, 8, requests=50, failures=5)
    assert run.judge(entries).action == "promote"  # 10 % against 10 %: no worse
    entries[0] = entry(0, 9, canary_of=9, requests=10, failures=2, rollout=7)
    assert run.judge(entries).action == "wait"  # counts of another rollout do not count


def test_the_judge_grows_the_canaries_from_stable_workers_first() -> None:
    run = RolloutRun(Rollout(canary=2, bake_s=0), 9, 9, 8, "d", {}, canaries={2: 102})
    verdict = run.judge([entry(0, 7), entry(1, 8), entry(2, 9, canary_of=9)])
    assert verdict.action == "grow"
    assert verdict.count == 1
    assert verdict.assign[0].slot == 1  # it holds the stable generation


def test_the_judge_counts_only_the_canaries_it_assigned() -> None:
    """A group member can write the table; it cannot make itself a canary that counts."""
    run = RolloutRun(Rollout(canary=1, bake_s=0, min_requests=5), 9, 9, 8, "d", {},
                     canaries={0: 100})
    forged = entry(1, 9, canary_of=9, requests=1000)  # self-assigned, all good
    verdict = run.judge([entry(0, 9, canary_of=9, requests=10, failures=10), forged])
    assert verdict.action == "rollback"
    assert run.canaries == {0: 100}


@pytest.mark.slow
def test_readers_never_see_a_torn_or_older_snapshot_while_candidates_come_and_go(
        name: str) -> None:
    publisher = Publisher(name)
    procs = []
    try:
        publisher.publish(config(0, 100))
        procs = [python("-m", "tests.procs.consistency_reader", name, "--seconds", "30",
                        "--idle-adoption") for _ in range(4)]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "attached"
        writer = publisher.writer
        wait_until(lambda: len([e for e in writer.readers() if e.idle_adoption]) == 4)
        canary_pids = {procs[0].pid, procs[1].pid}
        never_promoted: set[int] = set()
        candidate = 0
        seq = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            seq += 1
            payload = orjson.dumps(config(seq, 200 + (seq * 7919) % 20_000))
            step = seq % 5
            if step in (0, 1, 2):  # a candidate, replacing any candidate out
                rollout = writer.next_generation()
                if candidate:
                    never_promoted.add(candidate)
                else:  # a new rollout: its canaries
                    writer.add_canaries([(e.slot, e.pid) for e in writer.readers()
                                         if e.pid in canary_pids])
                candidate = writer.publish_candidate(payload, b"{}", None, rollout)
            elif step == 3 and candidate:
                writer.promote()
                candidate = 0
            else:  # to everyone at once: ends the rollout, as a rollback does
                if candidate:
                    never_promoted.add(candidate)
                    candidate = 0
                writer.publish(payload)
            time.sleep(0.002)  # let the adoption threads see some candidates
        if candidate:
            never_promoted.add(candidate)
        final = publisher.publish(config(seq + 1, 100, final=True))
        results = {}
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results[proc.pid] = orjson.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        publisher.unlink()
    for pid, result in results.items():
        assert result["errors"] == [], result["errors"]
        assert result["last"] == final
        held_candidates = set(result["held"]) & never_promoted
        if pid in canary_pids:
            continue
        assert held_candidates == set(), f"worker {pid} held candidates {held_candidates}"
    assert any(set(results[pid]["held"]) & never_promoted for pid in canary_pids)


def test_starting_a_publisher_without_sources_keeps_what_it_published(name: str) -> None:
    publisher = Publisher(name, rollout=FAST)
    try:
        publisher.publish({"a": 1})
        publisher.start()  # it has nothing to load: no candidate of {}, no {} at all
        with shmconf.attach(name) as reader:
            assert reader.get() == {"a": 1}
            assert reader.generation == 1
        assert publisher.rollout is None
    finally:
        publisher.stop()
        publisher.unlink()


def test_only_the_publisher_makes_canaries_and_it_restores_a_damaged_list(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    try:
        publisher.publish({"v": 1})
        attach(name, readers)
        candidate = start_candidate(publisher, readers, {"v": 2})
        writer = publisher.writer
        # The table is the readers' (and a group member's) to write: anything
        # there, the old place of a canary mark included, makes no canary.
        for found in writer.readers():
            offset = found.slot * L.TABLE_ENTRY_SIZE
            writer._table.pwrite(offset + L.TABLE_READER_PART,  # type: ignore[union-attr]
                                 candidate.to_bytes(8, "little") +
                                 found.pid.to_bytes(8, "little"))
        writer.wake_readers()
        for reader in readers:
            reader.count_request()
        # Each adoption thread looked at its role, then wrote its count.
        rollout = writer.rollout
        wait_until(lambda: all(e.counts_in(rollout)[0] == 1 for e in writer.readers()))
        assert len(canaries(readers)) == 1
        # The owner's scribble over the anchor's list is put back at the heartbeat.
        words = writer.anchor.words
        listed = words[L.CANARY_LIST_WORD]
        words[L.CANARY_LIST_WORD] = 0
        publisher.heartbeat()
        assert words[L.CANARY_LIST_WORD] == listed
        assert words[L.A_CANARY_COUNT] == 1
    finally:
        publisher.unlink()


def test_a_step_waits_for_a_canary_still_running_its_health_check(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=0.1, min_requests=0))
    answer = threading.Event()
    try:
        publisher.publish({"db": "a"})
        attach(name, readers, 2)
        for reader in readers:
            reader.add_health_check(lambda cfg: answer.wait(30) and cfg["db"] == "a")
        publisher.publish({"db": "b"})
        # Long past the bake, the step waits while the check runs...
        drive(publisher, lambda: "finish its health checks" in getattr(
            publisher.rollout, "waiting", ""))
        assert publisher.rollout is not None
        answer.set()  # ...and the check's failure then rolls it back.
        drive(publisher, lambda: publisher.rollout is None)
        assert publisher.last_rollout is not None
        assert publisher.last_rollout["outcome"] == "rolled back"
    finally:
        answer.set()
        publisher.unlink()


def test_rollback_during_a_rollout_undoes_the_candidate(
        name: str, readers: list[Reader[Any]]) -> None:
    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=600))
    try:
        publisher.publish({"v": 1})
        publisher.rollout_policy = None
        publisher.publish({"v": 2})  # the stable version; 1 is the one before it
        publisher.rollout_policy = Rollout(canary=1, bake_s=600)
        attach(name, readers, 2)
        start_candidate(publisher, readers, {"v": 3})
        back = publisher.rollback()
        assert publisher.rollout is None
        wait_until(lambda: all(r.generation == back for r in readers))
        assert all(r.get()["v"] == 2 for r in readers)  # the stable one, not 1
    finally:
        publisher.unlink()


def test_steps_given_as_one_string_are_split_on_commas() -> None:
    assert Rollout(steps="25%,50%").steps == ("25%", "50%")  # type: ignore[arg-type]
    assert Rollout.of({"steps": "2"}) == Rollout(steps=(2,))
