"""What each worker holds for the config: RSS, PSS and USS after attach, minus before.

Each measurement runs in a fresh reader process, which imports shmconf (and
builds the model class) first, reads ``/proc/self/smaps_rollup``, attaches,
reads once and reads it again. USS (private pages) is what the process
alone pays; RSS also counts the shared-memory pages it touched, which every
worker shares (PSS splits them). Each figure is the median of a few fresh
processes: page-granular counts move by a page or two from one to the next.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from bench import pool as workers
from bench._common import KIB, MIB, Session, eprint, make_config, size_label


def run(session: Session) -> dict[str, Any]:
    import shmconf

    repetitions = 1 if session.quick else 3
    rows = []
    for size in (4 * KIB, 64 * KIB, MIB):
        name = session.name("mem")
        publisher = shmconf.Publisher(name)
        try:
            publisher.publish(make_config(size))
            for use_model in (False, True):
                replies = [_measure(session, name, use_model) for _ in range(repetitions)]
                deltas = {k: median(r["after"][k] - r["before"][k] for r in replies)
                          for k in ("rss", "pss", "uss")}
                rows.append({
                    "size": size, "label": size_label(size), "model": use_model,
                    **{f"{k}_delta": v for k, v in deltas.items()},
                    "rss_before": replies[0]["before"]["rss"],
                    "uss_before": replies[0]["before"]["uss"],
                    "repetitions": repetitions,
                })
                eprint(f"  memory {size_label(size)}{' + model' if use_model else ''}: "
                       f"RSS +{rows[-1]['rss_delta'] / KIB:.0f} KB, "
                       f"USS +{rows[-1]['uss_delta'] / KIB:.0f} KB")
        finally:
            publisher.unlink()
    return {"rows": rows}


def _measure(session: Session, name: str, use_model: bool) -> dict[str, Any]:
    """One fresh reader process: its memory before attach and after the first get()."""
    fresh = workers.Pool(session)
    try:
        (worker,) = fresh.take(1)
        worker.send({"op": "memory", "name": name, "model": use_model})
        reply: dict[str, Any] = worker.recv(60)
    finally:
        fresh.close()
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply
