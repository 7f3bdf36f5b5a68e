"""Who owns a name: another user's publisher, unlink under a live one, dead ones that linger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import shmconf
from shmconf import status
from shmconf.integrations.gunicorn import ShmconfHooks
from shmconf.protocol import layout as L
from shmconf.protocol.block import SHM_DIR, list_shm_names
from tests.helpers import REPO, python, wait_until


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmconf", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_the_cli_reads_another_users_publisher_with_trusted_owner(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        for shm_name in list_shm_names(name):  # as a service's publisher (User=) made them
            os.chown(os.path.join(SHM_DIR, shm_name), 65534, -1)
        refused = run("status", name)
        assert refused.returncode == 1
        assert "`shmconf --trusted-owner 65534 ...`" in refused.stderr
        # The advice, followed literally.
        shown = run("--trusted-owner", "65534", "status", name)
        assert shown.returncode == 0, shown.stderr
        assert "generation" in shown.stdout
        value = run("--trusted-owner", "nobody", "show", name, "--path", "a")
        assert value.returncode == 0, value.stderr
        assert value.stdout.strip().splitlines()[-1] == "1"
        assert "no such user" in run("--trusted-owner", "no-such-user-x", "status",
                                     name).stderr
        publisher.unlink()


def test_unlink_refuses_under_a_live_publisher_and_force_stops_it(
        name: str, tmp_path: Path) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("a: 1\n")
    proc = python("-m", "shmconf", "publish", name, "-c", str(config))
    reader = None
    try:
        wait_until(lambda: run("status", name).returncode == 0, message="publisher up")
        reader = shmconf.attach(name, idle_adoption=True)
        refused = run("unlink", name)
        assert refused.returncode == 1
        assert "pass --force (the publisher then stops at its next heartbeat)" in refused.stderr
        # The advice, followed literally: the name goes, and so does its publisher
        # (it would otherwise publish into a removed segment beside a new one).
        assert run("unlink", name, "--force").returncode == 0
        assert proc.wait(timeout=10) == 1
        assert "the name was removed (`shmconf unlink`) while this publisher ran" in (
            proc.communicate()[1])
        # The worker attached to the removed name follows the next publisher's.
        with shmconf.Publisher(name) as again:
            generation = again.publish({"a": 2})
            wait_until(lambda: reader is not None and reader.generation == generation, 10,
                       0.01, "the old worker on the new anchor")
            assert reader.get()["a"] == 2
            reader.close()
            again.unlink()
    finally:
        if reader is not None:
            reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert list_shm_names(name) == []


def test_a_symlink_planted_under_a_removed_name_leaves_readers_serving(name: str) -> None:
    publisher = shmconf.Publisher(name)
    publisher.publish({"a": 1})
    reader = shmconf.attach(name)
    planted = os.path.join(SHM_DIR, f"{L.SHM_PREFIX}{name}")
    try:
        publisher.unlink()
        publisher.close()
        os.symlink("/etc/passwd", planted)  # anyone may, in the sticky /dev/shm
        for _ in range(3):
            assert reader.get()["a"] == 1  # the last snapshot, never an OSError
    finally:
        reader.close()
        os.unlink(planted)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_during_a_parse_gets_its_collector_back() -> None:
    import gc

    from shmconf import _gc

    # As if another thread forked while a parse had the collector paused.
    _gc.PAUSING[0] += 1
    gc.disable()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, b"y" if gc.isenabled() else b"n")
        finally:
            os._exit(0)
    _gc.PAUSING[0] -= 1
    gc.enable()
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"y"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_killed_process_that_nobody_reaped_is_dead() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # Exited, not reaped: the pid exists, as a zombie, until waitpid.
        wait_until(lambda: not status.pid_alive(pid), 5, 0.005, "the zombie seen as dead")
        assert os.path.exists(f"/proc/{pid}")
    finally:
        os.waitpid(pid, 0)


def test_hooks_refuse_publisher_options_without_sources(name: str) -> None:
    with pytest.raises(TypeError, match="publisher options debounce but no sources"):
        ShmconfHooks(name, debounce=0.1)
    ShmconfHooks(name, trusted_owner=0)  # a worker's own option is fine


def test_a_broken_source_at_start_names_start_without_source_which_works(
        name: str, tmp_path: Path) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("a: 1\n")
    with shmconf.Publisher(name, [config]) as publisher:
        publisher.reload()
    config.write_text("a: [\n")
    refused = run("publish", name, "-c", str(config))
    assert refused.returncode == 1
    assert "app.yaml:2:1" in refused.stderr
    assert "pass --start-without-source" in refused.stderr
    # The advice, followed literally: the last good version is served meanwhile.
    proc = python("-m", "shmconf", "publish", name, "-c", str(config),
                  "--start-without-source", "--debounce", "20ms")
    try:
        wait_until(lambda: status.collect(name, reclaim=False).publisher_alive, 10, 0.02,
                   "the publisher up")
        assert status.collect(name, reclaim=False).generation == 1
        config.write_text("a: 2\n")
        wait_until(lambda: status.collect(name, reclaim=False).generation == 2, 10, 0.02,
                   "the fixed source published")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert run("unlink", name, "--purge").returncode == 0


def test_an_unlinked_name_is_waited_for_quietly(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    publisher = shmconf.Publisher(name)
    publisher.publish({"a": 1})
    reader = shmconf.attach(name)
    try:
        publisher.unlink()
        publisher.close()
        with caplog.at_level(logging.DEBUG, logger="shmconf.reader"):
            assert reader.get()["a"] == 1  # sees the retirement, finds no new anchor
        assert "unlinked; serving generation 1 until it is published again" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        reader.close()
