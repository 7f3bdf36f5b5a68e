"""A reader process for the multi-process measures: ``python -m bench.worker``.

It speaks JSON lines: one request per line on stdin, one reply per line on
its original stdout (anything a library prints goes to stderr instead).
Nothing is pickled. A request names an ``op``; ops with a synchronized
start reply ``{"ready": true}`` once attached and warm, wait for
``{"go": START_NS}`` (or ``{"abort": true}``) and then reply with their
result. Any failure replies ``{"error": "..."}`` and the worker stays usable.

``python -m bench.worker serve NAME FILE DEBOUNCE_MS`` instead runs a
publisher service on a file source until SIGTERM, then unlinks the segment.

The kernel kills a worker whose parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from bench._common import (
    compile_loops,
    latency_stats,
    proc_memory,
    sample_buffer,
    set_parent_death_signal,
    timer_overhead_ns,
)


class Channel:
    """JSON lines: requests on stdin, replies on a private copy of stdout."""

    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()

    def recv(self) -> dict[str, Any] | None:
        line = sys.stdin.readline()
        if not line:
            return None
        return json.loads(line)  # type: ignore[no-any-return]


class Aborted(Exception):
    """The parent called the synchronized start off."""


def _ready_then_go(chan: Channel) -> int:
    """Say ready, wait for go; returns the start time (monotonic ns), reached on return."""
    chan.send({"ready": True})
    message = chan.recv()
    if message is None or message.get("abort") or "go" not in message:
        raise Aborted
    start: int = message["go"]
    while (left := start - time.monotonic_ns()) > 0:
        time.sleep(min(left / 1e9, 0.01) if left > 2_000_000 else 0)
    return start


def op_throughput(msg: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """Reads per second of one alternative for a fixed duration."""
    from bench.alternatives import open_reader

    alt = open_reader(msg["spec"])
    try:
        stmt, namespace = alt.read_stmt()
        batch, _ = compile_loops(stmt, namespace)
        size = 1
        while batch(size) < 2_000_000 and size < 1 << 20:  # a batch of about 2 ms
            size *= 2
        start = _ready_then_go(chan)
        end = start + int(msg["duration_s"] * 1e9)
        reads = 0
        begun = time.monotonic_ns()
        while True:
            batch(size)
            reads += size
            now = time.monotonic_ns()
            if now >= end:
                break
        return {"reads": reads, "elapsed_s": (now - begun) / 1e9, "pid": os.getpid()}
    finally:
        alt.close()


def op_propagate(msg: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """Poll read() with a short sleep; stamp when each version is first seen.

    The stamps go into a file mapping shared with the parent: word 0 is the
    stop flag, then ``rounds + 1`` words per reader (index 0 unused).
    """
    from bench.alternatives import open_reader

    alt = open_reader(msg["spec"])
    rounds: int = msg["rounds"]
    base = 1 + msg["index"] * (rounds + 1)
    poll_s: float = msg["poll_s"]
    fd = os.open(msg["stamps"], os.O_RDWR)
    try:
        mapping = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    stamps = memoryview(mapping).cast("q")
    errors = polls = 0
    try:
        read = alt.read
        now = time.monotonic_ns
        sleep = time.sleep
        last = -1
        chan.send({"ready": True})
        while not stamps[0]:
            try:
                version = read()["version"]
            except Exception:
                errors += 1
                version = last
            polls += 1
            if version != last:
                if 0 < version <= rounds and not stamps[base + version]:
                    stamps[base + version] = now()
                last = version
            sleep(poll_s)
        return {"errors": errors, "polls": polls}
    finally:
        stamps.release()
        mapping.close()
        alt.close()


def op_latency(msg: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """Single-read latency for a fixed duration while the parent keeps updating."""
    from bench.alternatives import open_reader

    retries = _count_retries() if msg["spec"]["kind"] == "shmconf" else None
    alt = open_reader(msg["spec"])
    try:
        stmt, namespace = alt.read_stmt()
        _, sample = compile_loops(stmt, namespace)
        overhead = timer_overhead_ns()
        max_samples: int = msg["max_samples"]
        buf = sample_buffer(max_samples)
        sample(buf, min(max_samples, 2000), time.perf_counter_ns() + 10**8)  # warm up
        first = _version(alt)
        _ready_then_go(chan)
        begun = time.perf_counter_ns()
        n, errors = sample(buf, max_samples, begun + int(msg["duration_s"] * 1e9))
        elapsed = (time.perf_counter_ns() - begun) / 1e9
        stats = latency_stats(buf, n, overhead)
        stats.update(errors=errors, elapsed_s=elapsed, overhead_ns=overhead,
                     versions_seen=_version(alt) - first,
                     retries=retries[0] if retries is not None else None)
        return stats
    finally:
        alt.close()


def _count_retries() -> list[int]:
    """Count the reader's retries (its only way to wait for the writer) from now on.

    ``Reader._read_slot`` calls the module's ``_backoff`` before every attempt
    after the first; wrapping it counts them without touching the fast path.
    """
    from shmconf import reader as module
    count = [0]
    original = module._backoff

    def counting(attempt: int) -> None:
        count[0] += 1
        original(attempt)

    module._backoff = counting
    return count


def _version(alt: Any) -> int:
    for _ in range(100):
        try:
            return int(alt.read()["version"])
        except Exception:  # a torn read of an unlocked alternative; try again
            time.sleep(0.001)
    return -1


def op_memory(msg: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """RSS/PSS/USS of this process before and after attaching and reading once."""
    import shmconf
    from bench._common import settings_model

    model = settings_model() if msg["model"] else None
    gc.collect()
    before = proc_memory()
    reader = shmconf.attach(msg["name"], model=model, timeout=10.0)
    config = reader.get()
    gc.collect()
    after = proc_memory()
    generation = reader.generation
    del config
    reader.close()
    return {"before": before, "after": after, "generation": generation}


def op_soak(msg: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """Bursts of get() with a 1 ms pause, until the stop file appears."""
    import shmconf

    reader = shmconf.attach(msg["name"], timeout=10.0)
    stop = msg["stop"]
    reads = adopted = errors = 0
    try:
        _ready_then_go(chan)
        get = reader.get
        last = reader.generation
        check_at = time.monotonic() + 0.1
        while True:
            for _ in range(200):
                try:
                    get()
                except Exception:
                    errors += 1
            reads += 200
            if reader.generation != last:
                adopted += 1
                last = reader.generation
            time.sleep(0.001)
            if time.monotonic() >= check_at:
                if os.path.exists(stop):
                    break
                check_at = time.monotonic() + 0.1
        reader.get()
        return {"pid": os.getpid(), "reads": reads, "adopted": adopted, "errors": errors,
                "generation": reader.generation}
    finally:
        reader.close()


OPS: dict[str, Callable[[dict[str, Any], Channel], dict[str, Any]]] = {
    "throughput": op_throughput,
    "propagate": op_propagate,
    "latency": op_latency,
    "memory": op_memory,
    "soak": op_soak,
}


def serve(argv: list[str]) -> int:
    """A publisher service on one file source, as ``shmconf publish`` runs it."""
    import logging

    import shmconf

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    set_parent_death_signal(signal.SIGTERM)  # stop, and unlink, if the harness dies
    name, source, debounce_ms = argv[0], argv[1], int(argv[2])
    publisher = shmconf.Publisher(name, sources=[source], debounce=debounce_ms / 1000)
    try:
        publisher.serve_forever()
    finally:
        publisher.unlink()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    chan = Channel()
    chan.send({"hello": os.getpid()})
    while True:
        message = chan.recv()
        if message is None or message.get("op") == "exit":
            return 0
        if "op" not in message:  # a stray go/abort after a failed op
            continue
        try:
            reply = OPS[message["op"]](message, chan)
        except Aborted:
            reply = {"aborted": True}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        chan.send(reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
