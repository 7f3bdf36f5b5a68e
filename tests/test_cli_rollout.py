"""Rollouts through the CLI: ``publish --canary``, ``rollout promote|abort``, ``status``,
``--wait-for``, ``history`` and the metrics, with a real publisher and real worker processes.

The publisher bakes for an hour, so nothing here is decided by time: every
decision is a ``shmconf rollout`` command, a replacement, or a killed publisher.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from shmconf import Rollout, status
from shmconf.cli import build_parser, main
from shmconf.errors import SegmentNotFoundError
from shmconf.integrations.process import remove_leftovers
from tests.helpers import CONFIG_WITH_SECRET as CONFIG
from tests.helpers import REPO, SECRET, atomic_save, python, wait_until

#: Only a person (or a test) decides: an hour of bake, no request minimum, and
#: no failure ratio that rolls back.
PUBLISH = ("--model", "tests.models:Settings", "--debounce", "20ms", "--canary", "1",
           "--bake", "1h", "--min-requests", "0", "--max-failure-increase", "100%")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "shmconf", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=30, check=False)
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def status_json(name: str) -> dict[str, Any]:
    result = run("status", name, "--json")
    assert result.returncode == 0, result.stderr
    return dict(orjson.loads(result.stdout))


@dataclass
class Host:
    """A publisher with ``--canary 1`` and two workers (idle adoption: canary material)."""

    name: str
    config: Path
    publishers: list[subprocess.Popen[str]] = field(default_factory=list)
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def start_publisher(self) -> None:
        proc = python("-m", "shmconf", "publish", self.name, "-c", str(self.config), *PUBLISH)
        self.publishers.append(proc)
        wait_until(lambda: self._serving() or proc.poll() is not None, 20, 0.02,
                   "the publisher")
        assert proc.poll() is None, proc.communicate()

    def _serving(self) -> bool:
        try:
            found = status.collect(self.name, reclaim=False)
        except SegmentNotFoundError:
            return False
        return found.publisher_alive and bool(found.service)

    def ask(self, worker: subprocess.Popen[str], line: str = "read") -> str:
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.write(line + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    def edit(self, greeting: str) -> status.Status:
        """Change the file; wait until its candidate is out and a canary holds it."""
        before = status.collect(self.name, reclaim=False)
        atomic_save(self.config, CONFIG.replace("hello", greeting), prefix="")
        previous = before.candidate or before.generation
        wait_until(lambda: self._canary_on_candidate(previous), 10, 0.01,
                   "a canary on the candidate")
        return status.collect(self.name, reclaim=False)

    def _canary_on_candidate(self, previous: int) -> bool:
        found = status.collect(self.name, reclaim=False)
        candidate = found.candidate
        return candidate is not None and candidate > previous and any(
            r.canary and r.generation == candidate for r in found.readers)

    def held(self) -> set[int]:
        return {r.generation for r in status.collect(self.name, reclaim=False).readers
                if r.alive}


@pytest.fixture
def host(name: str, tmp_path: Path) -> Iterator[Host]:
    config = tmp_path / "conf" / "app.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG)
    found = Host(name, config)
    try:
        found.start_publisher()
        found.workers = [python("-m", "tests.procs.canary_reader", name, stdin=subprocess.PIPE)
                         for _ in range(2)]
        for worker in found.workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().startswith("ready "), worker.communicate()
        wait_until(lambda: sum(r.alive and r.idle_adoption for r in status.collect(
            name, reclaim=False).readers) == 2, 10, 0.01, "two workers listed")
        yield found
    finally:
        for worker in found.workers:
            worker.kill()
            worker.communicate()
        for proc in found.publishers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert SECRET not in err
        remove_leftovers(name)


def metrics(name: str) -> Any:
    prometheus = pytest.importorskip("prometheus_client")
    from shmconf.integrations.prometheus import ShmconfCollector

    registry = prometheus.CollectorRegistry()
    registry.register(ShmconfCollector(name))
    return registry


def test_a_canary_gets_the_change_first_and_promote_gives_it_to_every_worker(host: Host) -> None:
    name = host.name
    none = run("rollout", name, "promote")
    assert none.returncode == 1
    assert f"no rollout is running for {name!r}" in none.stderr

    found = host.edit("bonjour")
    candidate = found.candidate
    assert candidate is not None
    assert found.generation == 1
    canary = next(r.pid for r in found.readers if r.canary)
    stable = next(r.pid for r in found.readers if not r.canary)
    worker = {w.pid: w for w in host.workers}
    assert host.ask(worker[canary]) == f"{candidate} bonjour 1"
    assert host.ask(worker[stable]) == "1 hello 0"

    shown = run("status", name)
    assert shown.returncode == 0, shown.stderr
    assert f"generation {candidate} to canaries, generation 1 to the others" in shown.stdout
    assert "step 1 of 1" in shown.stdout
    assert re.search(rf"^canaries +pid {canary}$", shown.stdout, re.M), shown.stdout
    assert "ROLE" in shown.stdout
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()
            if line[:1].isdigit() and len(line.split()) > 3}
    assert rows[str(canary)].split()[2:] == ["canary", "when", "idle", "current", "(the",
                                             "candidate)"]
    assert rows[str(stable)].split()[2:] == ["stable", "when", "idle", "current"]
    data = status_json(name)
    rollout = data["rollout"]
    assert (rollout["candidate"], rollout["stable"], rollout["canaries"]) == (
        candidate, 1, [canary])
    assert (rollout["step"], rollout["steps"], rollout["policy"]["canary"]) == (1, 1, 1)
    assert rollout["bake_left_s"] > 3000
    assert data["last_rollout"] is None
    assert {r["pid"]: r["canary"] for r in data["readers"]} == {canary: True, stable: False}

    # The canary's requests reach the publisher's judgement, the status and the metrics.
    assert host.ask(worker[canary], "serve 5 1") == "served"
    assert host.ask(worker[stable], "serve 7 0") == "served"
    wait_until(lambda: (status_json(name)["rollout"]["canary_health"] or {}).get("requests") == 5
               and status_json(name)["rollout"]["stable_health"]["requests"] == 7, 10, 0.05,
               "the health counts in status")
    shown = run("status", name)
    assert re.search(r"^canary health +5 requests, 1 failed \(20\.0%\) in 1 worker$",
                     shown.stdout, re.M), shown.stdout
    assert re.search(r"^other workers +7 requests, 0 failed \(0\.0%\) in 1 worker$",
                     shown.stdout, re.M), shown.stdout
    registry = metrics(name)
    sample = registry.get_sample_value
    assert sample("shmconf_rollout_running", {"name": name}) == 1.0
    assert sample("shmconf_rollout_candidate_generation", {"name": name}) == candidate
    assert sample("shmconf_rollout_step", {"name": name}) == 1.0
    assert sample("shmconf_rollout_canaries", {"name": name}) == 1.0
    assert sample("shmconf_rollout_requests", {"name": name, "group": "canary"}) == 5.0
    assert sample("shmconf_rollout_failures", {"name": name, "group": "canary"}) == 1.0
    assert sample("shmconf_rollout_requests", {"name": name, "group": "stable"}) == 7.0
    assert sample("shmconf_readers", {"name": name}) == 2.0  # the canary is listed too

    # The stable generation: the other worker is not behind for it. The
    # candidate: every worker only once it is promoted.
    assert run("status", name, "--wait-for", "1", "--timeout", "5").returncode == 0
    waited = run("status", name, "--wait-for", str(candidate), "--timeout", "0.3")
    assert waited.returncode == 1
    assert f"generation {candidate} is the candidate of a running rollout" in waited.stderr
    assert f"`shmconf rollout {name} promote`" in waited.stderr

    # A second change replaces the candidate: waiting for the first ends at once.
    replaced = host.edit("hola").candidate
    assert replaced is not None
    assert replaced > candidate
    waited = run("status", name, "--wait-for", str(candidate), "--timeout", "20", "--json")
    assert waited.returncode == 1
    assert f"it was replaced by candidate {replaced}" in waited.stderr
    assert orjson.loads(waited.stdout)["rollout"].startswith("replaced")

    promoted = run("rollout", name, "promote", "--json")
    assert promoted.returncode == 0, promoted.stderr
    assert orjson.loads(promoted.stdout) == {"ok": True, "decision": "promote",
                                             "candidate": replaced, "stable": 1,
                                             "generation": replaced}
    waited = run("status", name, "--wait-for", str(replaced), "--timeout", "10")
    assert waited.returncode == 0, waited.stderr
    assert host.held() == {replaced}
    assert {host.ask(w) for w in host.workers} == {f"{replaced} hola 0"}

    data = status_json(name)
    assert data["rollout"] is None
    assert data["last_rollout"]["outcome"] == "promoted"
    assert data["last_rollout"]["candidate"] == replaced
    assert "promoted by a person" in run("status", name).stdout
    history = {v["generation"]: v["rollout"] for v in orjson.loads(
        run("history", name, "--json").stdout)}
    assert history[1] == ""
    assert history[candidate] == f"replaced by candidate {replaced}"
    assert history[replaced] == "promoted"
    assert "promoted" in run("history", name).stdout
    registry = metrics(name)
    assert registry.get_sample_value("shmconf_rollout_running", {"name": name}) == 0.0
    assert registry.get_sample_value("shmconf_rollout_candidate_generation",
                                     {"name": name}) is None
    assert registry.get_sample_value("shmconf_rollout_last_outcome",
                                     {"name": name, "outcome": "promoted"}) == 1.0
    assert registry.get_sample_value("shmconf_rollout_last_outcome",
                                     {"name": name, "outcome": "rolled_back"}) == 0.0


def test_abort_gives_every_worker_the_stable_content_as_a_new_generation(host: Host) -> None:
    name = host.name
    candidate = host.edit("broken-release").candidate
    assert candidate is not None
    # Someone waits for the candidate; the abort ends that wait at once.
    waiting = python("-m", "shmconf", "status", name, "--wait-for", str(candidate),
                     "--timeout", "25")
    aborted = run("rollout", name, "abort")
    assert aborted.returncode == 0, aborted.stderr
    generation = status.collect(name, reclaim=False).generation
    assert generation > candidate
    assert f"every worker gets generation {generation}, the content of generation 1" \
        in aborted.stdout
    _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 1
    assert (f"generation {candidate} will never reach every reader: it was rolled back: "
            "aborted by a person") in err

    assert run("status", name, "--wait-for", str(generation), "--timeout", "10").returncode == 0
    assert {host.ask(w) for w in host.workers} == {f"{generation} hello 0"}
    shown = run("status", name)
    assert f"generation {candidate} rolled back" in shown.stdout
    assert "aborted by a person" in shown.stdout
    assert "ROLE" not in shown.stdout
    history = run("history", name)
    lines = {line.split()[0]: line for line in history.stdout.splitlines()[1:]}
    assert "rolled back: aborted by a person" in lines[str(candidate)]
    assert f"rollback of {candidate}: aborted by a person" in lines[str(generation)]
    data = status_json(name)
    assert data["last_rollout"]["outcome"] == "rolled back"
    assert data["last_rollout"]["generation"] == generation
    assert metrics(name).get_sample_value(
        "shmconf_rollout_last_outcome", {"name": name, "outcome": "rolled_back"}) == 1.0
    # The pin: the file still holds the candidate, and a reload publishes nothing.
    assert run("reload", name).returncode == 0
    assert status.collect(name, reclaim=False).generation == generation
    again = run("rollout", name, "abort")
    assert again.returncode == 1
    assert "no rollout is running" in again.stderr
    assert f"generation {candidate} rolled back" in again.stderr


def test_a_rollout_whose_publisher_died_says_how_to_finish_it(host: Host) -> None:
    name = host.name
    candidate = host.edit("bonjour").candidate
    assert candidate is not None
    host.publishers[0].kill()
    host.publishers[0].wait()
    refused = run("rollout", name, "abort", "--json")
    assert refused.returncode == 1
    assert f"no publisher of {name!r} is running to abort" in refused.stderr
    advice = f"shmconf publish {name} -c {host.config}"
    assert advice in refused.stderr
    assert orjson.loads(refused.stdout)["ok"] is False
    assert "unfinished: its publisher is not running" in run("status", name).stdout
    waited = run("status", name, "--wait-for", str(candidate), "--timeout", "20")
    assert waited.returncode == 1
    assert "the next publisher to start rolls the candidate back" in waited.stderr

    # The advice, followed: a new publisher rolls the candidate back as it
    # starts, then rolls the sources' version out again; that one can be aborted.
    host.start_publisher()
    wait_until(lambda: (status.collect(name, reclaim=False).candidate or 0) > candidate, 10,
               0.01, "the new rollout")
    history = {v["generation"]: v["rollout"] for v in orjson.loads(
        run("history", name, "--json").stdout)}
    assert history[candidate] == "rolled back: the publisher stopped during its rollout"
    aborted = run("rollout", name, "abort")
    assert aborted.returncode == 0, aborted.stderr
    wait_until(lambda: host.held() == {status.collect(name, reclaim=False).generation}, 10,
               0.01, "every worker on the stable content")
    assert {host.ask(w).split()[1] for w in host.workers} == {"hello"}


def test_the_publishers_own_collector_exports_its_rollout(name: str) -> None:
    prometheus = pytest.importorskip("prometheus_client")
    from shmconf import Publisher
    from shmconf.integrations.prometheus import ShmconfCollector

    publisher = Publisher(name, rollout=Rollout(canary=1, bake_s=3600, min_requests=0))
    worker = None
    try:
        publisher.publish({"greeting": "hello"})
        registry = prometheus.CollectorRegistry()
        registry.register(ShmconfCollector(publisher=publisher))
        worker = python("-m", "tests.procs.canary_reader", name, stdin=subprocess.PIPE)
        assert worker.stdout is not None
        assert worker.stdout.readline() == "ready 1\n"
        candidate = publisher.publish({"greeting": "bonjour"})

        def canary_on_candidate() -> bool:
            publisher.rollout_tick()  # what the service does ten times a second
            return registry.get_sample_value(
                "shmconf_reader_generation", {"name": name, "pid": str(worker.pid)}) == candidate

        wait_until(canary_on_candidate, 10, 0.01, "the canary on the candidate")
        sample = registry.get_sample_value
        assert sample("shmconf_generation", {"name": name}) == 1.0
        assert sample("shmconf_readers", {"name": name}) == 1.0
        assert sample("shmconf_reader_lag", {"name": name, "pid": str(worker.pid)}) == 0.0
        assert sample("shmconf_rollout_running", {"name": name}) == 1.0
        assert sample("shmconf_rollout_candidate_generation", {"name": name}) == candidate
        assert sample("shmconf_rollout_steps", {"name": name}) == 1.0
        assert sample("shmconf_rollout_bake_remaining_seconds", {"name": name}) > 3000
        publisher.abort_rollout()
        assert sample("shmconf_rollout_running", {"name": name}) == 0.0
        assert sample("shmconf_rollout_last_outcome",
                      {"name": name, "outcome": "rolled_back"}) == 1.0
        assert sample("shmconf_rollout_last_end_timestamp_seconds", {"name": name}) > 0
    finally:
        if worker is not None:
            worker.kill()
            worker.communicate()
        publisher.unlink()


@pytest.mark.parametrize(("args", "message"), [
    (["--bake", "5s"], "--bake shapes a rollout, which starts with canaries: add --canary N"),
    (["--min-requests", "3", "--steps", "50%"], "--steps, --min-requests shape a rollout"),
    (["--canary", "0"], "argument --canary: '0' is not a number of workers"),
    (["--canary", "120%"], "argument --canary: '120%' is not a number of workers"),
    (["--canary", "1", "--steps", "25%,x"], "argument --steps: 'x' is not a number"),
    (["--canary", "1", "--bake", "-1"], "argument --bake: '-1' is not a duration"),
    (["--canary", "1", "--min-requests", "2.5"], "argument --min-requests: '2.5' is not a "
                                                 "whole number"),
    (["--canary", "1", "--max-failure-increase", "2"], "argument --max-failure-increase: '2'"),
])
def test_rollout_options_are_checked_as_usage_errors(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["publish", "myapp", "-c", "app.yaml", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_rollout_options_make_the_policy() -> None:
    from shmconf.cli import rollout_policy

    parser = build_parser()
    args = parser.parse_args(["publish", "myapp", "-c", "app.yaml", "--canary", "10%",
                              "--bake", "2m", "--steps", "25%, 50%", "--min-requests", "3",
                              "--max-failure-increase", "2%"])
    assert rollout_policy(args) == Rollout(canary="10%", bake_s=120.0, steps=("25%", "50%"),
                                           min_requests=3, max_failure_increase=0.02)
    assert rollout_policy(parser.parse_args(["publish", "myapp", "-c", "app.yaml"])) is None


@pytest.mark.parametrize("args", [["myapp"], ["myapp", "frobnicate"]])
def test_the_rollout_command_needs_a_decision(
        args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rollout", *args])
    assert exited.value.code == 2
    assert "promote" in capsys.readouterr().err
