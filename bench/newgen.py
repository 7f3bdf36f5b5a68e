"""The first ``get()`` of a new generation: its cost against the parse, step by step, options.

``python -m bench.newgen [--quick]`` prints the three tables; ``python -m
bench`` runs the same measure (``new_generation``) and docs/bench.md shows it.

1. **Against the bars.** After each publish, in a rotating order: the first
   ``get()`` of a reader without a model and of one with a model, and the
   references the bars name, on the same payload: ``orjson.loads``, and
   ``orjson.loads`` + ``model_validate`` of the application's model, with the
   GC treated as the reader treats it (see :func:`_paused`). Medians, and
   their ratios within the run.
2. **Step by step.** The reader's slow path taken apart on probe readers,
   each step timed alone after each publish: copying and checking the slot,
   the reader-table store, pausing the GC, the parse (and
   freeze, or validation). What ``get()`` costs beyond their sum is the rest:
   the lock, the method calls, the callbacks' bookkeeping, the cache stores.
   It calls the reader's internals, so it follows them when they change.
3. **Options.** The ways to build a snapshot, each timed alone on the same
   payload (median of several calls, the GC treated as the reader treats it),
   as ratios to ``orjson.loads``: the stdlib's C scanner with a hook that
   builds the read-only containers as it goes, the recursive copy shmconf
   used before, the Python freezes (in place, and sharing what did not
   change) and the C one it uses where built; for a model,
   ``model_validate`` of orjson's dicts against ``model_validate_json``
   with and without pydantic's string cache.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import orjson

from bench._common import (
    KIB,
    MIB,
    Session,
    eprint,
    make_config,
    percentiles,
    settings_model,
    size_label,
    with_every_container_changed,
    with_version,
)
from shmconf import frozen
from shmconf._fastpath import speedups
from shmconf.frozen import FrozenDict, FrozenList, _NewDict, _NewList

#: Publishes per size (quick runs: a smoke test only).
REPS = {4 * KIB: 300, 64 * KIB: 100, MIB: 20}
QUICK_REPS = {4 * KIB: 20, 64 * KIB: 5, MIB: 2}


def run(session: Session) -> dict[str, Any]:
    """Every size: the bars' ratios, the steps and the options (see the module docstring)."""
    import shmconf

    model = settings_model()
    rows: list[dict[str, Any]] = []
    for size, reps in (QUICK_REPS if session.quick else REPS).items():
        config = make_config(size)
        name = session.name("newgen")
        publisher = shmconf.Publisher(name)
        readers: list[Any] = []
        try:
            publisher.publish(config)
            plain, typed, probe, typed_probe = readers = [
                shmconf.attach(name, model=m, make_current=False)
                for m in (None, model, None, model)]
            times = _first_reads(publisher, config, reps, plain, typed, probe, typed_probe,
                                 model)
            worst = _first_reads(publisher, config, reps, plain, typed, probe, typed_probe,
                                 model, change=with_every_container_changed, only_plain=True)
        finally:
            for reader in readers:
                reader.close()
            publisher.unlink()
        payload = publisher_payload(config, reps + 1)
        row = {"size": size, "label": size_label(size), "payload_bytes": len(payload),
               "reps": reps, **_summary(times), **_worst_summary(worst),
               "options_ns": options(payload, model, publisher_payload(config, reps))}
        rows.append(row)
        eprint(f"  new generation {row['label']}: {row['plain_p50_ns'] / 1000:.1f} us plain "
               f"({row['plain_ratio']:.2f}x orjson.loads), {row['model_p50_ns'] / 1000:.1f} us "
               f"with a model ({row['model_ratio']:.2f}x orjson.loads + model_validate)")
    return {"rows": rows}


def publisher_payload(config: dict[str, Any], version: int) -> bytes:
    """The bytes a publisher writes for ``config`` at ``version`` (its canonical JSON)."""
    from shmconf import content

    return content.canonical(with_version(config, version))


def _first_reads(publisher: Any, config: dict[str, Any], reps: int, plain: Any, typed: Any,
                 probe: Any, typed_probe: Any, model: type[Any],
                 change: Callable[[dict[str, Any], int], dict[str, Any]] = with_version,
                 *, only_plain: bool = False) -> dict[str, list[int]]:
    """Time each first read, reference and step after each publish; ns lists by name.

    ``change(config, n)`` is the n-th version published: one value changed
    (``with_version``), or every container (``with_every_container_changed``).
    """
    times: dict[str, list[int]] = {}
    for rep in range(reps + 2):
        publisher.publish(change(config, rep + 2))
        # The probes' copy of the slot is also the references' payload.
        payload = probe._read_slot()[2]
        jobs: list[Callable[[], dict[str, int]]] = [
            lambda: {"plain": _timed(plain.get)},
            lambda: {"model": _timed(typed.get)},
            lambda p=payload: {"ref_plain": _paused(lambda: orjson.loads(p))},
            lambda p=payload: {"ref_model": _paused(lambda: model.model_validate(orjson.loads(p)))},
            lambda: _steps(probe, typed_probe),
        ]
        if only_plain:
            jobs = [jobs[0], jobs[2]]
        shift = rep % len(jobs)  # each one goes first as often as the others
        for job in jobs[shift:] + jobs[:shift]:
            result = job()
            if rep >= 2:  # the first two map the data segment
                for key, value in result.items():
                    times.setdefault(key, []).append(value)
    return times


