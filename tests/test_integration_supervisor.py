"""The supervisor between a master and its publisher: restarts, backoff, what status shows."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import shmconf
from shmconf import status
from shmconf.integrations.process import PublisherProcess
from shmconf.integrations.supervisor import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STABLE_S,
    exit_reason,
    next_backoff,
)
from tests.apps.servers import nothing_left, pid_gone
from tests.helpers import atomic_save, wait_until


def supervisor(name: str) -> dict[str, Any]:
    return status.collect(name, reclaim=False).supervisor


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    pauses = [next_backoff(None, 0.0)]
    for _ in range(10):
        pauses.append(next_backoff(pauses[-1], 0.5))
    assert pauses[:4] == [BACKOFF_FIRST_S, 0.2, 0.4, 0.8]
    assert max(pauses) == pauses[-1] == BACKOFF_MAX_S
    assert next_backoff(BACKOFF_MAX_S, STABLE_S) == BACKOFF_FIRST_S


def test_exit_reasons_name_the_signal_or_the_status() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(1) == "exited with status 1"


def test_a_crash_loop_backs_off_stays_visible_and_recovers(name: str, config: Path) -> None:
    process = PublisherProcess(name, [config], debounce=0.02)
    assert process.start() == 1
    reader = shmconf.attach(name)
    try:
        first = status.collect(name, reclaim=False).publisher_pid
        assert first is not None
        assert first != process.pid
        # Every restarted publisher now fails its initial publish and exits 1.
        atomic_save(config, "v: [unclosed\n")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: supervisor(name).get("restarts", 0) >= 3, 20, 0.02, "a crash loop")
        found = supervisor(name)
        assert found["alive"]
        assert found["state"] in ("backoff", "restarting")
        assert found["last_exit"].startswith("exited with status 1: ")
        assert "app.yaml" in found["last_exit"]  # the reason, with the file
        assert found["backoff_s"] >= 0.4
        assert not status.collect(name, reclaim=False).publisher_alive
        assert process.alive  # the master's child is the supervisor: it stays
        assert reader.get() == {"v": 0}  # workers keep the last good config

        atomic_save(config, "v: 1\n")
        wait_until(lambda: supervisor(name).get("state") == "serving", 20, 0.02,
                   "the next restart to serve")
        wait_until(lambda: reader.get() == {"v": 1}, 10, 0.01, "the fixed config")
        assert status.collect(name, reclaim=False).publisher_alive
        assert reader.generation == 2  # the count continued
    finally:
        reader.close()
        process.stop()
    assert nothing_left(name)


def test_stop_ends_the_supervisor_and_its_publisher(name: str, config: Path) -> None:
    process = PublisherProcess(name, [config])
    process.start()
    publisher = status.collect(name, reclaim=False).publisher_pid
    supervisor_pid = process.pid
    assert publisher is not None
    assert supervisor_pid is not None
    process.stop()
    assert pid_gone(publisher)
    assert pid_gone(supervisor_pid)
    assert nothing_left(name)
    # The supervisor removed its own state file.
    assert not (Path(os.environ["SHMCONF_RUNTIME_DIR"]) / name / status.SUPERVISOR_FILE).exists()
