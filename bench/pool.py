"""The parent's side of ``bench.worker``: start reader processes, talk JSON lines to them.

Workers are started once (``sys.executable -m bench.worker``, their own
session, killed when the :class:`~bench._common.Session` ends) and reused
by every measure: starting 32 Python processes costs seconds on a small
machine, and a warm worker only imports what the next alternative needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from typing import Any

from bench._common import BenchError, Session, stop_process


class WorkerDied(BenchError):
    pass


class Worker:
    def __init__(self, session: Session, index: int) -> None:
        self.index = index
        self.log_path = session.path("workers", f"worker-{index}.log")
        with open(self.log_path, "wb") as log:
            self.proc = session.popen(
                [sys.executable, "-m", "bench.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=session.child_env(),
            )
        self._buf = b""
        self.pid = self.proc.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"worker {self.index} died: {self.tail()}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        message = self.poll(timeout)
        if message is None:
            raise BenchError(f"worker {self.index} did not answer in {timeout:.0f} s")
        return message

    def poll(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(max(0.0, left)):
                    return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerDied(f"worker {self.index} exited: {self.tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").strip()[-400:] or "(no output)"
        return "(no log)"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(BenchError):
                self.send({"op": "exit"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
        stop_process(self.proc)


class Pool:
    """Up to N warm workers; a dead one is replaced on the next ``take``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.workers: list[Worker] = []
        self._started = 0
        session.on_exit("reader workers", self.close)

    def take(self, n: int, timeout: float = 60.0) -> list[Worker]:
        """The first ``n`` workers, started (and greeted) as needed."""
        self.workers = [w for w in self.workers if w.alive]
        fresh = [Worker(self.session, self._started + i) for i in range(n - len(self.workers))]
        self._started += len(fresh)
        for worker in fresh:
            hello = worker.recv(timeout)
            if "hello" not in hello:
                raise BenchError(f"worker {worker.index} said {hello!r}")
        self.workers.extend(fresh)
        return self.workers[:n]

    def discard(self, workers: list[Worker]) -> None:
        """Stop workers whose protocol state is unknown (after a failure)."""
        for worker in workers:
            worker.stop()
        self.workers = [w for w in self.workers if w not in workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


def start_all(workers: list[Worker], op: dict[str, Any], specs: list[dict[str, Any]] | None = None,
              timeout: float = 60.0) -> None:
    """Send ``op`` to every worker and wait until all are ready.

    If any fails, the others are told to abort and the first error is raised.
    ``specs`` gives per-worker extra fields (``index`` and so on).
    """
    for i, worker in enumerate(workers):
        worker.send({**op, **(specs[i] if specs else {})})
    errors: list[str] = []
    ready: list[Worker] = []
    for worker in workers:
        try:
            reply = worker.recv(timeout)
        except BenchError as exc:
            errors.append(str(exc))
            continue
        if reply.get("ready"):
            ready.append(worker)
        else:
            errors.append(str(reply.get("error", reply)))
    if errors:
        for worker in ready:
            with contextlib.suppress(BenchError):
                worker.send({"abort": True})
                worker.recv(timeout)
        raise BenchError(errors[0])


def go_all(workers: list[Worker], lead_s: float = 0.05) -> int:
    """Release every ready worker at the same instant, ``lead_s`` from now."""
    start = time.monotonic_ns() + int(lead_s * 1e9)
    for worker in workers:
        worker.send({"go": start})
    return start


def gather(workers: list[Worker], timeout: float) -> list[dict[str, Any]]:
    """One reply from each worker; raises the first error after reading all."""
    replies, errors = [], []
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            reply = worker.recv(max(1.0, deadline - time.monotonic()))
        except BenchError as exc:
            errors.append(str(exc))
            continue
        if "error" in reply:
            errors.append(reply["error"])
        replies.append(reply)
    if errors:
        raise BenchError(errors[0])
    return replies
