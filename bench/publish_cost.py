"""shmconf's publisher: what a publish costs, and what an idle publisher costs.

* ``Publisher.publish(mapping)``: validate (model), serialize (canonical
  JSON), digest, diff, write the slot, keep the version in the history.
  Timed by size, with and without a model, with a breakdown by step.
* The whole file path: YAML file -> load -> validate -> publish
  (``publish_now()``), after the file was rewritten (the write is not timed).
* Idle CPU: a publisher service (``serve_forever`` on a YAML file, as
  ``shmconf publish`` runs it) in its own process, from its thread CPU
  times in ``/proc/PID/task/*/schedstat`` (ns) and ``/proc/PID/stat``
  (clock ticks) over 60 s.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench._common import (
    KIB,
    MIB,
    Session,
    eprint,
    make_config,
    median,
    percentiles,
    proc_cpu_seconds,
    proc_run_ns,
    settings_model,
    size_label,
    stop_process,
    with_version,
    write_atomic,
)
from bench.propagation import start_service, yaml_versions


class _Laps:
    """Each call returns the nanoseconds since the previous one (or creation)."""

    def __init__(self) -> None:
        self._last = time.perf_counter_ns()

    def __call__(self) -> int:
        now = time.perf_counter_ns()
        elapsed, self._last = now - self._last, now
        return elapsed


def _stats_ms(times_ns: list[float]) -> dict[str, float]:
    p50, p90 = percentiles(times_ns, len(times_ns), [50, 90])
    return {"p50_ms": p50 / 1e6, "p90_ms": p90 / 1e6}


def publish_mapping(session: Session) -> dict[str, Any]:
    """Publisher.publish(mapping) by size, with and without a model, plus a breakdown."""
    import orjson

    import shmconf
    from shmconf import content
    from shmconf.history import History, Version
    from shmconf.writer import Writer

    model = settings_model()
    sizes = {4 * KIB: 200, 64 * KIB: 50, MIB: 10}
    if session.quick:
        sizes = {4 * KIB: 10, 64 * KIB: 3, MIB: 2}
    rows = []
    for size, reps in sizes.items():
        config = make_config(size)
        row: dict[str, Any] = {"size": size, "label": size_label(size), "reps": reps}
        for label, use_model in (("model", True), ("plain", False)):
            name = session.name("pub")
            publisher = shmconf.Publisher(name, model=model if use_model else None)
            times = []
            try:
                publisher.publish(with_version(config, 1))  # grows the segment once
                for rep in range(reps):
                    candidate = with_version(config, rep + 2)
                    t0 = time.perf_counter_ns()
                    publisher.publish(candidate)
                    times.append(time.perf_counter_ns() - t0)
            finally:
                publisher.unlink()
            row[label] = _stats_ms(times)
        # The steps, timed one by one on the same data.
        steps_reps = max(3, min(reps, 20))
        payload = content.canonical(config)
        previous = with_version(config, 0)
        name = session.name("steps")
        writer = Writer(name)
        history = History(session.path("history", name, "x").parent)
        try:
            writer.publish(payload)
            steps: dict[str, list[float]] = {k: [] for k in (
                "validate", "serialize", "digest", "diff", "secrets", "write", "history")}
            for rep in range(steps_reps):
                data = with_version(config, rep + 1)
                lap = _Laps()
                instance = model.model_validate(data)
                steps["validate"].append(lap())
                body = content.canonical(data)
                steps["serialize"].append(lap())
                digest = content.digest(body)
                steps["digest"].append(lap())
                changed = content.changed_paths(previous, data)
                steps["diff"].append(lap())
                content.secret_paths(instance)
                steps["secrets"].append(lap())
                writer.publish(body, orjson.dumps({"digest": digest, "changed": changed}))
                steps["write"].append(lap())
                history.record(Version(rep + 1, time.time_ns(), digest, (), tuple(changed),
                                       "publish", (), data))
                steps["history"].append(lap())
                previous = data
        finally:
            writer.unlink()
            writer.close()
        row["steps_ms"] = {k: median(v) / 1e6 for k, v in steps.items()}
        row["payload_bytes"] = len(payload)
        rows.append(row)
        eprint(f"  publish {size_label(size)}: {row['model']['p50_ms']:.3f} ms with a model, "
               f"{row['plain']['p50_ms']:.3f} ms without")
    return {"rows": rows}


def publish_file(session: Session) -> dict[str, Any]:
    """YAML file -> load -> validate -> publish, for a 4 KB and a 1 MB file."""
    import yaml

    import shmconf

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    model = settings_model()
    sizes = {4 * KIB: 50, MIB: 5}
    if session.quick:
        sizes = {4 * KIB: 3, 64 * KIB: 1}
    rows = []
    for size, reps in sizes.items():
        config = make_config(size)
        text = yaml_versions(config)
        name = session.name("yaml")
        source = session.path(name, "config.yaml")
        write_atomic(source, text(0))
        publisher = shmconf.Publisher(name, sources=[source], model=model)
        total, load, plain_yaml = [], [], []
        try:
            publisher.publish_now()
            for rep in range(reps):
                write_atomic(source, text(rep + 1))
                t0 = time.perf_counter_ns()
                publisher.publish_now()
                total.append(time.perf_counter_ns() - t0)
                t0 = time.perf_counter_ns()
                publisher.load()
                load.append(time.perf_counter_ns() - t0)
                if rep < 3:
                    t0 = time.perf_counter_ns()
                    yaml.load(source.read_bytes(), Loader=loader)
                    plain_yaml.append(time.perf_counter_ns() - t0)
        finally:
            publisher.unlink()
        rows.append({"size": size, "label": size_label(size), "reps": reps,
                     "file_bytes": source.stat().st_size, **_stats_ms(total),
                     "load_p50_ms": median(load) / 1e6,
                     "pyyaml_p50_ms": median(plain_yaml) / 1e6})
        eprint(f"  publish from a {size_label(size)} YAML file: {rows[-1]['p50_ms']:.2f} ms")
    return {"rows": rows}


def idle_cpu(session: Session) -> dict[str, Any]:
    """CPU share of an idle publisher service on a file source."""
    seconds = 3.0 if session.quick else 60.0
    name = session.name("idle")
    source = session.path(name, "config.yaml")
    write_atomic(source, yaml_versions(make_config(4 * KIB))(1))
    service = start_service(session, name, source)
    try:
        time.sleep(0.5 if session.quick else 2.0)  # let the watcher settle
        pid = service.pid
        threads = len(os.listdir(f"/proc/{pid}/task"))
        wall0, run0, ticks0 = time.monotonic(), proc_run_ns(pid), proc_cpu_seconds(pid)
        time.sleep(seconds)
        wall1, run1, ticks1 = time.monotonic(), proc_run_ns(pid), proc_cpu_seconds(pid)
    finally:
        stop_process(service, timeout=10)
    wall = wall1 - wall0
    result = {
        "seconds": wall,
        "threads": threads,
        "cpu_percent": (run1 - run0) / 1e9 / wall * 100,
        "cpu_percent_ticks": (ticks1 - ticks0) / wall * 100,
        "cpu_ms": (run1 - run0) / 1e6,
    }
    eprint(f"  idle publisher: {result['cpu_percent']:.4f} % CPU over {wall:.0f} s")
    return result
