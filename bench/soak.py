"""The leak check: ``python -m bench.soak --minutes 10``.

This process publishes a 4 KB config ``--rate`` times a second (1000 by
default) while ``--readers`` reader processes call ``get()`` in bursts.
During the warm-up it publishes one config larger than the slots, so the
segment grows and every reader moves to the new data segment. Every few
seconds it samples each reader's RSS, open file descriptors and memory
mappings (``/proc/PID/status``, ``/proc/PID/fd``, ``/proc/PID/maps``, where
a mapping of ``/dev/shm`` that was not released shows up), its own, and the
shared-memory objects of the name.

It passes when, from the first sample after the warm-up to the end, no
reader's RSS grew by more than ``--rss-slack-kb``, no fd count and no count
of ``/dev/shm`` mappings grew, every reader kept up and read without
errors, the name never had more than its two segments (anchor and data),
and after the publisher's unlink nothing of the name is left in
``/dev/shm``. The result goes to stdout and
``bench/out/soak.md``; the exit status is 0 on a pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench import pool as workers
from bench._common import KIB, OUT_DIR, Session, eprint, make_config, proc_counts, with_version


def run(minutes: float, readers: int, rate: int, rss_slack_kb: int) -> tuple[bool, str]:
    import os

    import shmconf
    from shmconf.protocol.block import list_shm_names

    duration_s = minutes * 60
    sample_every_s = max(1.0, min(10.0, duration_s / 30))
    warmup_s = max(2 * sample_every_s, duration_s * 0.1)
    grow_at_s = warmup_s / 2
    config = make_config(4 * KIB)
    big = make_config(96 * KIB)  # more than the default 64 KB slot: the segment grows
    samples: list[dict[str, Any]] = []
    lines: list[str] = []
    with Session() as session:
        pool = workers.Pool(session)
        name = session.name("soak")
        publisher = shmconf.Publisher(name)
        session.on_exit("soak publisher", publisher.unlink)
        publisher.publish(with_version(config, 1))
        procs = pool.take(readers)
        flag = session.path("soak", "stop")
        workers.start_all(procs, {"op": "soak", "name": name, "stop": str(flag)})
        workers.go_all(procs)
        start = time.monotonic()
        next_sample = start + sample_every_s
        interval = 1.0 / rate
        next_publish = start
        version = 1
        grown = False
        late = 0
        while True:
            now = time.monotonic()
            if now - start >= duration_s:
                break
            if now >= next_publish:
                version += 1
                if not grown and now - start >= grow_at_s:
                    publisher.publish(with_version(big, version))
                    grown = True
                else:
                    publisher.publish(with_version(config, version))
                next_publish += interval
                if now - next_publish > 1.0:  # fell a second behind: count it, do not burst
                    late += 1
                    next_publish = now + interval
            if now >= next_sample:
                samples.append({
                    "t": now - start,
                    "generation": publisher.generation,
                    "readers": {w.pid: proc_counts(w.pid) for w in procs},
                    "self": proc_counts(os.getpid()),
                    "shm": len(list_shm_names(name)),
                })
                next_sample += sample_every_s
                eprint(f"  {samples[-1]['t']:6.0f} s  generation {samples[-1]['generation']}  "
                       "reader RSS " + " ".join(
                           f"{c['rss'] // KIB}K" for c in samples[-1]["readers"].values()))
            time.sleep(max(0.0, min(next_publish, next_sample) - time.monotonic()))
        elapsed = time.monotonic() - start
        final_generation = publisher.generation
        flag.write_text("stop")
        replies = workers.gather(procs, 30)
        pool.close()
        publisher.unlink()
        left = list_shm_names(name)

    base = next((s for s in samples if s["t"] >= warmup_s), samples[0] if samples else None)
    last = samples[-1] if samples else None
    ok = True
    publishes = final_generation - 1
    lines.append(f"# Soak: {minutes:g} min, {readers} readers, {rate} publishes/s target")
    lines.append("")
    lines.append(f"- {publishes:,} publishes in {elapsed:.0f} s ({publishes / elapsed:.0f}/s); "
                 f"the segment grew once at {grow_at_s:.0f} s.")
    if base is None or last is None:
        return False, "no samples taken; run longer"
    lines.append(f"- Compared: the sample at {base['t']:.0f} s (after warm-up) with the last, "
                 f"at {last['t']:.0f} s.")
    lines.append("")
    lines.append("| process | RSS then | RSS now | fds then -> now | /dev/shm mappings | "
                 "all mappings | reads | generations adopted | errors |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_pid = {r["pid"]: r for r in replies}
    for pid, now_c in last["readers"].items():
        then = base["readers"][pid]
        reply = by_pid.get(pid, {})
        grew = now_c["rss"] - then["rss"] > rss_slack_kb * KIB
        leaked = now_c["fds"] > then["fds"] or now_c["shm_maps"] > then["shm_maps"]
        behind = reply.get("generation", 0) < final_generation
        bad = grew or leaked or bool(reply.get("errors")) or behind
        ok &= not bad
        lines.append(f"| reader {pid}{' **FAIL**' if bad else ''} | {then['rss'] // KIB} KB | "
                     f"{now_c['rss'] // KIB} KB | {then['fds']} -> {now_c['fds']} | "
                     f"{then['shm_maps']} -> {now_c['shm_maps']} | "
                     f"{then['maps']} -> {now_c['maps']} | {reply.get('reads', 0):,} | "
                     f"{reply.get('adopted', 0):,} | {reply.get('errors', '?')} |")
    then, now_c = base["self"], last["self"]
    lines.append(f"| publisher (this process) | {then['rss'] // KIB} KB | {now_c['rss'] // KIB} KB"
                 f" | {then['fds']} -> {now_c['fds']} | {then['shm_maps']} -> {now_c['shm_maps']}"
                 f" | {then['maps']} -> {now_c['maps']} | | | |")
    lines.append("")
    shm_ok = not left and all(s["shm"] <= 2 for s in samples)
    ok &= shm_ok
    lines.append(f"- Shared-memory objects of the name while running: "
                 f"{sorted({s['shm'] for s in samples})}; after unlink: {left or 'none'}"
                 f"{'' if shm_ok else ' **FAIL**'}.")
    lines.append(f"- Reader RSS may grow by {rss_slack_kb} KB (allocator noise); fds and "
                 "/dev/shm mappings may not grow at all (all mappings include the allocator's "
                 "arenas and are shown for information).")
    if late:
        lines.append(f"- The publisher fell more than 1 s behind its schedule {late} times.")
    lines.append("")
    lines.append(f"**{'PASS' if ok else 'FAIL'}**")
    return ok, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--rate", type=int, default=1000, help="publishes per second")
    parser.add_argument("--rss-slack-kb", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        ok, text = run(args.minutes, args.readers, args.rate, args.rss_slack_kb)
    except KeyboardInterrupt:
        eprint("interrupted; everything was cleaned up")
        return 130
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "soak.md").write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
