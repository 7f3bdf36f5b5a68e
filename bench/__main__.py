"""``python -m bench [--quick] [--only NAMES]``: run the measures, write the report.

A full run rewrites ``docs/bench.md`` and ``docs/img/bench-*.png`` (several
minutes). ``--quick`` is a smoke run of every measure with tiny durations
(well under a minute); it writes ``bench/out/bench-quick.md`` instead and
never touches ``docs/``. Raw results go to ``bench/out/*.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    etcd_fanout,
    first_request,
    idle_adoption,
    machine,
    memory,
    newgen,
    propagation,
    publish_cost,
    read_latency,
    report,
    rollout,
    scaling,
    supervision,
)
from bench._common import OUT_DIR, ROOT, BenchError, Session, eprint, shm_entries
from bench.pool import Pool

#: name -> (title for progress lines, function(session, pool)).
MEASURES: dict[str, tuple[str, Callable[[Session, Pool], dict[str, Any]]]] = {
    "read_latency": ("read latency, unchanged config", lambda s, p: read_latency.unchanged(s)),
    "new_generation": ("shmconf: new generation read cost", lambda s, p: newgen.run(s)),
    "publish": ("shmconf: publish cost", lambda s, p: publish_cost.publish_mapping(s)),
    "publish_file": ("shmconf: file -> publish cost", lambda s, p: publish_cost.publish_file(s)),
    "memory": ("shmconf: memory per worker", lambda s, p: memory.run(s)),
    "scaling": ("aggregate reads/s by reader processes", scaling.run),
    "under_updates": ("reads while updating 1000/s", read_latency.under_updates),
    "propagation": ("propagation to reader processes", propagation.run),
    "first_request": ("shmconf: first request after a publish (gunicorn)",
                      lambda s, p: first_request.run(s)),
    "idle_adoption": ("shmconf: idle workers adopt a publish",
                      lambda s, p: idle_adoption.run(s)),
    "publisher_restart": ("shmconf: publisher killed -> a new one serving",
                          lambda s, p: supervision.run(s)),
    "rollout": ("shmconf: a rollout, rolled back and promoted",
                lambda s, p: rollout.run(s)),
    "idle_cpu": ("shmconf: idle publisher CPU", lambda s, p: publish_cost.idle_cpu(s)),
    "etcd_fanout": ("etcd: one etcd, N simulated hosts",
                    lambda s, p: etcd_fanout.bench_measure(s)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run, tiny durations; writes bench/out/bench-quick.md")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of: {', '.join(MEASURES)}")
    parser.add_argument("--update", action="store_true",
                        help="with --only: measure again into the last full run's results "
                             "(bench/out/bench.json) and rewrite docs/bench.md from them")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file to write (default: docs/bench.md, or "
                             "bench/out/bench-quick.md with --quick)")
    args = parser.parse_args(argv)
    only = [m for m in args.only.split(",") if m]
    unknown = [m for m in only if m not in MEASURES]
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(unknown)}")
    partial = bool(only) and not args.quick and not args.update
    if args.update and (not only or args.quick):
        parser.error("--update needs --only and a full (not --quick) run")
    if args.out is not None:
        out = args.out
    elif args.quick or partial:
        out = OUT_DIR / ("bench-quick.md" if args.quick else "bench-partial.md")
    else:
        out = ROOT / "docs" / "bench.md"
    img_dir = out.parent / "img"

    started = time.monotonic()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine.describe()}
    full_run = OUT_DIR / "bench.json"
    if args.update:
        if not full_run.exists():
            parser.error(f"--update: no full run to update ({_rel(full_run)})")
        results = json.loads(full_run.read_text())
        stamp = machine.describe()["date"]
        results.setdefault("updated", {}).update(dict.fromkeys(only, stamp))
    eprint(f"machine: {machine.one_line(results['machine'])}")
    session = Session(quick=args.quick)
    try:
        with session:
            pool = Pool(session)
            for key, (title, measure) in MEASURES.items():
                if only and key not in only:
                    continue
                if key in ("first_request", "idle_adoption", "rollout", "idle_cpu"):
                    pool.close()  # a quiet machine for the idle measures
                conditions = {"loadavg": machine.loadavg()}
                if not args.quick:
                    # A shared machine: let other work settle, and record how busy it was.
                    conditions.update(machine.wait_quiet())
                eprint(f"{title} ...")
                t0 = time.monotonic()
                try:
                    results[key] = measure(session, pool)
                except BenchError as exc:
                    results[key] = {"failed": str(exc)}
                    eprint(f"  failed: {exc}")
                except Exception as exc:
                    results[key] = {"failed": f"{type(exc).__name__}: {exc}"}
                    eprint(f"  failed: {exc}")
                    traceback.print_exc()
                conditions["seconds"] = round(time.monotonic() - t0, 1)
                results.setdefault("conditions", {})[key] = conditions
    except KeyboardInterrupt:
        eprint("interrupted; everything was cleaned up")
        return 130
    if not args.update:  # an update keeps the full run's figures of the run itself
        results["machine"]["loadavg_end"] = machine.loadavg()
        results["elapsed_s"] = round(time.monotonic() - started, 1)
    leftovers = shm_entries(session.tag)
    if session.leftovers or leftovers or session.tmp.exists():
        eprint(f"cleanup: had to remove {session.leftovers}; still there: {leftovers}, "
               f"{session.tmp if session.tmp.exists() else ''}")
    else:
        eprint("cleanup: nothing left in /dev/shm or the temporary directory")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw = OUT_DIR / (out.stem + ".json")
    raw.write_text(json.dumps(results, indent=1, default=str))
    report.write(results, out, img_dir)
    eprint(f"wrote {_rel(out)} and {_rel(raw)} in {time.monotonic() - started:.0f} s")
    print(report.summary(results))
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
