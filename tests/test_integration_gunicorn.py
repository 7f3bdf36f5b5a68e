"""gunicorn with ShmconfHooks: real master, real workers, real HTTP, real signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

import shmconf
from shmconf import status
from shmconf.integrations.gunicorn import ShmconfHooks
from tests.apps.models import seq_yaml
from tests.apps.servers import (
    Load,
    assert_consistent,
    get_json,
    kill_quietly,
    live_readers,
    nothing_left,
    pid_gone,
    publisher_pid,
    rewrite_while_loaded,
    running,
    start,
    wait_all_workers_serve,
    write_doc_files,
)
from tests.helpers import REPO, atomic_save, wait_until

WORKERS = 4


def gunicorn_args(log: Path, *extra: str) -> list[str]:
    return ["-c", "tests/apps/gunicorn_conf.py", "-b", "127.0.0.1:0", "-w", str(WORKERS),
            "--graceful-timeout", "5", *extra, "tests.apps.seqapp:wsgi"]


@pytest.mark.slow
def test_sync_workers_under_load_hup_kill_and_shutdown(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with running("gunicorn", gunicorn_args(log), log) as server:
        wait_until(lambda: len(live_readers(name)) == WORKERS, 20, 0.02, "4 workers attached")
        publisher = publisher_pid(name)
        assert publisher is not None
        assert publisher != server.proc.pid

        # 1. Load while the file is rewritten 10 times a second for 3 seconds.
        with Load(server.url, threads=2) as load:
            last = rewrite_while_loaded(source, seq_yaml, 1, 30)
            wait_all_workers_serve(server.url, live_readers(name), last)
        assert not load.failures, load.failures[:5]
        assert len(load.responses) > 50
        assert_consistent(load.responses)
        assert max(r["seq"] for r in load.responses) == last

        # 2. kill -HUP: gunicorn replaces every worker; the publisher survives
        #    and the new workers attach and follow new versions.
        old = live_readers(name)
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(lambda: len(live := live_readers(name)) == WORKERS and not live & old,
                   20, 0.02, "4 new workers after HUP")
        assert publisher_pid(name) == publisher
        atomic_save(source, seq_yaml(last + 1), prefix="")
        wait_all_workers_serve(server.url, live_readers(name), last + 1)

        # 3. A worker killed with SIGKILL is replaced, and its successor serves
        #    the current config.
        before = live_readers(name)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(live := live_readers(name)) == WORKERS and victim not in live,
                   20, 0.02, "a replacement worker")
        (new_worker,) = live_readers(name) - before
        wait_all_workers_serve(server.url, {new_worker}, last + 1)

        # 4. The debug view names the worker and its generation, secrets redacted.
        with httpx.Client(base_url=server.url, timeout=5) as client:
            view = get_json(client, "/debug/config")
        assert view["name"] == name
        assert view["config"]["seq"] == last + 1
        assert view["config"]["token"] == "**********"
        assert "s3cret" not in str(view)
        assert view["worker"]["pid"] in live_readers(name)

        # 5. SIGTERM: workers, then the publisher stop; nothing is left behind.
        assert server.stop() == 0
    assert pid_gone(publisher)
    assert nothing_left(name)
    assert "s3cret" not in log.read_text()


def test_killed_publisher_is_restarted_and_later_saves_reach_every_worker(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with running("gunicorn", gunicorn_args(log, "-w", "2"), log) as server:
        wait_until(lambda: len(live_readers(name)) == 2, 20, 0.02, "2 workers attached")
        workers = live_readers(name)
        first = publisher_pid(name)
        assert first is not None
        atomic_save(source, seq_yaml(1), prefix="")
        wait_all_workers_serve(server.url, workers, 1)

        os.kill(first, signal.SIGKILL)
        # The workers serve the last good config while the publisher is away.
        wait_all_workers_serve(server.url, workers, 1)
        wait_until(lambda: publisher_pid(name) not in (None, first), 10, 0.02,
                   "a new publisher")
        wait_until(lambda: status.collect(name, reclaim=False).supervisor.get("state")
                   == "serving", 10, 0.02, "the supervisor to report it serving")
        supervisor = status.collect(name, reclaim=False).supervisor
        assert supervisor["alive"]
        assert supervisor["restarts"] == 1
        assert supervisor["last_exit"] == "killed by SIGKILL"
        assert supervisor["publisher_pid"] == publisher_pid(name)
        shown = cli("status", name)
        assert "1 restart" in shown
        assert "killed by SIGKILL" in shown
        assert orjson.loads(cli("status", name, "--json"))["supervisor"]["restarts"] == 1

        # gunicorn noticed nothing: same workers, and the next save reaches them.
        assert live_readers(name) == workers
        atomic_save(source, seq_yaml(2), prefix="")
        wait_all_workers_serve(server.url, workers, 2)
        assert server.stop() == 0
    assert pid_gone(first)
    assert nothing_left(name)
    text = log.read_text()
    assert f"[ERROR] shmconf.integrations.supervisor: config {name!r}: publisher pid {first} " \
           "killed by SIGKILL; restarting it in 0.1s (restart 1)" in text
    assert "Traceback" not in text
    assert "s3cret" not in text


def test_idle_workers_adopt_a_save_with_the_defaults(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with running("gunicorn", gunicorn_args(log, "-w", "3"), log) as server:
        wait_until(lambda: len(live_readers(name)) == 3, 20, 0.02, "3 workers attached")
        # Each worker lists itself when it attaches, then once more with its thread started.
        wait_until(lambda: all(r.idle_adoption for r in status.collect(
            name, reclaim=False).readers), 10, 0.02, "3 workers adopting while idle")
        atomic_save(source, seq_yaml(1), prefix="")
        wait_until(lambda: status.collect(name, reclaim=False).generation >= 2, 10, 0.02,
                   "the save published")
        # No request reaches any worker: each adopts on its own thread.
        result = subprocess.run(
            [sys.executable, "-m", "shmconf", "status", name, "--wait-for", "2",
             "--timeout", "5"], capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert "all 3 live reader(s) hold generation 2" in result.stdout
        assert server.stop() == 0
    assert nothing_left(name)


def cli(*args: str) -> str:
    """``shmconf ARGS`` in a process of its own; its standard output."""
    return subprocess.run([sys.executable, "-m", "shmconf", *args], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def test_invalid_initial_config_stops_gunicorn_with_the_reason(
    tmp_path: Path, name: str, source: Path
) -> None:
    atomic_save(source, "seq: not-a-number\ncheck: x\n", prefix="")
    log = tmp_path / "gunicorn.log"
    server = start("gunicorn", gunicorn_args(log), log)
    assert server.proc.wait(30) == 1
    output = server.output()
    assert "Error: shmconf publisher for" in output
    assert "seq" in output
    assert "valid integer" in output
    assert "Booting worker" not in output
    assert nothing_left(name)


def test_publisher_stops_and_cleans_up_when_the_master_dies(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with running("gunicorn", gunicorn_args(log, "-w", "1"), log) as server:
        wait_until(lambda: len(live_readers(name)) == 1, 20, 0.02, "a worker")
        workers = sorted(live_readers(name))
        publisher = publisher_pid(name)
        assert publisher is not None
        try:
            server.proc.kill()  # no on_exit: the publisher sees its lifeline close
            server.proc.wait()
            wait_until(lambda: pid_gone(publisher), 10, 0.02, "the orphaned publisher to exit")
            wait_until(lambda: nothing_left(name), 10, 0.02, "its segment to be removed")
        finally:
            kill_quietly(workers)


def test_usr2_upgrade_hands_the_publisher_to_the_new_master(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    pidfile = tmp_path / "gunicorn.pid"
    args = gunicorn_args(log, "-w", "2", "--pid", str(pidfile))
    new_master = 0
    with running("gunicorn", args, log) as server:
        old_master = server.proc.pid
        wait_until(lambda: len(live_readers(name)) == 2, 20, 0.02, "2 workers attached")
        old_workers = live_readers(name)
        publisher = publisher_pid(name)
        assert publisher is not None
        try:
            # USR2: a second master, with workers of its own on the same segment,
            # while the old publisher keeps publishing.
            new_master = _usr2(old_master, pidfile)
            wait_until(lambda: len(live_readers(name)) == 4, 20, 0.02, "the new workers")
            new_workers = live_readers(name) - old_workers
            assert publisher_pid(name) == publisher
            atomic_save(source, seq_yaml(1), prefix="")
            wait_all_workers_serve(server.url, live_readers(name), 1)

            # The old master stops: the segment stays, the standby takes over
            # and continues the generation count.
            generation = status.collect(name, reclaim=False).generation
            os.kill(old_master, signal.SIGTERM)
            assert server.proc.wait(20) == 0
            wait_until(lambda: publisher_pid(name) not in (None, publisher), 10, 0.02,
                       "the standby to take over")
            assert pid_gone(publisher)
            assert live_readers(name) == new_workers
            atomic_save(source, seq_yaml(2), prefix="")
            wait_all_workers_serve(server.url, new_workers, 2)
            assert status.collect(name, reclaim=False).generation > generation
        finally:
            if new_master:
                os.kill(new_master, signal.SIGTERM)
                wait_until(lambda: pid_gone(new_master), 20, 0.02, "the new master to exit")
    wait_until(lambda: nothing_left(name), 10, 0.02, "the segment to be removed")
    assert "Traceback" not in log.read_text()


def test_abandoned_usr2_upgrade_leaves_the_old_master_publishing(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    pidfile = tmp_path / "gunicorn.pid"
    with running("gunicorn", gunicorn_args(log, "-w", "1", "--pid", str(pidfile)), log) as server:
        wait_until(lambda: len(live_readers(name)) == 1, 20, 0.02, "a worker")
        old_workers = live_readers(name)
        publisher = publisher_pid(name)
        new_master = _usr2(server.proc.pid, pidfile)
        try:
            wait_until(lambda: len(live_readers(name)) == 2, 20, 0.02, "the new worker")
        finally:
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: pid_gone(new_master), 20, 0.02, "the new master to exit")
        wait_until(lambda: live_readers(name) == old_workers, 10, 0.02, "the new worker gone")
        assert publisher_pid(name) == publisher
        atomic_save(source, seq_yaml(1), prefix="")
        wait_all_workers_serve(server.url, old_workers, 1)
        assert server.stop() == 0
    assert nothing_left(name)


def _usr2(master: int, pidfile: Path) -> int:
    """``kill -USR2`` the master; the new master's pid (from its ``.2`` pid file)."""
    os.kill(master, signal.SIGUSR2)
    upgraded = Path(f"{pidfile}.2")
    wait_until(lambda: upgraded.exists() and upgraded.read_text().strip(), 20, 0.02,
               "the new master's pid file")
    return int(upgraded.read_text())


