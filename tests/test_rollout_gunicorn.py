"""Rollouts under real servers: gunicorn's sync workers, real requests, real signals.

The app (``tests.apps.rollout_app``) answers every request, a 500 included,
with the pid of the worker, the generation and version it served and whether
it is a canary; the hooks' ``post_request`` counts each request for the
publisher. A test keeps client threads running through the whole rollout and
then checks every answer: only the canary may ever have served a candidate
until it is promoted. A person decides with ``shmconf rollout NAME
promote|abort``. ``test_rollout.py`` covers the publisher and the protocol
with readers in one process; ``test_request_health.py`` what each
integration counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shmconf import Rollout, status
from shmconf.integrations.process import PublisherProcess
from shmconf.protocol import layout as L
from shmconf.protocol import table
from shmconf.protocol.anchor import canaries, open_anchor
from shmconf.protocol.table import ReaderEntry
from tests.apps.rollout_app import release_yaml
from tests.apps.servers import (
    Load,
    live_readers,
    nothing_left,
    pid_gone,
    publisher_pid,
    running,
    server_source,
    until_every_worker,
)
from tests.helpers import atomic_save, wait_until

WORKERS = 3
#: The bake of the tests that let a rollout decide alone: short, but long
#: enough that the non-canaries are seen serving the stable version meanwhile.
BAKE_S = 2.0
#: A bake no test waits for: the rollout runs until a person decides.
LONG_BAKE_S = 60.0


@pytest.fixture
def release(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' config, version 1 and healthy, in a directory the publisher watches."""
    return server_source(tmp_path, name, monkeypatch, release_yaml(1))


def gunicorn(log: Path, monkeypatch: pytest.MonkeyPatch, **policy: Any) -> Any:
    """gunicorn with WORKERS sync workers and the rollout ``policy``; see ``running``."""
    monkeypatch.setenv("SHMCONF_TEST_ROLLOUT", orjson.dumps(policy).decode())
    args = ["-c", "tests/apps/gunicorn_rollout_conf.py", "-b", "127.0.0.1:0",
            "-w", str(WORKERS), "--graceful-timeout", "5", "tests.apps.rollout_app:wsgi"]
    return running("gunicorn", args, log)


# -- what the clients saw ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    received_ns: int
    status: int
    pid: int
    generation: int
    version: int
    canary: bool


def answer_of(response: httpx.Response) -> Answer:
    body = orjson.loads(response.content)
    return Answer(time.time_ns(), response.status_code, body["pid"], body["generation"],
                  body["version"], body["canary"])


@dataclass
class Clients(Load):
    """Threads that GET ``/`` as fast as the server answers, each on a new connection.

    A kept-alive connection would stay with one worker; new ones spread over
    all of them, so every worker serves some of the requests. Every answer
    is kept, a 500 included.
    """

    threads: int = 3
    headers: dict[str, str] = field(default_factory=lambda: {"Connection": "close"})
    answers: list[Answer] = field(default_factory=list)

    def _take(self, response: httpx.Response) -> None:
        try:
            self.answers.append(answer_of(response))
        except orjson.JSONDecodeError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def served(self, generation: int) -> set[int]:
        """The pids that answered with ``generation``."""
        return {a.pid for a in list(self.answers) if a.generation == generation}


def wait_every_worker_serves(url: str, workers: set[int], version: int, at_least: int,
                             timeout: float = 10.0) -> dict[int, int]:
    """Ask until each pid in ``workers`` answered ``version`` at a generation >= ``at_least``.

    Returns the generation each one answered with (see ``until_every_worker``).
    """

    def served_by(answer: Answer) -> int | None:
        if answer.version != version or answer.generation < at_least:
            return None
        assert answer.status == 200, answer
        return answer.pid

    seen = until_every_worker(url, workers, lambda client: answer_of(client.get("/")), served_by,
                              f"to serve version {version} at generation >= {at_least}", timeout)
    return {pid: answer.generation for pid, answer in seen.items()}


# -- what the publisher says -------------------------------------------------------------


def service(name: str) -> dict[str, Any]:
    """The running publisher's ``status.json``."""
    return status.collect(name, reclaim=False).service


def running_rollout(name: str) -> dict[str, Any] | None:
    return service(name).get("rollout")


def last_rollout(name: str) -> dict[str, Any] | None:
    return service(name).get("last_rollout")


