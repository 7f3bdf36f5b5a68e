"""What each worker holds for the config: RSS, PSS and USS after attach, minus before.

Each measurement runs in a fresh reader process, which imports shmconf (and
builds the model class) first, reads ``/proc/self/smaps_rollup``, attaches,
reads once and reads it again. USS (private pages) is what the process
alone pays; RSS also counts the shared-memory pages it touched, which every
worker shares (PSS splits them).
"""

from __future__ import annotations

from typing import Any

from bench import pool as workers
from bench._common import KIB, MIB, Session, eprint, make_config, size_label


def run(session: Session) -> dict[str, Any]:
    import shmconf

    rows = []
    for size in (4 * KIB, MIB):
        name = session.name("mem")
        publisher = shmconf.Publisher(name)
        try:
            publisher.publish(make_config(size))
            for use_model in (False, True):
                fresh = workers.Pool(session)
                try:
                    (worker,) = fresh.take(1)
                    worker.send({"op": "memory", "name": name, "model": use_model})
                    reply = worker.recv(60)
                finally:
                    fresh.close()
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                before, after = reply["before"], reply["after"]
                rows.append({
                    "size": size, "label": size_label(size), "model": use_model,
                    **{f"{k}_delta": after[k] - before[k] for k in ("rss", "pss", "uss")},
                    "rss_before": before["rss"], "uss_before": before["uss"],
                })
                eprint(f"  memory {size_label(size)}{' + model' if use_model else ''}: "
                       f"RSS +{rows[-1]['rss_delta'] / KIB:.0f} KB, "
                       f"USS +{rows[-1]['uss_delta'] / KIB:.0f} KB")
        finally:
            publisher.unlink()
    return {"rows": rows}
