"""The first request after a publish, in a real gunicorn worker, against steady state.

A publisher in this process; gunicorn (2 sync workers) whose workers attach
with ``ShmconfHooks`` and whose app reads the config on every request. For
each config size, with idle adoption off and on:

* **steady state**: a request every 30-60 ms while nothing changes, first
  (the same pacing as below: a worker that slept in ``accept`` for that long
  answers slower than one kept busy, so back-to-back requests, also
  reported, are no baseline for a request after a pause);
* **first request after a publish**: the publish returns, and the next
  request is sent at once: without idle adoption its worker adopts the new
  generation inside that request (the copy, the parse, the freeze); with it,
  the worker's adoption thread has started on the same work, and the request
  waits for the GIL for whatever is left of it (orjson holds the GIL for a
  whole parse). Then, a publish every 30-60 ms (100 ms more for 1 MB), each
  followed at once by one request.

Latencies are measured by the client (this process), new connection per
request, as gunicorn's sync workers close each one.
"""

from __future__ import annotations

import http.client
import os
import random
import sys
import time
from typing import Any

from bench._common import (
    KIB,
    MIB,
    BenchError,
    Session,
    eprint,
    make_config,
    percentiles,
    size_label,
    stop_process,
    with_version,
)

SIZES = (4 * KIB, 64 * KIB, MIB)
#: (steady requests, publishes) per size, full and quick.
COUNTS = {4 * KIB: (300, 200), 64 * KIB: (300, 200), MIB: (100, 60)}
QUICK_COUNTS = {4 * KIB: (40, 10), 64 * KIB: (40, 10), MIB: (20, 4)}


def _request(port: int) -> tuple[int, int]:
    """One GET; ``(latency ns, version served)``."""
    t0 = time.perf_counter_ns()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    elapsed = time.perf_counter_ns() - t0
    if response.status != 200:
        raise BenchError(f"gunicorn answered {response.status}: {body[:200]!r}")
    return elapsed, int(body)


def _start_gunicorn(session: Session, name: str, idle: bool) -> tuple[Any, int]:
    log = session.path("services", f"{name}-gunicorn.log")
    env = {**session.child_env(), "SHMCONF_BENCH_NAME": name,
           "SHMCONF_BENCH_IDLE": "1" if idle else "0"}
    with open(log, "wb") as out:
        proc = session.popen(
            [sys.executable, "-m", "gunicorn", "-c", "bench/apps/first_request_conf.py",
             "-b", "127.0.0.1:0", "-w", "2", "bench.apps.first_request_app:app"],
            stdin=-3, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        marker = "Listening at: http://127.0.0.1:"
        if marker in text and text.count("Booting worker") >= 2:
            port = int(text.split(marker, 1)[1].split()[0])
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(proc)
    raise BenchError(f"gunicorn did not start: {log.read_text(errors='replace')[-500:]}")


def _one(session: Session, size: int, idle: bool, rng: random.Random) -> dict[str, Any]:
    import shmconf

    steady_n, publishes = (QUICK_COUNTS if session.quick else COUNTS)[size]
    name = session.name("firstreq")
    config = make_config(size)
    publisher = shmconf.Publisher(name)
    publisher.publish(with_version(config, 0))
    try:
        proc, port = _start_gunicorn(session, name, idle)
        try:
            for _ in range(50):
                _request(port)  # both workers attached and warm
            busy = [_request(port)[0] for _ in range(steady_n)]
            # Steady: nothing is published meanwhile. (Interleaved with the
            # publishes it would not be: without idle adoption, the request
            # after a first one may be the other worker's first.)
            steady = []
            for _ in range(publishes):
                time.sleep(rng.uniform(0.03, 0.06))
                steady.append(_request(port)[0])
            first = []
            for version in range(1, publishes + 1):
                # Both workers settle on the last one (a 1 MB parse is ~20 ms).
                time.sleep(rng.uniform(0.03, 0.06) + (0.1 if size >= MIB else 0.0))
                publisher.publish(with_version(config, version))
                first.append(_request(port)[0])
        finally:
            stop_process(proc, timeout=10)
    finally:
        publisher.unlink()
        publisher.close()
    s50, s99 = percentiles(steady, len(steady), (50, 99))
    b50, b99 = percentiles(busy, len(busy), (50, 99))
    f50, f99, fmax = percentiles(first, len(first), (50, 99, 100))
    return {"steady_p50_ms": s50 / 1e6, "steady_p99_ms": s99 / 1e6,
            "busy_p50_ms": b50 / 1e6, "busy_p99_ms": b99 / 1e6,
            "first_p50_ms": f50 / 1e6, "first_p99_ms": f99 / 1e6, "first_max_ms": fmax / 1e6,
            "ratio_p99": f99 / s99, "publishes": publishes, "busy": steady_n}


def run(session: Session) -> dict[str, Any]:
    rng = random.Random(7)
    rows = []
    for size in SIZES:
        row: dict[str, Any] = {"size": size, "label": size_label(size)}
        for idle in (False, True):
            key = "idle" if idle else "on_read"
            row[key] = _one(session, size, idle, rng)
            eprint(f"  {row['label']} idle adoption {'on' if idle else 'off'}: first request "
                   f"after a publish p99 {row[key]['first_p99_ms']:.2f} ms, steady p99 "
                   f"{row[key]['steady_p99_ms']:.2f} ms ({row[key]['ratio_p99']:.2f}x)")
        rows.append(row)
    return {"rows": rows, "workers": 2, "cpus": os.cpu_count()}
