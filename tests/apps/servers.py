"""Run real servers in tests: start, find the port, load, stop; and doc examples.

Servers log to a file (never a pipe that nobody reads), bind port 0 and
report the port they got in their log, so no port is ever guessed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import orjson
import pytest

from shmconf import _paths, status
from shmconf.protocol.block import list_shm_names
from tests.apps.models import check_of
from tests.helpers import REPO, atomic_save, wait_until

A = TypeVar("A")

BIN = Path(sys.executable).parent

_LISTENING = {
    "gunicorn": re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)"),
    "uvicorn": re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)"),
}


def gunicorn_extra_args() -> list[str]:
    """Flags for every test gunicorn: no control socket in $HOME (gunicorn >= 25 has one)."""
    from gunicorn.config import KNOWN_SETTINGS

    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        return ["--no-control-socket"]
    return []


@dataclass
class Server:
    """A server process started by a test; ``stop()`` always runs (fixtures)."""

    proc: subprocess.Popen[bytes]
    log: Path
    kind: str
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, timeout: float = 20.0) -> int:
        pattern = _LISTENING[self.kind]

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited {self.proc.returncode}:\n{self.output()}")
            found = pattern.search(self.output())
            if found:
                self.port = int(found.group(1))
            return found is not None

        wait_until(listening, timeout, interval=0.02, message=f"{self.kind} to listen")
        return self.port

    def wait_answering(self, timeout: float = 20.0) -> None:
        """Wait until a request gets an answer (uvicorn logs its port before
        its workers listen on the socket)."""
        with httpx.Client(base_url=self.url, timeout=5.0) as client:

            def answering() -> bool:
                try:
                    client.get("/")
                except httpx.TransportError:
                    return False
                return True

            wait_until(answering, timeout, interval=0.02, message=f"{self.kind} to answer")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.kind} did not stop:\n{self.output()}") from None
        return self.proc.returncode


def start(kind: str, args: Sequence[str], log: Path, *, cwd: Path = REPO,
          env: dict[str, str] | None = None, program: str | None = None) -> Server:
    """Start ``BIN/kind ARGS`` (or ``program ARGS``), stdout and stderr going to ``log``.

    ``kind`` (gunicorn, uvicorn) says which log line announces the port.
    """
    if kind == "gunicorn" and program is None:
        args = [*args, *gunicorn_extra_args()]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [program or str(BIN / kind), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    return Server(proc, log, kind)


@contextlib.contextmanager
def running(kind: str, args: Sequence[str], log: Path, **kwargs: Any) -> Iterator[Server]:
    server = start(kind, args, log, **kwargs)
    try:
        server.wait_listening()
        server.wait_answering()
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def server_source(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch,
                  text: str) -> Path:
    """The servers' config file, holding ``text``; the test apps find it and the name in the env.

    A directory of its own: the publisher watches it, and the server's log
    (written on every request) must not keep the watcher's debounce busy.
    """
    path = tmp_path / "config" / "app.yaml"
    path.parent.mkdir()
    atomic_save(path, text, prefix="")
    monkeypatch.setenv("SHMCONF_TEST_NAME", name)
    monkeypatch.setenv("SHMCONF_TEST_SOURCE", str(path))
    return path


# -- load ------------------------------------------------------------------------


@dataclass
class Load:
    """Client threads that GET ``path`` as fast as the server answers."""

    url: str
    threads: int = 2
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self._take(response)

    def _take(self, response: httpx.Response) -> None:
        """Keep one answer: a 200's JSON body; anything else is a failure."""
        if response.status_code != 200:
            self.failures.append(f"{response.status_code}: {response.text[:200]}")
            return
        self.responses.append(orjson.loads(response.content))

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.threads)]
        for thread in self._workers:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)


def assert_consistent(responses: list[dict[str, Any]]) -> None:
    """Every answer's check belongs to its seq: no worker served a mixed snapshot."""
    bad = [r for r in responses if r["check"] != check_of(r["seq"])]
    assert not bad, f"{len(bad)} inconsistent answers, e.g. {bad[:3]}"


