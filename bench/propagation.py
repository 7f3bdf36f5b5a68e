"""Propagation: from a change being made to every reader process holding it.

Reader processes poll ``read()`` with a 1 ms sleep between polls, as a real
worker reads between requests (32 processes spinning flat out on a small
machine would measure the scheduler, not the alternative), and stamp
``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for the whole machine)
into a shared file mapping the first time they see each version. The
parent stamps just before making the change and waits until every reader
holds it; after a random 10-20 ms pause it makes the next one.

shmconf is measured twice: ``publisher.publish(mapping)`` in this process,
and a file save picked up by a publisher service (``serve_forever`` on a
YAML file, debounce 50 ms) running as its own process.
"""

from __future__ import annotations

import mmap
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import pool as workers
from bench._common import (
    BenchError,
    Session,
    eprint,
    make_config,
    percentiles,
    stop_process,
    with_version,
    write_atomic,
)
from bench.alternatives import ALTERNATIVES
from bench.read_latency import CONFIG_BYTES

#: Sleep between two polls of a reader.
POLL_S = 0.001
#: Debounce of the publisher service in the file-save measure.
DEBOUNCE_MS = 50
#: Give up on a round after this long.
ROUND_TIMEOUT_S = 10.0


def start_service(session: Session, name: str, source: Path,
                  debounce_ms: int = DEBOUNCE_MS) -> subprocess.Popen[Any]:
    """A publisher service on ``source`` in its own process; returns once it published."""
    import shmconf

    log_path = session.path("services", f"{name}.log")
    with open(log_path, "wb") as log:
        proc = session.popen(
            [sys.executable, "-m", "bench.worker", "serve", name, str(source), str(debounce_ms)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=session.child_env(),
        )
    try:
        reader = shmconf.attach(name, timeout=30.0, register=False)
    except shmconf.ShmconfError:
        stop_process(proc)
        raise BenchError(f"publisher service did not publish: "
                         f"{log_path.read_text(errors='replace')[-400:]}") from None
    reader.close()
    return proc


def yaml_versions(config: dict[str, Any]) -> Callable[[int], bytes]:
    """YAML text of ``config`` with ``version: V`` first."""
    import yaml

    body = yaml.safe_dump({k: v for k, v in config.items() if k != "version"},
                          sort_keys=False).encode()
    return lambda version: b"version: %d\n" % version + body


def _measure(session: Session, procs: list[workers.Worker], spec: dict[str, Any],
             change: Callable[[int], None], rounds: int, seed: int) -> dict[str, Any]:
    n = len(procs)
    path = session.path("stamps", f"{session.name('stamps')}.bin")
    path.write_bytes(bytes(8 * (1 + n * (rounds + 1))))
    op = {"op": "propagate", "spec": spec, "rounds": rounds, "poll_s": POLL_S,
          "stamps": str(path)}
    workers.start_all(procs, op, specs=[{"index": i} for i in range(n)])
    with open(path, "r+b") as f:
        mapping = mmap.mmap(f.fileno(), 0)
    stamps = memoryview(mapping).cast("q")
    rng = random.Random(seed)
    all_hold: list[float] = []
    each: list[float] = []
    timeouts = 0
    replies: list[dict[str, Any]] = []
    try:
        time.sleep(0.05)
        for version in range(1, rounds + 1):
            slots = [1 + i * (rounds + 1) + version for i in range(n)]
            t0 = time.monotonic_ns()
            change(version)
            deadline = t0 + int(ROUND_TIMEOUT_S * 1e9)
            while True:
                seen = [stamps[s] for s in slots]
                if all(seen):
                    all_hold.append((max(seen) - t0) / 1e6)
                    each.extend((s - t0) / 1e6 for s in seen)
                    break
                if time.monotonic_ns() > deadline:
                    timeouts += 1
                    break
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.01, 0.02))
    finally:
        stamps[0] = 1
        try:
            replies = workers.gather(procs, 30)
        finally:
            stamps.release()
            mapping.close()
            path.unlink()
    p50, p99, top = percentiles(all_hold, len(all_hold), [50, 99, 100])
    (each_p50,) = percentiles(each, len(each), [50])
    return {"readers": n, "rounds": rounds, "p50_ms": p50, "p99_ms": p99, "max_ms": top,
            "each_p50_ms": each_p50, "timeouts": timeouts,
            "read_errors": sum(r.get("errors", 0) for r in replies)}


def run(session: Session, pool: workers.Pool) -> dict[str, Any]:
    quick = session.quick
    counts = [4] if quick else [4, 32]
    rounds = 8 if quick else 100
    file_rounds = 4 if quick else 100
    config = make_config(CONFIG_BYTES)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for n in counts:
        procs = pool.take(n)
        cases: list[tuple[str, Any]] = [(cls.key, cls) for cls in ALTERNATIVES if cls.shared]
        cases.insert(1, ("shmconf-file", None))
        for key, cls in cases:
            try:
                if cls is None:
                    row = _file_save(session, procs, config, file_rounds, n)
                else:
                    owner = cls(session)
                    try:
                        owner.setup(with_version(config, 0))
                        row = _measure(session, procs, owner.spec(),
                                       lambda v, o=owner: o.update(with_version(config, v)),
                                       rounds, n)
                    finally:
                        owner.teardown()
            except Exception as exc:
                reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
                errors[f"{key}/{n}"] = reason
                eprint(f"  propagation: {key}, {n} readers failed: {reason}")
                pool.discard(procs)
                procs = pool.take(n)
                continue
            row["alt"] = key
            rows.append(row)
            eprint(f"  propagation: {key}, {n} readers: p50 {row['p50_ms']:.2f} ms, "
                   f"p99 {row['p99_ms']:.2f} ms")
    return {"counts": counts, "poll_ms": POLL_S * 1000, "debounce_ms": DEBOUNCE_MS,
            "config_bytes": CONFIG_BYTES, "rows": rows, "errors": errors}


def _file_save(session: Session, procs: list[workers.Worker], config: dict[str, Any],
               rounds: int, seed: int) -> dict[str, Any]:
    """File save (atomic rename, as editors do) -> publisher service -> every reader."""
    name = session.name("filesave")
    source = session.path(name, "config.yaml")
    text = yaml_versions(config)
    write_atomic(source, text(0))
    service = start_service(session, name, source)
    try:
        return _measure(session, procs, {"kind": "shmconf", "name": name},
                        lambda v: write_atomic(source, text(v)), rounds, seed)
    finally:
        stop_process(service, timeout=10)