def _timed(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _paused(fn: Callable[[], object]) -> int:
    """``fn`` timed as an application keeps what it parsed: GC paused, result kept, then freed.

    ``get()`` builds the new snapshot with the GC paused, keeps it, and frees
    the snapshot it replaces. The reference does the same with ``fn``'s
    result: built with the GC paused, kept while the GC resumes (allocations
    go on counting while it is paused, so the young generation's collection
    comes as soon as it resumes, and it has the kept result to walk through,
    exactly as inside ``get()``), then freed. Neither side pushes the
    collection or the free onto whatever runs next.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        box = [fn()]
        if collecting:
            gc.enable()
            if gc.get_count()[0] > gc.get_threshold()[0]:
                gc.collect(0)
        box.clear()
        return time.perf_counter_ns() - t0
    finally:
        if collecting:
            gc.enable()


def _steps(probe: Any, typed_probe: Any) -> dict[str, int]:
    """The reader's slow path, one step at a time (``Reader._adopt`` and ``_parse``)."""
    now = time.perf_counter_ns
    t0 = now()
    _, _meta, payload, _ = probe._read_slot()  # R1-R6: copy, sequence words, crc32
    t1 = now()
    t2 = t1  # the meta is parsed only when someone asks for reader.meta
    probe._update_entry()  # R7: the reader-table write
    t3 = now()
    collecting = gc.isenabled()
    gc.disable()
    if collecting:
        gc.enable()
    t4 = now()
    steps = {"slot": t1 - t0, "table": t3 - t2, "gc": t4 - t3}
    gc.disable()
    try:
        t0 = now()
        parsed = orjson.loads(payload)
        t1 = now()
        # As get() does: in place in C, else sharing what did not change (frozen.loads).
        box = [frozen._freeze(parsed) if speedups is not None
               else frozen._freeze_reusing(parsed, probe._snapshot)]
        del parsed  # as frozen.loads() drops orjson's containers
        t2 = now()
        steps.update(parse=t1 - t0, freeze=t2 - t1, **_after(box, "plain"))
        gc.disable()
        t0 = now()
        box = [typed_probe._parse(payload)]  # model_validate_json, as get() does it
        steps.update(validate=now() - t0, **_after(box, "model"))
    finally:
        if collecting:
            gc.enable()
    return {f"step_{key}": value for key, value in steps.items()}


def _after(box: list[object], kind: str) -> dict[str, int]:
    """What a snapshot costs once built: the young collection, then freeing it.

    ``box`` holds the only reference to the snapshot; it is emptied.
    """
    t0 = time.perf_counter_ns()
    gc.enable()
    if gc.get_count()[0] > gc.get_threshold()[0]:
        gc.collect(0)
    t1 = time.perf_counter_ns()
    box.clear()
    t2 = time.perf_counter_ns()
    return {f"collect_{kind}": t1 - t0, f"free_{kind}": t2 - t1}


def _worst_summary(times: dict[str, list[int]]) -> dict[str, Any]:
    """The model-less first read when every container changed, against ``orjson.loads``."""
    got, ref = median(times["plain"]), median(times["ref_plain"])
    return {"plain_all_p50_ns": got, "ref_plain_all_ns": ref, "plain_all_ratio": got / ref}


def _summary(times: dict[str, list[int]]) -> dict[str, Any]:
    p = {key: percentiles(values, len(values), [50, 90]) for key, values in times.items()}
    steps = {key.removeprefix("step_"): p[key][0] for key in p if key.startswith("step_")}
    shared = steps["slot"] + steps["table"] + steps["gc"]
    plain_steps = shared + sum(steps[k] for k in ("parse", "freeze", "collect_plain",
                                                  "free_plain"))
    model_steps = shared + sum(steps[k] for k in ("validate", "collect_model", "free_model"))
    return {
        "plain_p50_ns": p["plain"][0], "plain_p90_ns": p["plain"][1],
        "model_p50_ns": p["model"][0], "model_p90_ns": p["model"][1],
        "ref_plain_ns": p["ref_plain"][0], "ref_model_ns": p["ref_model"][0],
        "plain_ratio": p["plain"][0] / p["ref_plain"][0],
        "model_ratio": p["model"][0] / p["ref_model"][0],
        "steps_ns": steps,
        "plain_rest_ns": p["plain"][0] - plain_steps,
        "model_rest_ns": p["model"][0] - model_steps,
    }


# -- options ----------------------------------------------------------------------------


def options(payload: bytes, model: type[Any], previous: bytes) -> dict[str, float]:
    """Each way to build a snapshot from ``payload``, timed alone; median ns by name.

    ``previous`` is the version before (one value differs): what the
    sharing freeze takes unchanged containers from. The C freeze
    (``shmconf._speedups``) is measured where it is built.
    """
    from pydantic import ConfigDict

    from shmconf.model import snapshot_model, validate

    snapshot = snapshot_model(model)  # its string cache is off (shmconf.model)
    before = frozen.loads(previous)
    cached = type(model.__name__, (snapshot,), {"model_config": ConfigDict(cache_strings=True)})
    candidates: dict[str, Callable[[], object]] = {
        "orjson": lambda: orjson.loads(payload),
        "json": lambda: json.loads(payload),
        "json_object_hook": lambda: _top(json.loads(payload, object_hook=_object_hook)),
        "json_pairs_hook": lambda: _top(json.loads(payload, object_pairs_hook=_pairs_hook)),
        "copy_freeze": lambda: _copy_freeze(orjson.loads(payload)),
        "inplace_freeze": lambda: frozen._freeze_owned(orjson.loads(payload)),
        "shared_freeze": lambda: frozen._freeze_reusing(orjson.loads(payload), before),
        "model_dict": lambda: model.model_validate(orjson.loads(payload)),
        "model_json_cache": lambda: validate(cached, payload, by_name=True),
        "model_json": lambda: validate(snapshot, payload, by_name=True),
    }
    if speedups is not None:
        candidates["c_freeze"] = lambda: speedups.freeze(orjson.loads(payload))
    expected = frozen.loads(payload)
    for key in ("json_object_hook", "json_pairs_hook", "copy_freeze", "inplace_freeze",
                "shared_freeze", "c_freeze"):
        if key not in candidates:
            continue
        _check_snapshot(candidates[key](), expected, key)
    calls = 3 if len(payload) > 256 * KIB else 15
    samples: dict[str, list[int]] = {key: [] for key in candidates}
    for _ in range(calls):  # interleaved: a slow moment of the machine hits all alike
        for key, fn in candidates.items():
            samples[key].append(_paused(fn))
    return {key: float(median(values)) for key, values in samples.items()}


def _check_snapshot(got: Any, expected: Any, what: str) -> None:
    """An option counts only if it builds the same read-only containers."""
    if got != expected:
        raise AssertionError(f"{what}: another value")
    stack = [got]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if type(node) is not FrozenDict:
                raise AssertionError(f"{what}: a {type(node).__name__} in the snapshot")
            stack.extend(node.values())
        elif isinstance(node, list):
            if type(node) is not FrozenList:
                raise AssertionError(f"{what}: a {type(node).__name__} in the snapshot")
            stack.extend(node)


def _copy_freeze(value: Any) -> Any:
    """The recursive copy shmconf froze snapshots with before ``frozen.loads``."""
    if type(value) is dict:
        frozen_dict = dict.__new__(FrozenDict)
        dict.__init__(frozen_dict, {key: _copy_freeze(item) if type(item) is dict
                                    or type(item) is list else item
                                    for key, item in value.items()})
        return frozen_dict
    if type(value) is list:
        frozen_list = list.__new__(FrozenList)
        list.__init__(frozen_list, [_copy_freeze(item) if type(item) is dict
                                    or type(item) is list else item for item in value])
        return frozen_list
    return value


# The C scanner calls a hook with each object, innermost first; it has no hook
# for arrays, so each object's hook freezes the lists among its values (their
# objects are frozen already) and the top level is frozen last.


def _object_hook(value: dict[str, Any]) -> Any:
    for key, item in value.items():
        if type(item) is list:
            value[key] = _hook_list(item)
    frozen = _NewDict(value)
    frozen.__class__ = FrozenDict
    return frozen


def _pairs_hook(pairs: list[tuple[str, Any]]) -> Any:
    frozen = _NewDict((key, _hook_list(item) if type(item) is list else item)
                      for key, item in pairs)
    frozen.__class__ = FrozenDict
    return frozen


def _hook_list(value: list[Any]) -> Any:
    frozen = _NewList([_hook_list(item) if type(item) is list else item for item in value])
    frozen.__class__ = FrozenList
    return frozen


def _top(value: Any) -> Any:
    return _hook_list(value) if type(value) is list else value


# -- python -m bench.newgen --------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.newgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few publishes per size")
    args = parser.parse_args(argv)
    from bench import report

    with Session(quick=args.quick) as session:
        result = run(session)
    print(report.new_generation_section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