def rewrite_while_loaded(path: Path, render: Callable[[int], str], first: int,
                         count: int, per_second: float = 10.0) -> int:
    """Rewrite ``path`` ``count`` times at ``per_second``; returns the last seq written.

    The pacing is the workload (a config rewritten 10 times a second), not a
    wait for anything: what follows waits on conditions.
    """
    period = 1.0 / per_second
    next_at = time.monotonic()
    seq = first
    for seq in range(first, first + count):
        atomic_save(path, render(seq), prefix="")
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    return seq


def get_json(client: httpx.Client, path: str = "/") -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return dict(orjson.loads(response.content))


def wait_all_workers_serve(url: str, workers: set[int], seq: int, timeout: float = 10.0) -> None:
    """Ask until each pid in ``workers`` has answered with ``seq`` (see ``until_every_worker``)."""

    def served_by(answer: dict[str, Any]) -> int | None:
        if answer["seq"] != seq:
            return None
        assert answer["check"] == check_of(seq)
        return int(answer["pid"])

    until_every_worker(url, workers, get_json, served_by, f"to serve seq {seq}", timeout)


def until_every_worker(url: str, workers: set[int], ask: Callable[[httpx.Client], A],
                       served_by: Callable[[A], int | None], what: str,
                       timeout: float) -> dict[int, A]:
    """Ask until each pid in ``workers`` gave an answer that ``served_by`` names it for.

    Requests go out in concurrent bursts, each on a new connection
    (``Connection: close``): a kept-alive connection stays with one worker,
    and an idle server may hand one client's sequential requests to the same
    worker every time. Busy workers leave the next connections to the others.
    Returns the last such answer of each worker.
    """
    seen: dict[int, A] = {}
    answers: list[A] = []
    deadline = time.monotonic() + timeout
    burst = 2 * max(1, len(workers))
    with httpx.Client(base_url=url, timeout=5.0, headers={"Connection": "close"}) as client, \
            ThreadPoolExecutor(burst) as pool:
        while not workers <= set(seen):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for workers {sorted(workers)} "
                            f"{what}; so far {sorted(seen)}, last answers: {answers[-4:]}")
            answers = list(pool.map(lambda _: ask(client), range(burst)))
            for answer in answers:
                pid = served_by(answer)
                if pid is not None:
                    seen[pid] = answer
    return seen


# -- shmconf state ---------------------------------------------------------------


def live_readers(name: str) -> set[int]:
    """Pids of the live processes in the reader table (the workers)."""
    try:
        state = status.collect(name, reclaim=False)
    except FileNotFoundError:
        return set()
    return {r.pid for r in state.readers if r.alive}


def publisher_pid(name: str) -> int | None:
    try:
        state = status.collect(name, reclaim=False)
    except FileNotFoundError:
        return None
    return state.publisher_pid if state.publisher_alive else None


def nothing_left(name: str) -> bool:
    """No segment of ``name`` in /dev/shm and no lock file."""
    return not list_shm_names(name) and not _paths.lock_path(name).exists()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still has a pid; it is gone for our purposes once it is not running.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return False


def kill_quietly(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- in-process WSGI --------------------------------------------------------------


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(app: Any) -> Iterator[httpx.Client]:
    """Serve a WSGI app on 127.0.0.1 (a free port) on a thread; a client for it."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=5) as c:
            yield c
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- docs ------------------------------------------------------------------------

_BLOCK = re.compile(r"^```(\w+)(?: title=\"([^\"]+)\")?\n(.*?)^```$", re.M | re.S)


def doc_files(doc: Path) -> dict[str, str]:
    """The fenced blocks of a doc that carry a ``title="FILE"``, by file name."""
    return {m.group(2): m.group(3) for m in _BLOCK.finditer(doc.read_text()) if m.group(2)}


def write_doc_files(doc: Path, into: Path) -> dict[str, Path]:
    files = doc_files(doc)
    assert files, f"{doc} has no titled code blocks"
    out = {}
    for name, text in files.items():
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out[name] = path
    return out
