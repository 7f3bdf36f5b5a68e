"""ASGI: uvicorn --workers and gunicorn with uvicorn workers, plus the lifespan protocol."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import shmconf
from shmconf import status
from shmconf.integrations.process import PublisherProcess
from shmconf.integrations.uvicorn import lifespan
from tests.apps.models import seq_yaml
from tests.apps.servers import (
    Load,
    assert_consistent,
    live_readers,
    nothing_left,
    rewrite_while_loaded,
    running,
    wait_all_workers_serve,
    write_doc_files,
)
from tests.helpers import REPO, atomic_save, wait_until


@pytest.fixture
def publisher(name: str, source: Path) -> Iterator[PublisherProcess]:
    process = PublisherProcess(name, [source], "tests.apps.models:Seq", debounce=0.02)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def load_and_rewrite(url: str, name: str, source: Path, workers: int) -> None:
    wait_until(lambda: len(live_readers(name)) == workers, 20, 0.02, f"{workers} workers")
    with Load(url, threads=2) as load:
        last = rewrite_while_loaded(source, seq_yaml, 1, 30)
        wait_all_workers_serve(url, live_readers(name), last)
    assert not load.failures, load.failures[:5]
    assert len(load.responses) > 50
    assert_consistent(load.responses)
    assert max(r["seq"] for r in load.responses) == last


@pytest.mark.slow
def test_uvicorn_workers_under_load(
    tmp_path: Path, name: str, source: Path, publisher: PublisherProcess
) -> None:
    log = tmp_path / "uvicorn.log"
    args = ["tests.apps.seqapp:asgi", "--workers", "2", "--host", "127.0.0.1", "--port", "0"]
    with running("uvicorn", args, log) as server:
        load_and_rewrite(server.url, name, source, workers=2)
        with httpx.Client(base_url=server.url, timeout=5) as client:
            view = client.get("/debug/config").json()
        assert view["config"]["token"] == "**********"
        assert server.stop() == 0
    # Lifespan shutdown closed each worker's reader: their entries are free, not dead.
    assert status.collect(name, reclaim=False).readers == []
    publisher.stop()
    assert nothing_left(name)


def test_killed_publisher_of_the_launcher_is_restarted(
    tmp_path: Path, name: str, source: Path, publisher: PublisherProcess
) -> None:
    log = tmp_path / "uvicorn.log"
    args = ["tests.apps.seqapp:asgi", "--workers", "2", "--host", "127.0.0.1", "--port", "0"]
    with running("uvicorn", args, log) as server:
        wait_until(lambda: len(live_readers(name)) == 2, 20, 0.02, "2 workers")
        workers = live_readers(name)
        first = status.collect(name, reclaim=False).publisher_pid
        assert first is not None
        assert first != publisher.pid  # the launcher's child is the supervisor
        os.kill(first, signal.SIGKILL)
        wait_all_workers_serve(server.url, workers, 0)  # the last good config, meanwhile
        wait_until(lambda: (s := status.collect(name, reclaim=False)).publisher_alive
                   and s.publisher_pid != first, 10, 0.02, "a new publisher")
        supervisor = status.collect(name, reclaim=False).supervisor
        assert supervisor["restarts"] == 1
        assert supervisor["last_exit"] == "killed by SIGKILL"
        assert publisher.alive
        wait_until(lambda: status.collect(name, reclaim=False).supervisor.get("state")
                   == "serving", 10, 0.02, "the supervisor to report it serving")
        atomic_save(source, seq_yaml(1), prefix="")
        wait_all_workers_serve(server.url, workers, 1)
        assert server.stop() == 0
    publisher.stop()
    assert nothing_left(name)


def test_idle_uvicorn_workers_adopt_a_save_with_the_defaults(
    tmp_path: Path, name: str, source: Path, publisher: PublisherProcess
) -> None:
    log = tmp_path / "uvicorn.log"
    args = ["tests.apps.seqapp:asgi", "--workers", "2", "--host", "127.0.0.1", "--port", "0"]
    with running("uvicorn", args, log) as server:
        wait_until(lambda: len(live_readers(name)) == 2, 20, 0.02, "2 workers")
        before = status.collect(name, reclaim=False).generation
        atomic_save(source, seq_yaml(1), prefix="")
        wait_until(lambda: status.collect(name, reclaim=False).generation > before, 10, 0.02,
                   "the save published")
        # No request: the workers' adoption threads take the new version.
        result = subprocess.run(
            [sys.executable, "-m", "shmconf", "status", name, "--wait-for", str(before + 1),
             "--timeout", "5", "--json"], capture_output=True, text=True, timeout=30,
            check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert server.stop() == 0
    publisher.stop()
    assert nothing_left(name)


def uvicorn_worker_class() -> str:
    """The ``uvicorn-worker`` package's worker; uvicorn's own (deprecated) without it."""
    try:
        import uvicorn_worker  # noqa: F401 - only whether it is installed
    except ImportError:
        return "uvicorn.workers.UvicornWorker"
    return "uvicorn_worker.UvicornWorker"


@pytest.mark.slow
def test_gunicorn_with_uvicorn_workers_under_load(
    tmp_path: Path, name: str, source: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    args = ["-c", "tests/apps/gunicorn_conf.py", "-b", "127.0.0.1:0", "-w", "2",
            "-k", uvicorn_worker_class(), "tests.apps.seqapp:asgi"]
    with running("gunicorn", args, log) as server:
        load_and_rewrite(server.url, name, source, workers=2)
        assert server.stop() == 0
    assert nothing_left(name)


def test_documented_example_runs_as_written(tmp_path: Path, name: str) -> None:
    # The log stays out of the app's directory: the publisher watches that one.
    files = write_doc_files(REPO / "docs" / "uvicorn.md", tmp_path / "app")
    assert {"settings.py", "app.yaml", "app.py", "serve.py"} <= set(files)
    log = tmp_path / "serve.log"
    env = {"CONFIG_NAME": name, "PORT": "0"}
    with running("uvicorn", ["serve.py"], log, cwd=tmp_path / "app", env=env,
                 program=sys.executable) as server, \
            httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/").text.startswith("hello (feature_x=False, pid ")
        text = files["app.yaml"].read_text()
        atomic_save(files["app.yaml"], text.replace("feature_x: false", "feature_x: true"),
                    prefix="")
        wait_until(lambda: "feature_x=True" in client.get("/").text, 10, 0.02, "the edit")
        assert server.stop() == 0
    assert nothing_left(name)


# -- the lifespan protocol, in this process ----------------------------------------


class Lifespan:
    """Drive an ASGI app's lifespan the way a server does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[dict[str, Any]] = []

    async def run(self) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def send(message: Any) -> None:
            self.sent.append(message)
            if message["type"] == "lifespan.startup.complete":
                await inbox.put({"type": "lifespan.shutdown"})

        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


