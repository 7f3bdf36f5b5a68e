"""The pool initializer under spawn, fork and forkserver."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import shmconf
from shmconf import status
from shmconf.integrations.multiprocessing import initializer
from tests.apps.servers import nothing_left, write_doc_files
from tests.apps.tasks import read_config
from tests.helpers import REPO, wait_until

START_METHODS = ["spawn", "fork", "forkserver"]
MODEL = "tests.models:Settings"


def config(greeting: str, host: str = "db1") -> dict[str, object]:
    return {"greeting": greeting, "database": {"host": host, "password": "pw-s3cret"}}


@pytest.fixture
def publisher(name: str) -> Iterator[shmconf.Publisher]:
    from tests.models import Settings

    pub = shmconf.Publisher(name, model=Settings)
    pub.publish(config("hello"))
    try:
        yield pub
    finally:
        pub.unlink()


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_workers_read_the_current_config(
    method: str, name: str, publisher: shmconf.Publisher
) -> None:
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(2, initializer=initializer, initargs=(name, MODEL))
    try:
        first = pool.map(read_config, range(4))
        assert {(r["greeting"], r["host"]) for r in first} == {("hello", "db1")}
        assert os.getpid() not in {r["pid"] for r in first}
        publisher.publish(config("bonjour", "db2"))
        # Long-lived workers switch when their adoption thread has the new version
        # (milliseconds after the publish; a read before that sees the previous one).
        wait_until(lambda: all(r.generation == 2 for r in status.collect(
            name, reclaim=False).readers if r.alive), 10, 0.005, "the workers adopted")
        second = pool.map(read_config, range(4))
        assert {(r["greeting"], r["host"], r["generation"]) for r in second} == {
            ("bonjour", "db2", 2)
        }
        workers = {r["pid"] for r in first + second}
        listed = {r.pid for r in status.collect(name, reclaim=False).readers}
        assert workers <= listed
    finally:
        pool.close()
        pool.join()
    # Workers that exited normally freed their reader-table entries.
    assert not workers & {r.pid for r in status.collect(name, reclaim=False).readers}


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor(method: str, name: str, publisher: shmconf.Publisher) -> None:
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=initializer,
                             initargs=(name, MODEL)) as executor:
        results = list(executor.map(read_config, range(4)))
    assert {r["greeting"] for r in results} == {"hello"}


def test_forked_worker_reuses_the_parents_reader(name: str, publisher: shmconf.Publisher) -> None:
    from tests.models import Settings

    reader = shmconf.attach(name, model=Settings)
    shmconf.set_reader(reader)
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1, initializer=initializer, initargs=(name,)) as pool:
            (result,) = pool.map(read_config, [0])
        assert result["greeting"] == "hello"
        assert result["pid"] != os.getpid()
    finally:
        shmconf.set_reader(None)
        reader.close()


def test_a_worker_that_cannot_attach_says_why(
    name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=initializer,
                             initargs=(name, None, 0.2)) as executor:
        future = executor.submit(read_config)
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=30)
    assert f"config {name!r} not available after 0.2s" in capfd.readouterr().err


@pytest.mark.parametrize("method", START_METHODS)
def test_documented_example_runs_as_written(method: str, tmp_path: Path, name: str) -> None:
    write_doc_files(REPO / "docs" / "multiprocessing.md", tmp_path)
    result = subprocess.run(
        [sys.executable, "jobs.py", method], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, "CONFIG_NAME": name,
                                      },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pool: [3, 6, 9]\nexecutor: [3, 6, 9]\n"
    assert nothing_left(name)
