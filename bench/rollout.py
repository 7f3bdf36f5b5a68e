"""A real rollout: canary workers, bake, then promotion, or an automatic rollback.

8 worker processes attach with idle adoption (what every integration turns
on; only such workers can be canaries) and serve a synthetic request every
5 ms: each request reads the config and fails with the probability its
``fail_rate`` says, and is counted with ``reader.count_request(failed=...)``,
as the integrations count real ones. A publisher service
(``Publisher(..., rollout=Rollout(canary="25%", steps=("50%",), bake_s=1.5))``,
started with ``start()``) watches a JSON file; the file is rewritten twice:

a. **a bad candidate** (``fail_rate`` 0 -> 0.5): the canaries' failure
   ratio is soon far above the other workers', and the publisher rolls it
   back by itself;
b. **a good candidate**: a quarter of the workers, then half, then all, each
   step baked for ``bake_s``.

Each worker keeps, with CLOCK_MONOTONIC (one clock for the whole machine),
the moments the generation it serves changes, and counts its requests by the
content that served them. Measured from the candidate's publish (the
publisher's ``on_publish`` callback, which runs before any canary is
assigned): the rollback decision (as ``abort_rollout()`` begins), every
worker back on the stable content, the steps, the promotion (as ``promote()``
begins); which workers ever served the bad candidate (only canaries may) and
how many requests it served.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from bench._common import BenchError, Session, eprint, stop_process, write_atomic

WORKERS: Final = 8
#: Seconds between two synthetic requests of a worker: a steady, modest load.
PACE_S: Final = 0.005
#: The publisher's debounce of the watched file (the time to publish is taken
#: from the publish itself, not from the file write).
DEBOUNCE_S: Final = 0.02
#: A decision later than this after its due time means the rollout is stuck.
STUCK_S: Final = 15.0

STABLE: Final = {"version": "stable", "fail_rate": 0.0, "timeout_ms": 500}
BAD: Final = {"version": "bad", "fail_rate": 0.5, "timeout_ms": 50}
GOOD: Final = {"version": "good", "fail_rate": 0.0, "timeout_ms": 400}

WORKER = r"""
import json, os, random, sys, threading, time
from bench._common import set_parent_death_signal
import shmconf