async def http_get(app: Any) -> bytes:
    body: list[bytes] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        body.append(message.get("body", b""))

    await app({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)
    return b"".join(body)


def test_lifespan_runs_the_apps_own_lifespan_after_attaching(name: str) -> None:
    events: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        events.append(f"startup sees {shmconf.current()['v']}")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        events.append("shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    with shmconf.Publisher(name) as pub:
        pub.publish({"v": 1})
        driver = Lifespan(lifespan(inner, name))
        asyncio.run(driver.run())
        assert driver.types() == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert events == ["startup sees 1", "shutdown"]
        with pytest.raises(shmconf.NotAttachedError):
            shmconf.current()  # closed at shutdown
        pub.unlink()


def test_lifespan_startup_fails_with_the_reason_when_nothing_is_published(name: str) -> None:
    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    driver = Lifespan(lifespan(inner, name, timeout=0.1))
    asyncio.run(driver.run())
    assert driver.types() == ["lifespan.startup.failed"]
    assert "no segment" in driver.sent[0]["message"]


def test_each_request_keeps_the_snapshot_it_started_with(name: str) -> None:
    with shmconf.Publisher(name) as pub:
        pub.publish({"v": 1})

        async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            before = shmconf.current()["v"]
            pub.publish({"v": before + 1})  # a publish in the middle of the request
            after = shmconf.current()["v"]
            await send({"type": "http.response.body", "body": f"{before}->{after}".encode()})

        app = lifespan(inner, name)

        async def serve() -> list[bytes]:
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            await inbox.put({"type": "lifespan.startup"})
            started = asyncio.Event()

            async def send(message: Any) -> None:
                if message["type"] == "lifespan.startup.complete":
                    started.set()

            task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, send))
            await started.wait()
            bodies = [await http_get(app)]
            # The worker switches when its adoption thread has the new version
            # (milliseconds); work that starts before that sees the previous one.
            reader = shmconf.current_reader()
            deadline = asyncio.get_running_loop().time() + 5
            while reader.generation < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.001)
            bodies.append(await http_get(app))
            await inbox.put({"type": "lifespan.shutdown"})
            await task
            return bodies

        assert asyncio.run(serve()) == [b"1->1", b"2->2"]
        pub.unlink()


def test_uvicorn_exits_non_zero_when_a_worker_cannot_attach(tmp_path: Path, name: str) -> None:
    (tmp_path / "unattached.py").write_text(
        "from shmconf.integrations.uvicorn import lifespan\n"
        "async def app(scope, receive, send):\n    pass\n"
        f"app = lifespan(app, {name!r}, timeout=0.2)\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "unattached:app", "--port", "0"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert f"config {name!r} not available after 0.2s" in result.stderr
    assert "Application startup failed" in result.stderr
