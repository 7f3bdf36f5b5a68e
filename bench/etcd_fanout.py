"""One etcd, N simulated hosts: a write in etcd -> every reader on every host holds it.

Each simulated host is one ``shmconf publish`` process with its own config
name, watching the same etcd prefix, and 8 reader processes that poll
``get()`` every millisecond (as workers between requests would) and report
when they first hold each value. The figure is the time from the etcd put to
the last reader of the last host holding it: p50 and p99 over the rounds.

    python -m bench.etcd_fanout [--hosts 1,2,4,8] [--rounds 20]

Everything runs on this machine, on loopback; the etcd data directory and
every segment are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

READERS_PER_HOST = 8
DEBOUNCE_MS = 10


def reader_main(name: str) -> None:
    """A reader process: print ``VALUE MONOTONIC_NS`` when a new value appears."""
    import shmconf

    reader = shmconf.attach(name, timeout=30)
    print("ready", flush=True)
    last = None
    while True:
        value = reader.get().get("value")
        if value != last:
            last = value
            print(f"{value} {time.monotonic_ns()}", flush=True)
        time.sleep(0.001)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(hosts: int, rounds: int, server: Any, runtime: Path) -> dict[str, float]:
    from shmconf.sources.etcd_client import EtcdClient

    env = {**os.environ, "SHMCONF_RUNTIME_DIR": str(runtime)}
    client = EtcdClient([server.endpoint])
    prefix = f"/bench-{os.getpid()}-{hosts}/"
    client.put(f"{prefix}value".encode(), b"0")
    names = [f"bench-etcd-{os.getpid()}-{hosts}-{i}" for i in range(hosts)]
    publishers = [
        subprocess.Popen([sys.executable, "-m", "shmconf", "publish", name, "-c",
                          f"etcd://{server.endpoint}{prefix}", "--debounce", f"{DEBOUNCE_MS}ms"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in names
    ]
    readers: list[subprocess.Popen[str]] = []
    try:
        for name in names:
            for _ in range(READERS_PER_HOST):
                readers.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.etcd_fanout", "--reader", name],
                    env=env, stdout=subprocess.PIPE, text=True))
        for proc in readers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            proc.stdout.readline()  # the initial value
        latencies = []
        for round_no in range(1, rounds + 1):
            written = time.monotonic_ns()
            client.put(f"{prefix}value".encode(), str(round_no).encode())
            seen = []
            for proc in readers:
                assert proc.stdout is not None
                value, _, at = proc.stdout.readline().partition(" ")
                assert int(value) == round_no, (value, round_no)
                seen.append(int(at))
            latencies.append((max(seen) - written) / 1e6)
            time.sleep(0.2)  # let the hosts go idle between changes
        return {"hosts": hosts, "readers": len(readers), "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99), "max_ms": max(latencies),
                "mean_ms": statistics.fmean(latencies)}
    finally:
        for proc in [*readers, *publishers]:
            proc.send_signal(signal.SIGTERM)
        for proc in [*readers, *publishers]:
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        from shmconf.protocol.block import list_shm_names, unlink_shm

        for name in names:
            for shm_name in list_shm_names(name):
                unlink_shm(shm_name)


def measure(hosts_list: list[int], rounds: int) -> list[dict[str, float]]:
    from tests.etcd_server import EtcdServer

    if shutil.which("etcd") is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
    runtime = Path(tempfile.mkdtemp(prefix="shmconf-bench-etcd-"))
    server = EtcdServer()
    server.start()
    try:
        return [run(hosts, rounds, server, runtime) for hosts in hosts_list]
    finally:
        server.close()
        shutil.rmtree(runtime, ignore_errors=True)


def bench_measure(session: Any) -> dict[str, Any]:
    """The harness's entry (``python -m bench``): fewer hosts and rounds with --quick."""
    from bench._common import BenchError

    if shutil.which("etcd") is None:
        raise BenchError("etcd: not installed (apt-get install etcd-server)")
    hosts, rounds = ([1], 3) if session.quick else ([1, 2, 4, 8], 20)
    return {"rows": measure(hosts, rounds), "readers_per_host": READERS_PER_HOST}


def table(results: list[dict[str, float]]) -> str:
    lines = ["| simulated hosts | reader processes | p50 | p99 | max |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['hosts']:.0f} | {r['readers']:.0f} | {r['p50_ms']:.1f} ms | "
              f"{r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms |" for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.reader:
        reader_main(args.reader)
        return
    results = measure([int(h) for h in args.hosts.split(",")], args.rounds)
    print(table(results))


if __name__ == "__main__":
    main()