def rollout_ended(name: str, timeout: float) -> dict[str, Any]:
    """Wait for the publisher's report of the rollout's end, and return it."""
    wait_until(lambda: last_rollout(name) is not None, timeout, 0.02, "the rollout to end")
    ended = last_rollout(name)
    assert ended is not None
    return ended


def entries(name: str) -> list[ReaderEntry]:
    """The live entries of the reader table, health counts and canary marks included."""
    with open_anchor(name, writable=False) as anchor:
        rollout, listed = int(anchor.words[L.A_ROLLOUT]), canaries(anchor.words)
    with table.open_table(name, writable=False) as block:
        return [e for e in table.entries(block, rollout, listed) if e.alive]


def wait_canary_holds_candidate(name: str, timeout: float = 10.0) -> tuple[dict[str, Any], int]:
    """Wait until a rollout runs and its canary holds the candidate: ``(rollout, canary pid)``."""
    found: list[tuple[dict[str, Any], int]] = []

    def holding() -> bool:
        rollout = running_rollout(name)
        if rollout is None:
            return False
        pids = [e.pid for e in entries(name)
                if e.canary_in(rollout["id"]) and e.generation == rollout["candidate"]]
        if pids:
            found.append((rollout, pids[0]))
        return bool(pids)

    wait_until(holding, timeout, 0.02, "a canary holding the candidate")
    return found[-1]


def decide(name: str, decision: str) -> dict[str, Any]:
    """``shmconf rollout NAME promote|abort --json``: the publisher's answer."""
    result = subprocess.run([sys.executable, "-m", "shmconf", "rollout", name, decision,
                             "--json"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = orjson.loads(result.stdout)
    assert outcome["ok"], outcome
    assert outcome["decision"] == decision
    return outcome


def attached(name: str, workers: int = WORKERS) -> set[int]:
    """Wait until ``workers`` workers are listed with idle adoption (canaries need it)."""
    wait_until(lambda: len(live_readers(name)) == workers and all(
        r.idle_adoption for r in status.collect(name, reclaim=False).readers if r.alive),
        20, 0.02, f"{workers} workers adopting while idle")
    return live_readers(name)


# -- the tests ---------------------------------------------------------------------------


def test_a_failing_candidate_is_rolled_back_and_only_its_canary_served_it(
    tmp_path: Path, name: str, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(log, monkeypatch, canary=1, bake_s=BAKE_S, min_requests=5) as server:
        workers = attached(name)
        stable = status.collect(name, reclaim=False).generation
        with Clients(server.url) as clients:
            saved_ns = time.time_ns()
            atomic_save(release, release_yaml(2, fail=True), prefix="")
            ended = rollout_ended(name, BAKE_S + 10)
            assert ended["outcome"] == "rolled back", ended
            assert "the canaries failed" in ended["reason"]
            # Judged on the canary's failures, before its bake was over.
            assert ended["ended_ns"] - saved_ns < (BAKE_S + 1) * 1e9, ended
            candidate, back = ended["candidate"], ended["generation"]
            assert stable < candidate < back
            # Every worker, the canary too, serves the stable content again, as
            # a generation above the candidate's (readers never go back).
            wait_every_worker_serves(server.url, workers, 1, back)
        assert not clients.failures, clients.failures[:5]
        # The sources still hold the candidate, but the rollback is pinned:
        # a reload publishes nothing until they change.
        reloads = service(name)["reloads"]
        pid = publisher_pid(name)
        assert pid is not None
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: service(name)["reloads"] > reloads, 10, 0.02, "a reload")
        assert running_rollout(name) is None
        assert status.collect(name, reclaim=False).generation == back
        assert server.stop() == 0

    answers = clients.answers
    on_candidate = [a for a in answers if a.generation == candidate]
    assert on_candidate, "the canary served no request under the candidate"
    (canary,) = {a.pid for a in on_candidate}
    assert all(a.canary and a.version == 2 and a.status == 500 for a in on_candidate)
    # Nobody else ever served it: not a single answer of version 2 elsewhere.
    assert all(a.generation == candidate for a in answers if a.version == 2)
    assert all(a.status == 200 for a in answers if a.pid != canary)
    assert all(a.generation in (stable, back) for a in answers if a.version == 1)
    text = log.read_text()
    assert f"candidate generation {candidate} rolled back" in text
    assert "Traceback" not in text
    assert nothing_left(name)


def test_a_healthy_candidate_reaches_every_worker_after_the_bake_and_not_before(
    tmp_path: Path, name: str, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(log, monkeypatch, canary=1, bake_s=BAKE_S, min_requests=5) as server:
        workers = attached(name)
        stable = status.collect(name, reclaim=False).generation
        with Clients(server.url) as clients:
            atomic_save(release, release_yaml(2), prefix="")
            ended = rollout_ended(name, BAKE_S + 10)
            assert ended["outcome"] == "promoted", ended
            candidate = ended["candidate"]
            assert ended["ended_ns"] - ended["started_ns"] >= BAKE_S * 1e9
            assert ended["canary_health"]["requests"] >= 5
            assert ended["canary_health"]["failures"] == 0
            # Promoting publishes nothing new: every worker takes the candidate's slot.
            assert status.collect(name, reclaim=False).generation == candidate
            wait_every_worker_serves(server.url, workers, 2, candidate)
        assert not clients.failures, clients.failures[:5]
        assert server.stop() == 0

    baked_ns = ended["started_ns"] + BAKE_S * 1e9
    during = [a for a in clients.answers if a.received_ns < baked_ns]
    (canary,) = {a.pid for a in during if a.version == 2}
    assert all(a.generation == candidate and a.canary for a in during if a.pid == canary
               and a.version == 2)
    # The others served the stable version through the bake.
    others = {a.pid for a in during if a.received_ns > ended["started_ns"] and a.pid != canary}
    assert others == workers - {canary}
    assert all(a.version == 1 and a.generation == stable for a in during if a.pid != canary)
    assert all(a.status == 200 for a in clients.answers)
    assert nothing_left(name)


def test_a_person_promotes_then_aborts_mid_bake(
    tmp_path: Path, name: str, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(log, monkeypatch, canary=1, bake_s=LONG_BAKE_S, min_requests=1) as server:
        workers = attached(name)
        # Promote: the candidate reaches every worker long before its bake ends.
        atomic_save(release, release_yaml(2), prefix="")
        rollout, _ = wait_canary_holds_candidate(name)
        outcome = decide(name, "promote")
        assert outcome["generation"] == rollout["candidate"]
        ended = last_rollout(name)
        assert ended is not None
        assert ended["outcome"] == "promoted"
        assert ended["reason"] == "promoted by a person"
        wait_every_worker_serves(server.url, workers, 2, rollout["candidate"])

        # Abort: every worker serves the promoted version again, a generation above.
        atomic_save(release, release_yaml(3), prefix="")
        rollout, canary = wait_canary_holds_candidate(name)
        assert rollout["stable"] == outcome["generation"]
        aborted = decide(name, "abort")
        assert aborted["candidate"] == rollout["candidate"]
        assert aborted["generation"] > rollout["candidate"]
        ended = last_rollout(name)
        assert ended is not None
        assert ended["outcome"] == "rolled back"
        assert ended["reason"] == "aborted by a person"
        served = wait_every_worker_serves(server.url, workers, 2, aborted["generation"])
        assert served[canary] == aborted["generation"]
        # The sources still hold version 3: the rollback is pinned until they change.
        assert running_rollout(name) is None
        assert status.collect(name, reclaim=False).generation == aborted["generation"]
        assert server.stop() == 0
    assert nothing_left(name)


def test_a_publisher_killed_mid_rollout_is_restarted_and_rolls_it_back(
    tmp_path: Path, name: str, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(log, monkeypatch, canary=1, bake_s=LONG_BAKE_S, min_requests=1) as server:
        workers = attached(name)
        stable = status.collect(name, reclaim=False).generation
        with Clients(server.url) as clients:
            atomic_save(release, release_yaml(2), prefix="")
            rollout, canary = wait_canary_holds_candidate(name)
            candidate = rollout["candidate"]
            first = publisher_pid(name)
            assert first is not None
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: publisher_pid(name) not in (None, first), 10, 0.02,
                       "a new publisher")
            # The new publisher rolled its predecessor's candidate back ...
            ended = rollout_ended(name, 10)
            assert ended["outcome"] == "rolled back", ended
            assert ended["candidate"] == candidate
            assert ended["reason"] == "the publisher stopped during its rollout"
            back = ended["generation"]
            assert back > candidate
            # ... and then found the candidate's content in the sources, which
            # goes through a rollout of its own, from the start.
            again, new_canary = wait_canary_holds_candidate(name)
            assert again["stable"] == back
            assert again["candidate"] > back
            others = workers - {new_canary}
            wait_every_worker_serves(server.url, others, 1, back)
            wait_every_worker_serves(server.url, {new_canary}, 2, again["candidate"])
            assert clients.served(again["candidate"]) == {new_canary}
            outcome = decide(name, "promote")
            wait_every_worker_serves(server.url, workers, 2, outcome["generation"])
        assert not clients.failures, clients.failures[:5]
        assert server.stop() == 0

    answers = clients.answers
    # Every worker served a valid version throughout, whatever the publisher did.
    assert answers
    assert all(a.status == 200 and a.version in (1, 2) for a in answers)
    # Only the first canary served the first candidate, and only the second
    # one the second, until the promote.
    assert clients.served(candidate) == {canary}
    assert all(a.generation in (stable, back) for a in answers
               if a.version == 1)
    assert not [a for a in answers if a.generation == back and a.version != 1]
    assert pid_gone(first)
    assert nothing_left(name)
    assert "killed by SIGKILL" in log.read_text()


# -- ASGI -------------------------------------------------------------------------------


@pytest.fixture
def publisher(name: str, release: Path) -> Iterator[PublisherProcess]:
    """A publisher process that rolls out to one canary and never decides alone.

    ``max_failure_increase=1`` is never exceeded, so a candidate that fails
    every request stays out while the test counts its failures.
    """
    process = PublisherProcess(
        name, [release], "tests.apps.rollout_app:Release", debounce=0.02,
        rollout=Rollout(canary=1, bake_s=LONG_BAKE_S, min_requests=10**6,
                        max_failure_increase=1.0),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_the_asgi_wrapper_counts_requests_and_failures(
    tmp_path: Path, name: str, release: Path, publisher: PublisherProcess
) -> None:
    log = tmp_path / "uvicorn.log"
    args = ["tests.apps.rollout_app:asgi", "--workers", "2", "--host", "127.0.0.1",
            "--port", "0"]
    with running("uvicorn", args, log) as server, \
            httpx.Client(base_url=server.url, timeout=5.0,
                         headers={"Connection": "close"}) as client:
        attached(name, 2)
        atomic_save(release, release_yaml(2, fail=True), prefix="")
        rollout, canary = wait_canary_holds_candidate(name)
        rid = rollout["id"]

        def counts() -> dict[int, tuple[int, int, int]]:
            return {e.pid: e.counts_in(rid) for e in entries(name)}

        slash: list[httpx.Response] = []  # every answer to "/"

        def get(path: str) -> httpx.Response:
            response = client.get(path)
            if path == "/":
                slash.append(response)
            return response

        def both_counting() -> bool:
            list(pool.map(get, ["/"] * 4))
            return len(found := counts()) == 2 and all(c[0] for c in found.values())

        raising = 6
        with ThreadPoolExecutor(4) as pool:
            # Until both workers wrote counts for this rollout (the adoption
            # thread writes them every 0.25 s while it runs). The canary counts
            # from its adoption of the candidate, so every request it answered;
            # the other worker from its first wake in the rollout, which may
            # come after a request or two.
            wait_until(both_counting, 10, 0.05, "both workers counting")
            answers = list(pool.map(get, ["/"] * 20 + ["/raise"] * raising))
        assert all(r.status_code == 500 for r in answers[20:])
        bodies = [orjson.loads(r.content) for r in slash]
        assert all(b["version"] == 2 and b["canary"] and r.status_code == 500
                   for b, r in zip(bodies, slash, strict=True) if b["pid"] == canary)
        assert all(b["version"] == 1 and r.status_code == 200
                   for b, r in zip(bodies, slash, strict=True) if b["pid"] != canary)
        on_canary = sum(b["pid"] == canary for b in bodies)
        wait_until(lambda: sum(c[1] for c in counts().values()) == on_canary + raising,
                   10, 0.02, "every failure counted")
        after = counts()
        (other,) = set(after) - {canary}
        requests = {pid: c[0] for pid, c in after.items()}
        failures = {pid: c[1] for pid, c in after.items()}
        # The canary failed every request (its candidate answers 500; the app
        # raised); the other worker those that raised, and served the others.
        assert failures[canary] == requests[canary]
        raised_on_canary = requests[canary] - on_canary
        assert 0 <= raised_on_canary <= raising
        assert failures[other] == raising - raised_on_canary
        assert failures[other] < requests[other] <= failures[other] + len(bodies) - on_canary
        assert all(c[2] == 0 for c in after.values())  # no failed checks
        assert running_rollout(name) is not None  # still undecided
        assert server.stop() == 0
    publisher.stop()
    assert nothing_left(name)
