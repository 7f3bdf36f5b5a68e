"""Two layout versions side by side, as in a `kill -USR2` upgrade.

The old version is the real code of an older layout, taken from git (the
last commit of that layout), run in its own processes beside this tree's code:
old workers keep reading the old objects while new workers read the new
ones, and the new publisher removes the old objects once their last reader
is gone (see the policy in shmconf/protocol/layout.py).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import shmconf
from shmconf.protocol import layout as L
from shmconf.protocol.block import SHM_DIR, other_layout_names
from tests.helpers import REPO, python, wait_until

#: The last commit of each older layout version. Layout 1 named its objects
#: shmconf.NAME, with no version; layout 2 kept the reader table in the anchor.
LAYOUT_COMMITS = {
    1: "7516d37c03c72b6d51c2639ad024fd4db45b1df2",
    2: "cf44ca8f8bc3876c0edc6296ee2280b9aa940018",
    3: "346645487b44ddb7ff5b1a1b37f0b20c1e742376",
}

OLD_PUBLISHER = """
import sys
sys.path.insert(0, sys.argv[1])
import shmconf
publisher = shmconf.Publisher(sys.argv[2])
publisher.publish({"v": "old"})
print(shmconf.__file__, flush=True)
sys.stdin.read()          # until the test closes stdin: the old master exits
publisher.close()
"""

OLD_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
import shmconf
reader = shmconf.attach(sys.argv[2], timeout=10)
for _ in sys.stdin:       # one line in, one read out; EOF: the old worker exits
    print(reader.get()["v"], reader.generation, flush=True)
reader.close()
"""


@pytest.fixture(scope="module", params=sorted(LAYOUT_COMMITS), ids=lambda v: f"layout-{v}")
def old_layout(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """An older layout's version and its shmconf package, extracted from git."""
    version: int = request.param
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", LAYOUT_COMMITS[version], "shmconf"],
            capture_output=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"layout {version} is not in this clone's history ({exc})")
    root = tmp_path_factory.mktemp(f"layout-{version}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return version, root


@pytest.fixture
def old_names(name: str, old_layout: tuple[int, Path]) -> Iterator[list[str]]:
    """Where the old layout keeps ``name``; whatever is left there is removed afterwards."""
    prefix = "shmconf." if old_layout[0] == 1 else f"shmconf-{old_layout[0]}."
    # From layout 3 on, the reader table is an object of its own.
    tables = [f"{prefix}{name}@readers"] if old_layout[0] >= 3 else []
    yield sorted([f"{prefix}{name}", f"{prefix}{name}@1", *tables])
    for shm_name in other_layout_names(name):
        os.unlink(os.path.join(SHM_DIR, shm_name))


def ask(worker: subprocess.Popen[str]) -> tuple[str, int]:
    assert worker.stdin is not None
    assert worker.stdout is not None
    worker.stdin.write("\n")
    worker.stdin.flush()
    value, generation = worker.stdout.readline().split()
    return value, int(generation)


def test_old_and_new_workers_read_their_own_layout_through_an_upgrade(
        old_layout: tuple[int, Path], name: str, old_names: list[str]) -> None:
    old_code = old_layout[1]
    old_publisher = python("-c", OLD_PUBLISHER, str(old_code), name, stdin=subprocess.PIPE)
    old_worker = None
    try:
        assert old_publisher.stdout is not None
        started = old_publisher.stdout.readline()
        assert started.startswith(str(old_code)), old_publisher.stderr
        assert sorted(other_layout_names(name)) == old_names
        old_worker = python("-c", OLD_WORKER, str(old_code), name, stdin=subprocess.PIPE)
        assert ask(old_worker) == ("old", 1)

        # The old master exits; the new one's publisher takes the name over.
        assert old_publisher.stdin is not None
        old_publisher.stdin.close()
        assert old_publisher.wait(timeout=30) == 0
        with shmconf.Publisher(name) as publisher:
            generation = publisher.publish({"v": "new"})
            assert generation == 2  # the count goes on across layouts (the history)
            assert L.anchor_shm_name(name).startswith(f"shmconf-{L.LAYOUT_VERSION}.")
            with shmconf.attach(name) as new_worker:
                assert new_worker.get()["v"] == "new"
            # The old worker still reads its own layout, untouched.
            assert ask(old_worker) == ("old", 1)
            publisher.writer.heartbeat()
            assert sorted(other_layout_names(name)) == old_names  # still mapped

            # The last old worker exits: the next heartbeat removes the old objects.
            assert old_worker.stdin is not None
            old_worker.stdin.close()
            assert old_worker.wait(timeout=30) == 0

            def old_objects_removed() -> bool:
                publisher.writer.heartbeat()
                return not other_layout_names(name)

            wait_until(old_objects_removed, message="old layout's objects removed")
            with shmconf.attach(name) as new_worker:
                assert new_worker.get()["v"] == "new"
            publisher.unlink()
    finally:
        for proc in (old_publisher, old_worker):
            if proc is not None:
                finish(proc)


def test_unlink_removes_every_layout_of_a_name(old_layout: tuple[int, Path], name: str,
                                               old_names: list[str]) -> None:
    old_code = old_layout[1]
    old_publisher = python("-c", OLD_PUBLISHER, str(old_code), name, stdin=subprocess.PIPE)
    try:
        assert old_publisher.stdout is not None
        old_publisher.stdout.readline()
        assert old_publisher.stdin is not None
        old_publisher.stdin.close()
        assert old_publisher.wait(timeout=30) == 0
    finally:
        finish(old_publisher)
    assert sorted(other_layout_names(name)) == old_names
    result = subprocess.run([*python_cli(), "unlink", name], cwd=REPO, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert other_layout_names(name) == []
    assert not os.path.exists(os.path.join(SHM_DIR, L.anchor_shm_name(name)))


def finish(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def python_cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "shmconf"]
