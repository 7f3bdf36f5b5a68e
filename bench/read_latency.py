"""Read latency: unchanged config (every alternative), and while updating 1000/s.

* **Unchanged config**: in one process, each alternative's read is inlined
  into a loop (as ``timeit`` does). The mean comes from batches of 100 reads
  timed with ``perf_counter_ns`` (loop included, as for every row); the
  percentiles from single timed reads minus the timer's own cost, measured
  in the same repetition. Repetitions interleave the alternatives in a
  rotating order and the report gives the median of the repetitions.
* **While updating**: a reader process times single reads for a few seconds
  while this process updates the config 1000 times a second.

The first ``get()`` after a publish is ``bench.newgen``'s measure.
"""

from __future__ import annotations

import select
import time
from typing import Any

from bench import pool as workers
from bench._common import (
    KIB,
    BenchError,
    Session,
    compile_loops,
    eprint,
    latency_stats,
    make_config,
    median,
    sample_buffer,
    timer_overhead_ns,
    with_version,
)
from bench.alternatives import ALTERNATIVES, Alternative, GenerationCheck, Shmconf

#: Size of the config every side-by-side measure hands around.
CONFIG_BYTES = 4 * KIB
#: The update rate of "reads while publishing".
UPDATES_PER_S = 1000
#: Version of the config before the updates start.
FIRST_VERSION = 1_000_000


def _setup_all(session: Session, config: dict[str, Any],
               only_shared: bool = False) -> tuple[dict[str, Alternative], dict[str, str]]:
    """Owners of every alternative that sets up; the others' errors, by key."""
    owners: dict[str, Alternative] = {}
    errors: dict[str, str] = {}
    for cls in ALTERNATIVES:
        if only_shared and not cls.shared:
            continue
        owner = cls(session)
        try:
            owner.setup(config)
        except Exception as exc:
            errors[cls.key] = _reason(exc)
            owner.teardown()
            continue
        owners[cls.key] = owner
    return owners, errors


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


# -- unchanged config --------------------------------------------------------------------


def unchanged(session: Session) -> dict[str, Any]:
    """Mean, p50/p99/p99.9 and the ratio to a dict lookup, per alternative."""
    quick = session.quick
    reps = 2 if quick else 7
    phase_s = 0.02 if quick else 0.25
    max_samples = 20_000 if quick else 200_000
    config = make_config(CONFIG_BYTES)
    owners, errors = _setup_all(session, config)
    readers: dict[str, Alternative] = {}
    try:
        for key, owner in owners.items():
            try:
                readers[key] = owner.reader()
            except Exception as exc:
                errors[key] = _reason(exc)
        if "shmconf" in owners:
            readers["gencheck"] = GenerationCheck.attach(owners["shmconf"].spec())
        loops = {"loop": compile_loops("pass", {})}
        for key, reader in readers.items():
            loops[key] = compile_loops(*reader.read_stmt())
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in loops}
        buf = sample_buffer(max_samples)
        order = list(loops)
        for rep in range(reps):
            overhead = timer_overhead_ns()
            rotated = order[rep % len(order):] + order[: rep % len(order)]
            means: dict[str, float] = {}
            for key in rotated:
                batch, sample = loops[key]
                try:
                    mean = _batch_mean(batch, phase_s)
                    deadline = time.perf_counter_ns() + int(phase_s * 1e9)
                    n, failed = sample(buf, max_samples, deadline)
                except Exception as exc:
                    errors[key] = _reason(exc)
                    continue
                means[key] = mean
                stats = latency_stats(buf, n, overhead)
                stats.update(mean_ns=means[key], overhead_ns=overhead, errors=failed)
                runs[key].append(stats)
            floor = means.get("dict", 0.0)
            for key, mean in means.items():
                if floor > 0:
                    runs[key][-1]["ratio"] = mean / floor
            eprint(f"  read latency: repetition {rep + 1}/{reps} done")
    finally:
        for reader in readers.values():
            reader.close()
        for owner in owners.values():
            owner.teardown()
    rows: dict[str, Any] = {}
    for key, reps_stats in runs.items():
        if key in errors or not reps_stats:
            continue
        rows[key] = {stat: median([r.get(stat, float("nan")) for r in reps_stats])
                     for stat in ("mean_ns", "p50_ns", "p99_ns", "p999_ns", "ratio",
                                  "overhead_ns")}
        rows[key]["samples"] = sum(int(r["samples"]) for r in reps_stats)
        rows[key]["errors"] = sum(int(r["errors"]) for r in reps_stats)
    from shmconf._fastpath import speedups

    return {"config_bytes": CONFIG_BYTES, "repetitions": reps, "rows": rows, "errors": errors,
            "fast_path": "the C" if speedups is not None else "the Python"}