def test_documented_example_runs_as_written(tmp_path: Path, name: str) -> None:
    # The log stays out of the app's directory: the publisher watches that one.
    files = write_doc_files(REPO / "docs" / "gunicorn.md", tmp_path / "app")
    assert {"gunicorn.conf.py", "app.py", "settings.py", "app.yaml"} <= set(files)
    log = tmp_path / "gunicorn.log"
    env = {"CONFIG_NAME": name}
    args = ["-c", "gunicorn.conf.py", "app:app", "-b", "127.0.0.1:0"]
    with running("gunicorn", args, log, cwd=tmp_path / "app", env=env) as server, \
            httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/").text == "hello from generation 1\n"
        text = files["app.yaml"].read_text()
        atomic_save(files["app.yaml"], text.replace("greeting: hello", "greeting: bonjour"),
                    prefix="")
        wait_until(lambda: client.get("/").text == "bonjour from generation 2\n", 10, 0.02,
                   "the edit to be served")
        assert server.stop() == 0
    assert nothing_left(name)


# -- the hooks driven directly, as gunicorn's master calls them ---------------------


def test_reload_with_changed_sources_restarts_the_publisher_and_keeps_the_last_good(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, broken = (tmp_path / f"{n}.yaml" for n in ("first", "second", "broken"))
    atomic_save(first, seq_yaml(1), prefix="")
    atomic_save(second, seq_yaml(2), prefix="")
    atomic_save(broken, "seq: [not, an, int]\ncheck: x\n", prefix="")
    model = "tests.apps.models:Seq"
    hooks = ShmconfHooks(name, sources=[first], model=model)
    hooks.on_starting(None)
    reader = shmconf.attach(name)
    try:
        original = hooks.publisher
        assert original is not None
        # HUP with an unchanged config file: the same publisher reloads.
        ShmconfHooks(name, sources=[first], model=model).on_reload(None)
        assert hooks.publisher is original
        assert original.alive
        # HUP after the config file changed the sources: a new publisher,
        # continuing the generation count on the same segment.
        ShmconfHooks(name, sources=[second], model=model).on_reload(None)
        replaced = hooks.publisher
        assert replaced is not None
        assert replaced is not original
        assert not original.alive
        wait_until(lambda: reader.get()["seq"] == 2, 10, 0.01, "the new sources")
        assert reader.generation == 2
        # HUP with sources that do not validate: logged, the last good comes back.
        with caplog.at_level(logging.ERROR, logger="shmconf.integrations.gunicorn"):
            ShmconfHooks(name, sources=[broken], model=model).on_reload(None)
        assert "workers keep the last published config" in caplog.text
        restored = hooks.publisher
        assert restored is not None
        assert restored.alive
        assert restored.spec == replaced.spec
        assert reader.get()["seq"] == 2
        # A publisher that died is started again on the next HUP.
        assert restored.pid is not None
        os.kill(restored.pid, signal.SIGKILL)
        wait_until(lambda: not restored.alive, 10, 0.01, "the publisher to die")
        ShmconfHooks(name, sources=[second], model=model).on_reload(None)
        again = hooks.publisher
        assert again is not None
        assert again.alive
    finally:
        reader.close()
        hooks.on_exit(None)
    assert nothing_left(name)


def test_hooks_refuse_a_model_other_processes_cannot_import(name: str) -> None:
    from pydantic import BaseModel

    class Local(BaseModel):
        x: int

    with pytest.raises(TypeError, match="must be importable"):
        ShmconfHooks(name, sources=["app.yaml"], model=Local)
    with pytest.raises(TypeError, match="unknown Publisher option"):
        ShmconfHooks(name, sources=["app.yaml"], debounse=0.1)