set_parent_death_signal()
name, pace = sys.argv[1], float(sys.argv[2])
reader = shmconf.attach(name, timeout=30, idle_adoption=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
rng = random.Random(os.getpid())
held = []     # [monotonic, generation, version, canary] whenever one of them changes
served = {}   # version -> [requests, failures]
last = None
print("ready", flush=True)
due = time.monotonic()
while not done.is_set():
    cfg = reader.get()
    now = time.monotonic()
    failed = rng.random() < cfg["fail_rate"]
    reader.count_request(failed=failed)
    seen = (reader.generation, cfg["version"], reader.canary)
    if seen != last:
        held.append([now, *seen])
        last = seen
    counts = served.setdefault(cfg["version"], [0, 0])
    counts[0] += 1
    counts[1] += failed
    due += pace
    if due < now:  # late (the machine was busy): keep the pace, do not burst
        due = now + pace
    time.sleep(max(0.0, due - time.monotonic()))
print(json.dumps({"pid": os.getpid(), "held": held, "served": served}), flush=True)
reader.close()
"""


def _start_workers(session: Session, name: str, count: int) -> list[Any]:
    procs = [session.popen([sys.executable, "-c", WORKER, name, str(PACE_S)], stdin=-1,
                           stdout=-1, stderr=None, env=session.child_env(), text=True)
             for _ in range(count)]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise BenchError(f"a worker did not start: {line!r}")
    return procs


def _stop_workers(procs: list[Any]) -> list[dict[str, Any]]:
    for proc in procs:
        proc.stdin.close()
    found = []
    for proc in procs:
        try:
            line = proc.stdout.readline()
            if line:
                found.append(json.loads(line))
        finally:
            stop_process(proc, timeout=10)
    return found


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``predicate`` every millisecond; the monotonic time it became true."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} within {seconds:g} s")
        time.sleep(0.001)
    return time.monotonic()


def _timed_publisher(*args: Any, **kwargs: Any) -> Any:
    """A ``shmconf.Publisher`` that notes when it publishes and when it decides.

    ``published``: (monotonic, generation) from ``on_publish``, which runs
    right after each publish and, for a candidate, before the tick that
    assigns its canaries, so before any worker can hold it. ``decided``:
    (monotonic, action), stamped as ``promote()`` or ``abort_rollout()``
    begins, a few microseconds before the writer's commit point.
    """
    import shmconf

    class TimedPublisher(shmconf.Publisher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.published: list[tuple[float, int]] = []
            self.decided: list[tuple[float, str]] = []
            super().__init__(*args, **kwargs)
            self.on_publish(lambda generation, meta: self.published.append(
                (time.monotonic(), generation)))

        def promote(self, reason: str = "promoted by a person") -> int:
            self.decided.append((time.monotonic(), "promote"))
            return super().promote(reason)

        def abort_rollout(self, reason: str = "aborted by a person") -> int:
            self.decided.append((time.monotonic(), "rollback"))
            return super().abort_rollout(reason)

    return TimedPublisher(*args, **kwargs)


def _scenario(publisher: Any, source: Any, config: dict[str, Any],
              table_size: int) -> dict[str, Any]:
    """Write ``config`` into the watched file; follow its rollout until it is decided."""
    writer = publisher.writer
    written = time.monotonic()
    write_atomic(source, orjson.dumps(config))
    policy = publisher.rollout_policy
    _wait(lambda: publisher.rollout is not None, 10.0, "no rollout started")
    run = publisher.rollout
    candidate, stable = run.candidate, run.stable
    _wait(lambda: any(g == candidate for _, g in publisher.published), 5.0,
          f"generation {candidate} never reported published")
    published = next(t for t, g in publisher.published if g == candidate)
    decisions = len(publisher.decided)
    steps: list[float] = []
    canaries: dict[int, list[int]] = {}  # step -> canary pids the publisher chose
    due = published + policy.bake_s * len(policy.sizes) + STUCK_S
    while publisher.rollout is run:
        step, started = run.step, run.step_started
        canaries.setdefault(step + 1, [])
        for pid in list(run.canaries.values()):
            if pid not in canaries[step + 1]:
                canaries[step + 1].append(pid)
        if step >= len(steps) + 1:  # a new step began (its start is exact: monotonic)
            steps.append(started)
        if time.monotonic() > due:
            raise BenchError(f"the rollout of generation {candidate} never decided: "
                             f"{json.dumps(run.to_json())}")
        time.sleep(0.001)
    # The outcome is recorded after the decision's publish (and its history entry).
    _wait(lambda: (publisher.last_rollout or {}).get("candidate") == candidate, 5.0,
          f"no outcome recorded for the rollout of generation {candidate}")
    last = dict(publisher.last_rollout or {})
    if len(publisher.decided) <= decisions:
        raise BenchError(f"the rollout of generation {candidate} ended without a decision: "
                         f"{last.get('outcome')} ({last.get('reason')})")
    decided = publisher.decided[decisions][0]
    final = int(last.get("generation") or publisher.generation)
    _wait(lambda: sum(e.alive and e.generation == final for e in writer.readers())
          >= table_size, 10.0, f"not every worker adopted generation {final}")
    return {"version": config["version"], "written": written, "published": published,
            "candidate": candidate, "stable": stable, "final": final,
            "outcome": last.get("outcome"), "reason": last.get("reason"),
            "canary_health": last.get("canary_health"),
            "stable_health": last.get("stable_health"),
            "steps": steps, "decided": decided,
            "canaries": {str(k): v for k, v in canaries.items()}}


def run(session: Session) -> dict[str, Any]:
    import shmconf

    count = 4 if session.quick else WORKERS
    bake_s = 0.3 if session.quick else 1.5
    policy = shmconf.Rollout(canary="25%", bake_s=bake_s, steps=("50%",))
    name = session.name("rollout")
    source = session.path(name, "app.json")
    write_atomic(source, orjson.dumps(STABLE))
    publisher = _timed_publisher(name, [source], rollout=policy, debounce=DEBOUNCE_S)
    session.on_exit(f"unlink {name}", publisher.unlink)
    epoch = time.monotonic()
    publisher.start()
    try:
        procs = _start_workers(session, name, count)
        try:
            _wait(lambda: sum(e.alive and e.idle_adoption for e in publisher.writer.readers())
                  >= count, 10.0, f"fewer than {count} workers in the reader table")
            time.sleep(0.3 if session.quick else 0.5)  # everyone serving the stable version
            bad = _scenario(publisher, source, BAD, count)
            time.sleep(0.3 if session.quick else 0.6)
            good = _scenario(publisher, source, GOOD, count)
            time.sleep(0.2 if session.quick else 0.4)
        finally:
            workers = _stop_workers(procs)
    finally:
        publisher.unlink()
    if len(workers) != count:
        raise BenchError(f"{count - len(workers)} workers did not report")
    return _result(policy, count, epoch, workers, bad, good)


def _rel(t: float, epoch: float) -> float:
    return round(t - epoch, 4)


def _result(policy: Any, count: int, epoch: float, workers: list[dict[str, Any]],
            bad: dict[str, Any], good: dict[str, Any]) -> dict[str, Any]:
    """Figures from the workers' own records; every time relative to ``epoch``."""
    def first_at(pid_held: list[list[Any]], test: Callable[[list[Any]], bool],
                 after: float) -> float | None:
        return next((h[0] for h in pid_held if h[0] >= after and test(h)), None)

    # (a) the bad candidate: who held it, for how long, how many requests it served.
    holders = sorted(w["pid"] for w in workers if any(h[2] == "bad" for h in w["held"]))
    chosen = sorted({p for pids in bad["canaries"].values() for p in pids})
    back = []  # when each holder served the stable content again
    for w in workers:
        if w["pid"] in holders:
            t = first_at(w["held"], lambda h: h[2] != "bad", bad["published"])
            back.append(t if t is not None else float("nan"))
    on_rollback = [first_at(w["held"], lambda h: h[1] >= bad["final"], bad["published"])
                   for w in workers]
    served_bad = [w["served"].get("bad", [0, 0]) for w in workers]
    # (b) the good candidate: how many held it before each step and before the promotion.
    first_good = [first_at(w["held"], lambda h: h[2] == "good", good["published"])
                  for w in workers]
    marks = [*good["steps"], good["decided"]]
    before = [sum(1 for t in first_good if t is not None and t < m) for m in marks]
    all_good = [first_at(w["held"], lambda h: h[1] >= good["final"], good["published"])
                for w in workers]
    # How long after each step began its new canaries held the candidate.
    joined = []
    for step, nxt in zip(good["steps"], [*good["steps"][1:], good["decided"]], strict=True):
        late = [t - step for t in first_good if t is not None and step <= t < nxt]
        joined.append(round(max(late), 4) if late else None)

    def since(t: float | None, scenario: dict[str, Any]) -> float | None:
        return None if t is None or t != t else round(t - scenario["published"], 4)

    result = {
        "workers": count, "pace_ms": PACE_S * 1e3, "policy": policy.to_json(),
        "bad": {
            "candidate": bad["candidate"], "stable": bad["stable"], "final": bad["final"],
            "outcome": bad["outcome"], "reason": bad["reason"],
            "canary_health": bad["canary_health"], "stable_health": bad["stable_health"],
            "decision_s": since(bad["decided"], bad),
            "all_stable_content_s": since(max(back, default=bad["decided"]), bad),
            "all_rollback_generation_s": since(
                max((t for t in on_rollback if t is not None), default=None), bad),
            "canaries": chosen, "held_candidate": holders,
            "only_canaries": set(holders) <= set(chosen),
            "requests_bad": sum(r for r, _ in served_bad),
            "failures_bad": sum(f for _, f in served_bad),
            "file_to_publish_s": round(bad["published"] - bad["written"], 4),
        },
        "good": {
            "candidate": good["candidate"], "stable": good["stable"], "final": good["final"],
            "outcome": good["outcome"], "reason": good["reason"],
            "canary_health": good["canary_health"], "stable_health": good["stable_health"],
            "steps_s": [since(t, good) for t in good["steps"]],
            "decision_s": since(good["decided"], good),
            "all_hold_s": since(max((t for t in all_good if t is not None), default=None),
                                good),
            "held_before": before,  # workers holding it before step 2, ..., before promotion
            "step_joined_s": joined,  # step start -> its last new canary holds it
            "canaries": {k: sorted(v) for k, v in good["canaries"].items()},
            "file_to_publish_s": round(good["published"] - good["written"], 4),
        },
        # What the plot draws: each worker's changes, and the scenarios' moments.
        "timeline": {
            "workers": [{"pid": w["pid"],
                         "held": [[_rel(h[0], epoch), h[1], h[2], h[3]] for h in w["held"]]}
                        for w in sorted(workers, key=lambda w: w["pid"])],
            "bad": {"published": _rel(bad["published"], epoch),
                    "decided": _rel(bad["decided"], epoch),
                    "steps": [_rel(t, epoch) for t in bad["steps"]]},
            "good": {"published": _rel(good["published"], epoch),
                     "decided": _rel(good["decided"], epoch),
                     "steps": [_rel(t, epoch) for t in good["steps"]]},
        },
    }
    a, b = result["bad"], result["good"]
    if a["outcome"] != "rolled back" or not a["only_canaries"]:
        raise BenchError(f"the bad candidate: {a['outcome']!r} ({a['reason']}); held by "
                         f"{holders}, canaries {chosen}")
    if b["outcome"] != "promoted":
        raise BenchError(f"the good candidate was {b['outcome']!r}: {b['reason']}")
    eprint(f"  bad candidate: rolled back {a['decision_s']:.3f} s after its publish, every "
           f"worker on the stable content after {a['all_stable_content_s']:.3f} s; "
           f"{a['requests_bad']} requests served with it, by the canaries only ({len(holders)})")
    eprint(f"  good candidate: steps at {', '.join(f'{t:.2f}' for t in b['steps_s'])} s, "
           f"promoted at {b['decision_s']:.2f} s, every worker holds it at "
           f"{b['all_hold_s']:.2f} s (bake {policy.bake_s:g} s per step)")
    return result