def _batch_mean(batch: Any, seconds: float, size: int = 100) -> float:
    """Nanoseconds per read: total time of 100-read batches over about ``seconds``."""
    batch(size)  # warm
    total = reads = 0
    deadline = time.perf_counter_ns() + int(seconds * 1e9)
    while reads < 5 * size or time.perf_counter_ns() < deadline:
        total += batch(size)
        reads += size
    return total / reads


# -- while updating ------------------------------------------------------------------------


def under_updates(session: Session, pool: workers.Pool) -> dict[str, Any]:
    """A reader process's single-read latency while the config changes 1000 times/s."""
    quick = session.quick
    duration_s = 0.3 if quick else 2.0
    max_samples = 200_000 if quick else 6_000_000
    config = make_config(CONFIG_BYTES)
    rows: dict[str, Any] = {}
    errors: dict[str, str] = {}
    # The control: a plain dict read in the reader process while shmconf publishes
    # 1000/s, so the machine is as busy as for shmconf and nothing is shared. What
    # it shows beyond a dict's own cost is the scheduler's doing.
    cases: list[tuple[str, type[Alternative], bool]] = [
        (cls.key, cls, False) for cls in ALTERNATIVES if cls.shared]
    cases.insert(1, ("dict-control", Shmconf, True))
    for key, cls, control in cases:
        owner = cls(session)
        try:
            owner.setup(with_version(config, FIRST_VERSION))
            (worker,) = pool.take(1)
            spec = {"kind": "dict", "config": config} if control else owner.spec()
            op = {"op": "latency", "spec": spec, "duration_s": duration_s,
                  "max_samples": max_samples}
            try:
                workers.start_all([worker], op)
                start = workers.go_all([worker])
                updates, elapsed = _update_until_reply(owner, config, worker, start,
                                                       duration_s + 60)
                (reply,) = workers.gather([worker], 10)
            except BaseException:
                pool.discard([worker])
                raise
            reply["updates_per_s"] = updates / elapsed if elapsed > 0 else 0.0
            if control:
                reply["versions_seen"] = None
            rows[key] = reply
            eprint(f"  reads while updating: {key} p99.9 {reply['p999_ns'] / 1000:.2f} us, "
                   f"{reply['updates_per_s']:.0f} updates/s")
        except Exception as exc:
            errors[key] = _reason(exc)
            eprint(f"  reads while updating: {key} failed: {errors[key]}")
        finally:
            owner.teardown()
    return {"config_bytes": CONFIG_BYTES, "target_updates_per_s": UPDATES_PER_S,
            "duration_s": duration_s, "rows": rows, "errors": errors}


def _update_until_reply(owner: Alternative, config: dict[str, Any], worker: workers.Worker,
                        start_ns: int, timeout_s: float) -> tuple[int, float]:
    """Update at UPDATES_PER_S until the worker's reply is waiting; (updates, seconds)."""
    interval = 1_000_000_000 // UPDATES_PER_S
    version = FIRST_VERSION
    next_ns = start_ns
    updates = 0
    deadline = time.monotonic_ns() + int(timeout_s * 1e9)
    assert worker.proc.stdout is not None
    fd = worker.proc.stdout.fileno()
    while True:
        now = time.monotonic_ns()
        if now >= next_ns:
            version += 1
            owner.update(with_version(config, version))
            if now >= start_ns:
                updates += 1
            next_ns += interval
            if now - next_ns > 50 * interval:  # fell far behind: do not burst to catch up
                next_ns = now + interval
        ready, _, _ = select.select([fd], [], [], max(0.0, (next_ns - time.monotonic_ns()) / 1e9))
        if ready:
            break
        if now > deadline:
            raise BenchError("the reader did not finish")
    return updates, max(1e-9, (time.monotonic_ns() - start_ns) / 1e9)
