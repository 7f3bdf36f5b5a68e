"""Aggregate reads/s with 1, 2, 4 and os.cpu_count() reader processes, per alternative.

Every reader process attaches, warms up and says ready; all are released at
the same instant (a start time sent over their pipes), read flat out in
batches for a fixed duration and report their count as JSON. The aggregate
is the sum of each process's reads/s. A repetition measures every
alternative at every process count, one after the other, so slow drifts in
the machine's load hit all of them alike; the "N vs 1" ratios are taken
within each repetition, and the report gives medians. A plain dict is the
floor: each process reads its own copy.
"""

from __future__ import annotations

import os
from typing import Any

from bench import pool as workers
from bench._common import BenchError, Session, eprint, make_config, median
from bench.alternatives import ALTERNATIVES, Alternative
from bench.read_latency import CONFIG_BYTES


def process_counts() -> list[int]:
    return sorted({1, 2, 4, os.cpu_count() or 1})


def _aggregate(pool: workers.Pool, spec: dict[str, Any], n: int, duration_s: float) -> float:
    procs = pool.take(n)
    op = {"op": "throughput", "spec": spec, "duration_s": duration_s}
    try:
        workers.start_all(procs, op)
        workers.go_all(procs)
        replies = workers.gather(procs, duration_s + 60)
    except BaseException:
        pool.discard(procs)
        raise
    return sum(r["reads"] / r["elapsed_s"] for r in replies)


def run(session: Session, pool: workers.Pool) -> dict[str, Any]:
    quick = session.quick
    duration_s = 0.2 if quick else 1.0
    reps = 1 if quick else 5
    counts = [1, 2] if quick else process_counts()
    config = make_config(CONFIG_BYTES)
    owners: dict[str, Alternative] = {}
    errors: dict[str, str] = {}
    runs: dict[str, dict[int, list[float]]] = {}
    try:
        for cls in ALTERNATIVES:
            owner = cls(session)
            try:
                owner.setup(config)
            except Exception as exc:
                errors[cls.key] = _reason(exc)
                owner.teardown()
                continue
            owners[cls.key] = owner
            runs[cls.key] = {n: [] for n in counts}
        for rep in range(reps):
            for key, owner in owners.items():
                if key in errors:
                    continue
                try:
                    for n in counts:
                        runs[key][n].append(_aggregate(pool, owner.spec(), n, duration_s))
                except Exception as exc:
                    errors[key] = _reason(exc)
                    eprint(f"  scaling: {key} failed: {errors[key]}")
            eprint(f"  scaling: repetition {rep + 1}/{reps} done")
    finally:
        for owner in owners.values():
            owner.teardown()
    rows: dict[str, Any] = {}
    for key, per_count in runs.items():
        if key in errors:
            continue
        row: dict[str, Any] = {}
        for n in counts:
            ratios = [total / one for total, one in zip(per_count[n], per_count[1], strict=True)]
            row[str(n)] = {"reads_per_s": median(per_count[n]), "vs_one": median(ratios),
                           "runs": per_count[n]}
        rows[key] = row
        eprint(f"  scaling: {key} " + ", ".join(
            f"{n}: {row[str(n)]['reads_per_s'] / 1e6:.3g} M/s ({row[str(n)]['vs_one']:.2f}x)"
            for n in counts))
    return {"counts": counts, "duration_s": duration_s, "repetitions": reps,
            "config_bytes": CONFIG_BYTES, "rows": rows, "errors": errors}


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
