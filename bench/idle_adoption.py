"""Idle adoption: workers that serve no request, a publish, and what it all costs.

32 worker processes attach with idle adoption (``attach(..., idle_adoption=True)``,
what every integration turns on) and then do nothing at all: no ``get()``.
Each stamps ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for the whole
machine) into a shared file mapping from its change callback, which runs on
the adoption thread once it holds the new generation. Measured:

* **publish -> every idle worker holds it**: the parent stamps just before
  ``publisher.publish()`` and reads the workers' stamps; per worker, and the
  last worker of each round.
* **CPU of the idle workers**: their summed CPU time over a quiet minute
  (``/proc/PID/task/*/schedstat``), with idle adoption's thread asleep on the
  wake word; and, side by side, the floor it replaces: the same workers with
  a thread that polls the generation every 100 ms.
"""

from __future__ import annotations

import mmap
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench._common import (
    BenchError,
    Session,
    eprint,
    make_config,
    percentiles,
    proc_run_ns,
    stop_process,
    with_version,
)

WORKERS: Final = 32
#: One stamp per worker: the generation it holds, and when it adopted it.
STAMP: Final = struct.Struct("<QQ")
#: The polling thread of the comparison, as the old ``refresh_interval_s``.
POLL_S: Final = 0.1

WORKER = r"""
import mmap, os, struct, sys, threading, time
from bench._common import set_parent_death_signal
import shmconf

set_parent_death_signal()
name, stamps, index, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(stamps, "r+b") as f:
    shared = mmap.mmap(f.fileno(), 0)
reader = shmconf.attach(name, timeout=30, idle_adoption=mode == "futex")

def stamp(old, new):
    shared[index * 16:index * 16 + 16] = struct.pack("<QQ", reader.generation,
                                                     time.monotonic_ns())

reader.on_change(stamp)
if mode == "poll":
    def poll():
        while True:
            time.sleep(float(sys.argv[5]))
            reader.get()
    threading.Thread(target=poll, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()   # until the parent closes it: no get(), no work
reader.close()
"""


def _start(session: Session, name: str, stamps: Path, count: int, mode: str) -> list[Any]:
    procs = []
    for index in range(count):
        procs.append(session.popen(
            [sys.executable, "-c", WORKER, name, str(stamps), str(index), mode, str(POLL_S)],
            stdin=-1, stdout=-1, stderr=None, env=session.child_env(), text=True))
    for proc in procs:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise BenchError(f"an idle worker did not start: {line!r}")
    return procs


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        stop_process(proc, timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _cpu_percent(procs: list[Any], seconds: float) -> dict[str, float]:
    pids = [proc.pid for proc in procs]
    time.sleep(1.0)  # let the start-up settle
    wall0, run0 = time.monotonic(), sum(proc_run_ns(pid) for pid in pids)
    time.sleep(seconds)
    wall1, run1 = time.monotonic(), sum(proc_run_ns(pid) for pid in pids)
    wall = wall1 - wall0
    return {"seconds": wall, "cpu_ms": (run1 - run0) / 1e6,
            "cpu_percent": (run1 - run0) / 1e9 / wall * 100}


def run(session: Session) -> dict[str, Any]:
    import shmconf

    count = 4 if session.quick else WORKERS
    rounds = 5 if session.quick else 60
    idle_s = 3.0 if session.quick else 60.0
    poll_s = 2.0 if session.quick else 20.0
    name = session.name("idle-adopt")
    stamps = session.path(name, "stamps")
    stamps.write_bytes(bytes(STAMP.size * count))
    config = make_config(4 * 1024)
    publisher = shmconf.Publisher(name)
    session.on_exit(f"unlink {name}", publisher.unlink)
    publisher.publish(with_version(config, 0))
    rng = random.Random(1)
    try:
        procs = _start(session, name, stamps, count, "futex")
        try:
            with open(stamps, "r+b") as f:
                shared = mmap.mmap(f.fileno(), 0)
            try:
                every, last = _propagate(publisher, shared, config, count, rounds, rng)
            finally:
                shared.close()
            futex_cpu = _cpu_percent(procs, idle_s)
        finally:
            _stop(procs)
        procs = _start(session, name, stamps, count, "poll")
        try:
            poll_cpu = _cpu_percent(procs, poll_s)
        finally:
            _stop(procs)
    finally:
        publisher.unlink()
        publisher.close()
    p50, p99, pmax = percentiles(every, len(every), (50, 99, 100))
    l50, l99, lmax = percentiles(last, len(last), (50, 99, 100))
    result = {
        "workers": count, "rounds": rounds,
        "every_p50_ms": p50 / 1e6, "every_p99_ms": p99 / 1e6, "every_max_ms": pmax / 1e6,
        "last_p50_ms": l50 / 1e6, "last_p99_ms": l99 / 1e6, "last_max_ms": lmax / 1e6,
        "futex": futex_cpu, "poll": poll_cpu, "poll_interval_s": POLL_S,
    }
    eprint(f"  {count} idle workers: publish -> all hold it p50 {l50 / 1e6:.2f} ms, "
           f"p99 {l99 / 1e6:.2f} ms; idle CPU {futex_cpu['cpu_percent']:.4f} % "
           f"(polling every {POLL_S:g} s: {poll_cpu['cpu_percent']:.3f} %)")
    return result


def _propagate(publisher: Any, shared: mmap.mmap, config: dict[str, Any], count: int,
               rounds: int, rng: random.Random) -> tuple[list[int], list[int]]:
    every: list[int] = []
    last: list[int] = []
    for version in range(1, rounds + 1):
        start = time.monotonic_ns()
        generation = publisher.publish(with_version(config, version))
        deadline = time.monotonic() + 10.0
        while True:
            stamps = [STAMP.unpack_from(shared, i * STAMP.size) for i in range(count)]
            if all(held >= generation for held, _ in stamps):
                break
            if time.monotonic() > deadline:
                behind = sum(held < generation for held, _ in stamps)
                raise BenchError(f"{behind} idle workers did not adopt generation "
                                 f"{generation} within 10 s")
            time.sleep(0.0005)
        delays = [at - start for _, at in stamps]
        every.extend(delays)
        last.append(max(delays))
        time.sleep(rng.uniform(0.02, 0.05))
    return every, last
