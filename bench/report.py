"""The report: ``docs/bench.md`` (tables, bars, notes); ``bench.plots`` draws its images.

Everything here works from the results dictionary alone (``bench/out/*.json``
holds the same), so a report can be rebuilt without measuring again::

    python -c "import json, pathlib, bench.report as r; \\
        r.write(json.load(open('bench/out/bench.json')), pathlib.Path('docs/bench.md'), \\
        pathlib.Path('docs/img'))"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import plots
from bench._format import NA, label, ns, ok
from bench.alternatives import REDIS_MISSING
from shmconf.adoption import BACKSTOP_S, ROLLOUT_FLUSH_S
from shmconf.service import ROLLOUT_TICK_S

#: Section names of the measures, for the conditions table.
MEASURE_TITLES = {
    "read_latency": "read latency, unchanged config",
    "new_generation": "shmconf: new generation",
    "publish": "shmconf: publish",
    "publish_file": "shmconf: file -> publish",
    "memory": "shmconf: memory per worker",
    "scaling": "aggregate reads/s",
    "under_updates": "reads while updating",
    "propagation": "propagation",
    "idle_cpu": "shmconf: idle publisher",
    "idle_adoption": "shmconf: idle workers",
    "first_request": "shmconf: first request after a publish",
    "publisher_restart": "shmconf: publisher killed",
    "rollout": "shmconf: a rollout",
}


# -- formatting --------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return NA if value is None else ns(value * 1e6)


def rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.3g} M/s"
    if value >= 1e3:
        return f"{value / 1e3:.3g} k/s"
    return f"{value:.3g} /s"


def size(value: float) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1024 * 1024:
        return f"{sign}{value / 1024 / 1024:.1f} MB"
    return f"{sign}{value / 1024:.0f} KB"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def failed_rows(errors: dict[str, str], columns: int) -> list[list[str]]:
    return [[label(key), f"failed: {reason}", *[""] * (columns - 2)]
            for key, reason in errors.items()]


def _failed(title: str, result: Any) -> str:
    if result is None:
        return f"_{title}: not measured in this run._"
    return f"_{title}: failed: {result.get('failed')}_"


#: The publisher's steps, as the bar notes name them.
STEPS = {
    "secrets": "finding secret fields",
    "validate": "pydantic validation",
    "history": "keeping the version in the history file",
    "serialize": "serializing",
    "digest": "digest",
    "diff": "diff",
    "write": "writing the slot",
}


# -- bars -------------------------------------------------------------------------------------


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each DESIGN.md bar: what was measured, whether it holds here, and why."""
    found: list[dict[str, Any]] = []
    machine = results.get("machine", {})
    cores = machine.get("usable_cores", machine.get("cores", 1))

    rl = results.get("read_latency")
    if ok(rl) and {"shmconf", "dict"} <= rl["rows"].keys():
        rows = rl["rows"]
        ratio = rows["shmconf"]["ratio"]
        check = rows.get("gencheck", {})
        why = (f"`get()` {ns(rows['shmconf']['mean_ns'])}, a dict lookup "
               f"{ns(rows['dict']['mean_ns'])}; the bare generation check is "
               f"{check.get('ratio', float('nan')):.2f}x")
        if check:
            why += " (the same load and compare, inline in Python)"
        why += f"; {rl.get('fast_path', 'the Python')} fast path measured"
        found.append({"measure": "`get()` on an unchanged config",
                      "bar": "≤ 2x a dict lookup",
                      "measured": f"{ratio:.2f}x", "holds": ratio <= 2, "why": why})

    sc = results.get("scaling")
    if ok(sc) and "shmconf" in sc["rows"] and "2" in sc["rows"]["shmconf"]:
        got = sc["rows"]["shmconf"]["2"]["vs_one"]
        floor = sc["rows"].get("dict", {}).get("2", {}).get("vs_one")
        why = f"{cores} usable cores"
        if floor is not None:
            why += f"; the plain dict floor, which shares nothing, scaled {floor:.2f}x"
            if got < 1.8 and floor < 1.8:
                why += (": with two readers on two cores the machine has no core to spare "
                        "(the harness, other processes, interrupts), so no reader scales 1.8x "
                        "here; shmconf scales like the floor, it adds no contention")
        found.append({"measure": "aggregate reads/s, 2 reader processes",
                      "bar": "≥ 1.8x one reader", "measured": f"{got:.2f}x",
                      "holds": got >= 1.8, "why": why})

    ng = results.get("new_generation")
    if ok(ng) and ng["rows"] and "plain_ratio" in ng["rows"][0]:
        for kind, what, limit, ref in (
                ("plain", "no model", 3.0, "`orjson.loads`"),
                ("model", "with a model", 1.3, "`orjson.loads` + `model_validate`")):
            ratios = [r[f"{kind}_ratio"] for r in ng["rows"]]
            each = "; ".join(f"{r['label']} {ns(r[f'{kind}_p50_ns'])} against "
                             f"{ns(r[f'ref_{kind}_ns'])}" for r in ng["rows"])
            found.append({
                "measure": f"first `get()` of a new generation, {what}",
                "bar": f"≤ {limit:g}x {ref}",
                "measured": ", ".join(f"{r['label']} {x:.2f}x"
                                      for r, x in zip(ng["rows"], ratios, strict=True)),
                "holds": max(ratios) <= limit,
                "why": f"p50 of the first `get()` after each publish against {ref} of the "
                       f"same payload, timed after the same publishes: {each}"})
        if "plain_all_ratio" in ng["rows"][0]:
            ratios = [r["plain_all_ratio"] for r in ng["rows"]]
            each = "; ".join(f"{r['label']} {ns(r['plain_all_p50_ns'])} against "
                             f"{ns(r['ref_plain_all_ns'])}" for r in ng["rows"])
            found.append({
                "measure": "first `get()` of a new generation, no model, every container "
                           "changed (nothing to share)",
                "bar": "≤ 3x `orjson.loads`",
                "measured": ", ".join(f"{r['label']} {x:.2f}x"
                                      for r, x in zip(ng["rows"], ratios, strict=True)),
                "holds": max(ratios) <= 3.0,
                "why": "the rows above publish a version that differs in one value, as a "
                       "config change usually does; here every dict and list of the config "
                       f"changed, so the reader can take none from the last snapshot: {each}"})

    pr = results.get("propagation")
    if ok(pr):
        file_rows = [r for r in pr["rows"] if r["alt"] == "shmconf-file"]
        if file_rows:
            row = max(file_rows, key=lambda r: r["readers"])
            why = (f"{row['readers']} reader processes, {row['rounds']} saves: p50 "
                   f"{ms(row['p50_ms'])}, max {ms(row['max_ms'])}; the floor is the "
                   f"{pr['debounce_ms']} ms debounce plus the readers' {pr['poll_ms']:.0f} ms "
                   "poll interval")
            found.append({"measure": f"file save -> all {row['readers']} workers hold it "
                          f"(debounce {pr['debounce_ms']} ms)", "bar": "p99 < 100 ms",
                          "measured": ms(row["p99_ms"]),
                          "holds": row["p99_ms"] < 100 and row["timeouts"] == 0, "why": why})

    pc = results.get("publish")
    for size_bytes, limit_ms in ((4096, 1.0), (1024 * 1024, 50.0)):
        row = _row(pc, size_bytes)
        if not row:
            continue
        got = row["model"]["p50_ms"]
        steps = row["steps_ms"]
        top = sorted(steps.items(), key=lambda kv: -kv[1])
        why = ("the steps, each timed alone: " +
               ", ".join(f"{STEPS.get(k, k)} {ms(v)}" for k, v in top) +
               f"; p90 {ms(row['model']['p90_ms'])}; without a model the publish takes "
               f"{ms(row['plain']['p50_ms'])}")
        found.append({"measure": f"publish {row['label']} (validate + serialize + write)",
                      "bar": f"< {limit_ms:g} ms", "measured": ms(got),
                      "holds": got < limit_ms, "why": why})

    first = results.get("first_request")
    if ok(first):
        for row in first["rows"]:
            if row["label"] != "64 KB":
                continue
            idle = row["idle"]
            got = idle["ratio_p99"]
            found.append({
                "measure": "first request after a 64 KB publish, gunicorn worker, idle "
                           "adoption on",
                "bar": "p99 within 2x steady state", "measured": f"{got:.2f}x",
                "holds": got <= 2.0,
                "why": f"p99 {ms(idle['first_p99_ms'])} against {ms(idle['steady_p99_ms'])} "
                       "for a request at the same pacing with nothing published; idle "
                       f"adoption off: {row['on_read']['ratio_p99']:.2f}x"})

    adoption = results.get("idle_adoption")
    if ok(adoption):
        got = adoption["last_p99_ms"]
        found.append({"measure": f"publish -> every one of {adoption['workers']} idle workers "
                                 "holds it (defaults: idle adoption)",
                      "bar": "< 1 s (aim: p99 < 100 ms)", "measured": f"p99 {ms(got)}",
                      "holds": got < 1000.0,
                      "why": f"the last worker of each of {adoption['rounds']} publishes, no "
                             f"request to any (median {ms(adoption['last_p50_ms'])}, max "
                             f"{ms(adoption['last_max_ms'])}): one futex wake reaches every "
                             "worker, each copies, parses and runs its callbacks on its "
                             "adoption thread"})
        idle_workers = adoption["futex"]
        got = idle_workers["cpu_percent"]
        found.append({"measure": f"CPU of {adoption['workers']} idle workers, idle adoption on",
                      "bar": "< 0.1 % of a core in total", "measured": f"{got:.4f} %",
                      "holds": got < 0.1,
                      "why": f"{idle_workers['cpu_ms']:.1f} ms of CPU in "
                             f"{idle_workers['seconds']:.0f} s, all workers together; the "
                             f"same workers polling every {adoption['poll_interval_s']:g} s "
                             f"instead: {adoption['poll']['cpu_percent']:.3f} %"})

    restart = results.get("publisher_restart")
    if ok(restart):
        got = restart["serving_max_s"]
        found.append({"measure": "publisher killed -> a new one serving, under an integration",
                      "bar": "< 2 s", "measured": f"{got:.2f} s", "holds": got < 2.0,
                      "why": f"the slowest of {restart['repeats']} SIGKILLs of a "
                             "PublisherProcess's publisher (median "
                             f"{restart['serving_median_s']:.2f} s): the supervisor's first "
                             "backoff (0.1 s), a fresh interpreter, the writer lock, the "
                             "sources read and checked"})

    idle = results.get("idle_cpu")
    if ok(idle):
        got = idle["cpu_percent"]
        found.append({"measure": "publisher idle CPU", "bar": "< 0.1 %",
                      "measured": f"{got:.4f} %", "holds": got < 0.1,
                      "why": f"{idle['cpu_ms']:.1f} ms of CPU in {idle['seconds']:.0f} s, "
                             f"{idle['threads']} threads (watcher, heartbeat)"})

    uu = results.get("under_updates")
    if ok(uu) and "shmconf" in uu["rows"]:
        row = uu["rows"]["shmconf"]
        control = uu["rows"].get("dict-control")
        retries = row.get("retries")
        p999 = row["p999_ns"]
        why = (f"{row['samples']:,} reads in {row['elapsed_s']:.1f} s at "
               f"{row['updates_per_s']:.0f} publishes/s; retries (the only way a read waits "
               f"for the writer): {retries}; longest read {ns(row['max_ns'])}, "
               f"{row['over_1ms']} over 1 ms")
        if control:
            why += (f"; the dict control under the same load: longest {ns(control['max_ns'])}, "
                    f"{control['over_1ms']} over 1 ms (the scheduler, not the segment)")
        found.append({"measure": "reads while publishing 1000/s",
                      "bar": "none blocks, p99.9 < 5 µs",
                      "measured": f"p99.9 {ns(p999)}, {retries} retries",
                      "holds": p999 < 5_000 and retries == 0 and row["errors"] == 0,
                      "why": why})
    return found


def _row(result: Any, size_bytes: int) -> dict[str, Any] | None:
    if not ok(result):
        return None
    for row in result["rows"]:
        if row["size"] == size_bytes:
            return row  # type: ignore[no-any-return]
    return None


# -- sections ---------------------------------------------------------------------------------


def _machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    conditions = results.get("conditions", {})
    rows = []
    for key, c in conditions.items():
        busy = f"{c['busy'] * 100:.0f} %" if "busy" in c else NA
        waited = f"{c['waited_s']:.0f} s" if "waited_s" in c else NA
        rows.append([MEASURE_TITLES.get(key, key), f"{c.get('seconds', 0):.0f} s", busy, waited])
    load_table = []
    if rows:
        load_table = [
            "",
            "Other processes share this machine. Before each measure the harness waits (up "
            "to 30 s) until the CPUs are mostly idle and records how busy other work kept "
            "them; a busy machine inflates the figures measured after it.",
            "",
            table(["measure", "took", "CPUs busy with other work at its start", "waited"], rows),
        ]
    return "\n".join([
        table(["CPU", "cores", "Python", "OS", "date"],
              [[m["cpu"], f"{m['cores']} ({m['usable_cores']} usable)", m["python"], m["os"],
                m["date"]]]),
        "",
        f"Load average (1, 5, 15 min) at the start: {m.get('loadavg_start')}, at the end: "
        f"{m.get('loadavg_end')} (this one counts the run's own reader processes). "
        f"The run took {results.get('elapsed_s', 0):.0f} s. "
        f"Packages: {versions}.",
        *(["Measured again later on the same machine (`python -m bench --only ... --update`): "
           + ", ".join(f"{MEASURE_TITLES.get(k, k)} ({when})"
                                     for k, when in results["updated"].items()) + "."]
          if results.get("updated") else []),
        *load_table,
    ])


def _bars_section(found: list[dict[str, Any]]) -> str:
    rows = [[b["measure"], b["bar"], b["measured"], "**yes**" if b["holds"] else "**no**"]
            for b in found]
    notes = [f"- **{b['measure']}** ({'holds' if b['holds'] else 'does not hold'}): {b['why']}."
             for b in found]
    return table(["measure", "bar", "measured here", "holds"], rows) + "\n\n" + "\n".join(notes)


def _read_latency(result: Any, img: str) -> str:
    if not ok(result):
        return _failed("read latency", result)
    rows = result["rows"]
    order = ["dict", "shmconf", "gencheck", "loop", "ultradict", "statpoll", "smd", "reread",
             "manager", "redis"]
    body = []
    for key in [k for k in order if k in rows] + [k for k in rows if k not in order]:
        r = rows[key]
        body.append([label(key), ns(r["mean_ns"]), ns(r["p50_ns"]), ns(r["p99_ns"]),
                     ns(r["p999_ns"]), f"{r['ratio']:.2f}x" if key != "loop" else NA])
    body += failed_rows(result["errors"], 6)
    overhead = rows.get("dict", {}).get("overhead_ns", float("nan"))
    return "\n".join([
        table(["alternative", "mean", "p50", "p99", "p99.9", "vs dict"], body),
        "",
        f"One process, a {result['config_bytes'] // 1024} KB config that does not change; each "
        "read returns the whole config. The mean is the time of 100-read batches divided by "
        "100, loop included (the empty loop row shows its share); the percentiles come from "
        "single reads timed one by one, minus the timer's own cost measured in the same "
        f"repetition ({ns(overhead)}), so they carry a few tens of ns of noise. "
        f"Median of {result['repetitions']} repetitions that interleave the alternatives.",
        "",
        f"![read latency]({img}/bench-read-latency.png)",
    ])


def _scaling(result: Any, img: str) -> str:
    if not ok(result):
        return _failed("scaling", result)
    counts = result["counts"]
    header = ["alternative", *[f"{n} proc." for n in counts],
              *[f"{n} vs 1" for n in counts if n != 1]]
    body = []
    for key, row in result["rows"].items():
        body.append([label(key), *[rate(row[str(n)]["reads_per_s"]) for n in counts],
                     *[f"{row[str(n)]['vs_one']:.2f}x" for n in counts if n != 1]])
    body += failed_rows(result["errors"], len(header))
    return "\n".join([
        table(header, body),
        "",
        f"Aggregate reads/s of N reader processes released together, reading flat out for "
        f"{result['duration_s']:g} s; median of {result['repetitions']} runs. The plain dict "
        "is each process reading its own copy: the most any alternative can scale on this "
        "machine. Server-based alternatives (Manager, Redis) also need their server's CPU.",
        "",
        f"![scaling]({img}/bench-scaling.png)",
    ])


def _propagation(results: dict[str, Any], img: str) -> str:
    result = results.get("propagation")
    if not ok(result):
        return _failed("propagation", result)
    counts = result["counts"]
    by_alt: dict[str, dict[int, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_alt.setdefault(row["alt"], {})[row["readers"]] = row
    header = ["alternative"]
    for n in counts:
        header += [f"{n} readers p50", f"{n} readers p99"]
    header += ["rounds", "failed reads"]
    body = []
    for key, per in by_alt.items():
        cells = [label(key)]
        for n in counts:
            row = per.get(n)
            cells += [ms(row["p50_ms"]), ms(row["p99_ms"])] if row else [NA, NA]
        any_row = next(iter(per.values()))
        cells += [str(any_row["rounds"]),
                  str(sum(r["read_errors"] for r in per.values()))]
        timeouts = sum(r["timeouts"] for r in per.values())
        if timeouts:
            cells[0] += f" ({timeouts} rounds timed out)"
        body.append(cells)
    body += failed_rows(result["errors"], len(header))
    return "\n".join([
        table(header, body),
        "",
        "Time from the call that makes a change (`publish()`, Redis `SET`, a dict update, an "
        "atomic file rewrite) to the moment every reader process holds it. Readers poll with a "
        f"{result['poll_ms']:g} ms sleep between reads, as a worker reads between requests; "
        "32 processes spinning flat out on a small machine would measure the scheduler. So "
        f"about {result['poll_ms']:g} ms of every figure is the poll interval. The shmconf file "
        f"row is a publisher service (`serve_forever`, debounce {result['debounce_ms']} ms) in "
        "its own process watching a YAML file that is saved atomically (temporary file, "
        "rename). \"Failed reads\" are reads that raised (a torn or half-written value).",
        *_adoption_note(results),
        "",
        f"![propagation]({img}/bench-propagation.png)",
    ])


def _adoption_note(results: dict[str, Any]) -> list[str]:
    """Why many readers on few cores take longer: each parses the new version once."""
    row4 = _row(results.get("new_generation"), 4096)
    prop = results.get("propagation")
    if not row4 or not ok(prop):
        return []
    most = max(prop["counts"])
    cores = results["machine"].get("usable_cores", 1)
    each = row4["plain_p50_ns"]
    return ["", (
        f"With {most} readers on {cores} cores the readers' own work counts: each one's first "
        f"`get()` of a new generation (copy, check, parse, freeze; {ns(each)} here without a "
        f"model, see below) runs {most} times, {ns(each * most)} of CPU shared by {cores} "
        "cores. That, not the segment, is most of shmconf's figure with "
        f"{most} readers; alternatives whose new-version read is cheaper per process come out "
        "ahead there, while server-based ones saturate their server.")]


def _under_updates(result: Any, img: str) -> str:
    if not ok(result):
        return _failed("reads while updating", result)
    body = []
    for key, r in result["rows"].items():
        body.append([label(key), f"{r['updates_per_s']:.0f}", ns(r["p50_ns"]), ns(r["p99_ns"]),
                     ns(r["p999_ns"]), ns(r["max_ns"]), str(r["over_1ms"]), str(r["errors"]),
                     f"{r['samples']:,}"])
    body += failed_rows(result["errors"], 9)
    retries = result["rows"].get("shmconf", {}).get("retries")
    return "\n".join([
        table(["alternative", "updates/s", "p50", "p99", "p99.9", "max", "> 1 ms",
               "failed reads", "reads"], body),
        "",
        f"A reader process times single reads for {result['duration_s']:g} s (or until its "
        f"sample buffer is full) while this process changes the {result['config_bytes'] // 1024}"
        f" KB config {result['target_updates_per_s']} times a second (`publish()`, `SET`, "
        "dict update, atomic file rewrite); \"updates/s\" is the rate actually reached. The "
        "tail includes the reads that pick up a new version. shmconf's reader retried "
        f"{retries} times (a retry is the only way a shmconf read can wait for the writer). "
        "The control row reads a plain dict in the reader process while shmconf publishes: "
        "its longest reads are what the scheduler alone does to a process on this machine.",
        "",
        f"![reads while updating]({img}/bench-under-updates.png)",
    ])


def _new_generation(result: Any) -> str:
    if not ok(result):
        return _failed("new generation", result)
    rows = result["rows"]
    if rows and "plain_ratio" not in rows[0]:
        return "_new generation: measured by an older harness; run `python -m bench.newgen`._"
    bars = [[r["label"], f"{ns(r['plain_p50_ns'])} ({ns(r['plain_p90_ns'])})",
             ns(r["ref_plain_ns"]), f"**{r['plain_ratio']:.2f}x**",
             *([f"{ns(r['plain_all_p50_ns'])} / {ns(r['ref_plain_all_ns'])}",
                f"**{r['plain_all_ratio']:.2f}x**"] if "plain_all_ratio" in r else ["", ""]),
             f"{ns(r['model_p50_ns'])} ({ns(r['model_p90_ns'])})", ns(r["ref_model_ns"]),
             f"**{r['model_ratio']:.2f}x**"] for r in rows]
    step_keys = ["slot", "table", "gc", "parse", "freeze", "collect_plain",
                 "free_plain", "plain_rest", "validate", "collect_model", "free_model",
                 "model_rest"]
    steps = [[r["label"], *[ns({**r["steps_ns"], "plain_rest": r["plain_rest_ns"],
                                "model_rest": r["model_rest_ns"]}.get(k)) for k in step_keys]]
             for r in rows]
    plain_options = ["orjson", "json", "json_object_hook", "json_pairs_hook", "copy_freeze",
                     "inplace_freeze", "shared_freeze", "c_freeze"]
    model_options = ["model_dict", "model_json_cache", "model_json"]

    def versus(r: dict[str, Any], key: str, base: str) -> str:
        o = r["options_ns"]
        return f"{o[key] / o[base]:.2f}x ({ns(o[key])})"

    plain_body = [[r["label"], *[versus(r, k, "orjson") if k in r["options_ns"] else ""
                                 for k in plain_options]] for r in rows]
    model_body = [[r["label"], *[versus(r, k, "model_dict") for k in model_options]]
                  for r in rows]
    return "\n".join([
        table(["config", "no model: first get() p50 (p90)", "orjson.loads", "ratio",
               "no model, every container changed: first get() / orjson.loads", "ratio",
               "with a model: first get() p50 (p90)", "orjson.loads + model_validate",
               "ratio"], bars),
        "",
        "The first `get()` after a publish: copy the slot, check its sequence words and "
        "checksum, note the generation in the reader table (the meta is parsed only when "
        "`reader.meta` is asked for), then build the "
        "snapshot with the cyclic GC paused: without a model, parse with orjson and give "
        "its dicts and lists their read-only classes where they lie (`shmconf.frozen.loads`, "
        "in C: `shmconf/_speedups.c`); with one, `model_validate_json` of the payload into "
        "the model's snapshot class. Each publish changes one value (the `version` key), as "
        "a config change usually does; the middle columns publish versions in which every "
        "dict and list changed: the worst case for the Python freeze that serves where the "
        "C speedups are not built, which then can take nothing from the last snapshot. "
        "Measured "
        "in the publishing process after each of many publishes, each read and each "
        "reference in turn first; the references are the bars' (the application's own "
        "model), on the same payload, with the GC treated as the reader treats it: paused, "
        "then the young collection that resuming it brings, which `get()` pays too; what "
        "was built is kept through that collection and freed after it, as `get()` keeps the "
        "new snapshot and frees the one it replaces.",
        "",
        table(["config", "slot copy + checks", "reader table", "GC pause",
               "no model: orjson parse", "freeze", "young GC", "free", "rest",
               "model: validate (JSON)", "young GC", "free", "rest"],
              steps),
        "",
        "The same read taken apart (`bench/newgen.py` calls the reader's internals), each "
        "step timed alone after each publish, medians. The young GC is the collection that "
        "comes when the GC resumes: every object allocated while it was paused is counted "
        "young; the C freeze leaves each container tracked or not as orjson made it (a dict "
        "of scalars is not), where the Python freeze's copies are all tracked. Free is "
        "freeing a snapshot as large, as `get()` frees the one it replaces. The rest is "
        "what the first `get()` costs beyond its steps: the lock, the method calls, the "
        "change callbacks' bookkeeping, the cache stores, and caches left cold by the "
        "publish (each figure is its own median, so a small rest can come out below zero).",
        "",
        table(["config", "orjson.loads", "json.loads (C scanner)", "json + object_hook",
               "json + object_pairs_hook", "orjson + recursive copy",
               "orjson + Python freeze", "orjson + Python freeze sharing what did not "
               "change (without the C speedups)", "orjson + C freeze in place (now)"],
              plain_body),
        "",
        table(["config", "orjson.loads + model_validate", "model_validate_json, string cache",
               "model_validate_json, no string cache (now)"], model_body),
        "",
        "The ways to build a snapshot, each timed alone on the same payload (median of "
        "several interleaved calls, the GC treated as above), as a ratio to `orjson.loads` "
        "(without a "
        "model) or to `orjson.loads` + `model_validate` (with one); every model-less option "
        "is checked to build the same read-only containers. The stdlib's C scanner is "
        "itself slower than orjson, and it has no hook for arrays, so its hooks freeze lists "
        "in Python. The Python freeze copies each of orjson's containers once, in C, into "
        "a layout-identical subclass and then gives it its read-only class; sharing, it "
        "first compares each top-level section with the previous version's (one value "
        "differs) and takes the equal ones as they are (comparing deeper levels too was "
        "measured and dropped: where everything changed it compared the same containers "
        "again at each level, 1.5x slower than not sharing at all). The C freeze, what "
        "`get()` uses where the speedups are built, copies nothing: it walks orjson's "
        "containers and sets each one's class to the read-only one, which adds no field to "
        "`dict` or `list` (the same layout; a container someone else holds is refused), "
        "so it costs a walk, cheaper than any comparison, and shares nothing. With a model, "
        "pydantic's own JSON parser builds no intermediate dicts; its string cache shares "
        "repeated string values (less memory for a config that repeats many) but parses "
        "slower here, so the snapshot class turns it off unless the model sets "
        "`cache_strings`. Not measured: "
        "freezing nested containers lazily, on access. It would need a Python "
        "`__getitem__`, `get`, `values`, `items` and iteration on every snapshot, slowing "
        "every read of the config, and `dict(cfg)`, `{**cfg}` and `list(...)` copy a "
        "subclass's storage in C, handing out the plain, mutable containers inside.",
    ])


new_generation_section = _new_generation


def _publish(result: Any, file_result: Any) -> str:
    parts = []
    if ok(result):
        body = []
        for r in result["rows"]:
            s = r["steps_ms"]
            body.append([r["label"], f"{ms(r['model']['p50_ms'])} ({ms(r['model']['p90_ms'])})",
                         f"{ms(r['plain']['p50_ms'])} ({ms(r['plain']['p90_ms'])})",
                         *[ms(s[k]) for k in ("validate", "serialize", "digest", "diff",
                                              "secrets", "write", "history")]])
        parts += [
            table(["config", "with model p50 (p90)", "no model p50 (p90)", "validate",
                   "serialize", "digest", "diff", "secrets", "write slot", "history"], body),
            "",
            "`Publisher.publish(mapping)`: validate with the model, serialize (orjson, sorted "
            "keys), SHA-256 digest, diff against the previous version (the changed paths "
            "readers get), find secret fields, write the slot and flip the generation, keep "
            "the version in the on-disk history. The step columns time each step alone.",
        ]
    else:
        parts.append(_failed("publish", result))
    parts.append("")
    if ok(file_result):
        body = [[r["label"], size(r["file_bytes"]), f"{ms(r['p50_ms'])} ({ms(r['p90_ms'])})",
                 ms(r["load_p50_ms"]), ms(r["pyyaml_p50_ms"])] for r in file_result["rows"]]
        parts += [
            table(["YAML config", "file", "load + validate + publish p50 (p90)",
                   "loading the file alone", "PyYAML CSafeLoader alone"], body),
            "",
            "The whole file path, `publish_now()` after the file was rewritten (the write is "
            "not timed): read and parse the YAML, check it, validate, publish. The next column "
            "times only the loading (`Publisher.load()`), the last one PyYAML's C loader on the "
            "same bytes, for scale; each is its own median.",
        ]
    else:
        parts.append(_failed("publish from a file", file_result))
    return "\n".join(parts)


def _idle(result: Any) -> str:
    if not ok(result):
        return _failed("idle CPU", result)
    return (f"A publisher service (`serve_forever` on a YAML file, debounce 50 ms, inotify "
            f"watcher) in its own process used **{result['cpu_percent']:.4f} %** of one CPU "
            f"over {result['seconds']:.0f} s ({result['cpu_ms']:.1f} ms on CPU, summed over its "
            f"{result['threads']} threads from `/proc/PID/task/*/schedstat`; "
            f"`/proc/PID/stat` utime + stime, in 10 ms ticks, gives "
            f"{result['cpu_percent_ticks']:.3f} %). Idle, it wakes once a second for the "
            "heartbeat.")


def _idle_adoption(result: Any) -> str:
    if not ok(result):
        return _failed("idle adoption", result)
    futex, poll = result["futex"], result["poll"]
    return (f"{result['workers']} worker processes attach with idle adoption (what every "
            "integration turns on) and then serve nothing: no `get()` at all. Each stamps "
            "CLOCK_MONOTONIC into a shared file from its change callback, which runs on the "
            "adoption thread once it holds the new generation. Over "
            f"{result['rounds']} publishes of a 4 KB config (in-process `publish()`), the "
            f"**last** worker held each one after {ms(result['last_p50_ms'])} median, "
            f"{ms(result['last_p99_ms'])} p99, {ms(result['last_max_ms'])} max; a single "
            f"worker, {ms(result['every_p50_ms'])} median and {ms(result['every_p99_ms'])} p99. "
            "The publisher wakes them all with one `FUTEX_WAKE`; the rest is each worker "
            "copying and parsing the config, two cores for all of them.\n\n"
            f"Idle, the {result['workers']} workers used **{futex['cpu_percent']:.4f} %** of "
            f"one core in total over {futex['seconds']:.0f} s ({futex['cpu_ms']:.1f} ms of "
            "CPU): the adoption threads sleep in the kernel and wake on their own only every "
            f"{BACKSTOP_S:g} s. The floor it replaces, a thread polling the generation every "
            f"{result['poll_interval_s']:g} s, cost the same workers "
            f"**{poll['cpu_percent']:.3f} %** (measured over {poll['seconds']:.0f} s, right "
            "after).")


def _first_request(result: Any) -> str:
    if not ok(result):
        return _failed("first request after a publish", result)
    rows = []
    for row in result["rows"]:
        for key, adopting in (("on_read", "off"), ("idle", "on")):
            r = row[key]
            rows.append([row["label"], adopting, ms(r["steady_p50_ms"]), ms(r["steady_p99_ms"]),
                         ms(r["first_p50_ms"]), ms(r["first_p99_ms"]), ms(r["first_max_ms"]),
                         f"**{r['ratio_p99']:.2f}x**", ms(r["busy_p99_ms"])])
    return ("gunicorn with 2 sync workers (`ShmconfHooks`, the app reads `shmconf.current()` on "
            "every request), the publisher in the benchmark's process, requests from it over "
            "a new connection each. *Steady*: a request every 30-60 ms with nothing published; "
            "*first*: the publish returns and a request goes out at once, one per publish at "
            "the same pacing. Without idle adoption the worker that takes the request adopts "
            "inside it; with it, the worker's adoption thread has just started on the same "
            "copy and parse, and the request waits for the GIL for what is left of it (orjson and "
            "pydantic hold the GIL for a whole parse, and a thread that computes keeps every "
            "other thread waiting up to the 5 ms switch interval at each of its system "
            "calls).\n\n"
            + table(["config", "idle adoption", "steady p50", "steady p99", "first p50",
                     "first p99", "first max", "first / steady p99",
                     "back-to-back p99"], rows)
            + "\n\nBack-to-back requests (no pause) are faster than paced ones: a worker "
            "that slept in `accept` for 30 ms wakes up cold. With idle adoption every worker "
            "adopts at the same moment: the first request then shares the machine's cores "
            "with every worker's parse (here 2 cores, 2 workers and the client), and waits for "
            "its own worker's GIL. A 1 MB config still stalls the "
            "first request by about a parse either way: idle adoption moves the parse off the "
            "request, but not off the worker's GIL. Bounding that stall (parsing a large "
            "payload section by section and yielding between sections) is not done.")


def _restart(result: Any) -> str:
    if not ok(result):
        return _failed("publisher restart", result)
    return (f"A `PublisherProcess` (what gunicorn's `ShmconfHooks` and a uvicorn launcher "
            f"start) had its publisher SIGKILLed {result['repeats']} times, each a fresh one, "
            "so that every kill meets the supervisor's first backoff (0.1 s) as a one-off "
            "crash does. From the kill, a new publisher **held the name** (the anchor names "
            f"it, with a fresh heartbeat) after {result['holds_median_s']:.2f} s median "
            f"({result['holds_max_s']:.2f} s max), and was **serving** (sources read and "
            f"checked, watching) after {result['serving_median_s']:.2f} s median "
            f"({result['serving_max_s']:.2f} s max). Most of it is the new interpreter's "
            "start; workers serve the last good config throughout.")


def _rollout(result: Any, img: str) -> str:
    if not ok(result):
        return _failed("rollout", result)
    bad, good, policy = result["bad"], result["good"], result["policy"]
    workers = result["workers"]
    sizes = " -> ".join([str(policy["canary"]), *map(str, policy["steps"]), "all"])
    steps = ", ".join(f"step {n} at {ms(t * 1e3)}"
                      for n, t in enumerate(good["steps_s"], start=2))
    joined = ", ".join(ms(t * 1e3) for t in good.get("step_joined_s", []) if t is not None)
    before = good["held_before"]
    rows = [
        ["a. bad candidate (`fail_rate` 0 -> 0.5)", "publish -> rolled back",
         f"**{ms(bad['decision_s'] * 1e3)}**"],
        ["", "publish -> every worker serves the stable content again",
         ms(bad["all_stable_content_s"] * 1e3)],
        ["", "workers that ever served it",
         f"{len(bad['held_candidate'])} of {workers}: "
         + ("only the canaries" if bad["only_canaries"] else "**not only canaries**")],
        ["", "requests served with it (failed)",
         f"{bad['requests_bad']} ({bad['failures_bad']})"],
        ["b. good candidate", "publish -> " + ", ".join(
            f"step {n}" for n in range(2, len(good["steps_s"]) + 2)),
         ", ".join(ms(t * 1e3) for t in good["steps_s"])],
        ["", "publish -> promoted", f"**{ms(good['decision_s'] * 1e3)}**"],
        ["", "publish -> every worker holds it", ms(good["all_hold_s"] * 1e3)],
        ["", "workers holding it before " + ", before ".join(
            [*(f"step {n}" for n in range(2, len(before) + 1)), "the promotion"]),
         " / ".join(f"{n} of {workers}" for n in before)],
    ]
    return "\n".join([
        f"A real rollout: {workers} worker processes attach with idle adoption (only such "
        f"workers can be canaries) and each serves a synthetic request every "
        f"{result['pace_ms']:g} ms, failing with the probability its config's `fail_rate` "
        "says and counted with `reader.count_request(failed=...)`, as the integrations count "
        "real requests. A publisher service in the benchmark's process watches a JSON file "
        f"with `Rollout(canary={policy['canary']!r}, steps={tuple(policy['steps'])!r}, "
        f"bake_s={policy['bake_s']:g})` (min_requests {policy['min_requests']}, "
        f"max_failure_increase {policy['max_failure_increase']:g}); the file is rewritten "
        "twice, first with a bad candidate, then with a good one. Times run from the "
        "candidate's publish; each worker records, with CLOCK_MONOTONIC, when the content it "
        "serves changes.",
        "",
        table(["scenario", "measure", "measured"], rows),
        "",
        f"**a.** The publisher's reason: \"{bad['reason']}\". The decision waits for the "
        f"canaries' counts: each worker's adoption thread writes them into the reader table "
        f"every {ROLLOUT_FLUSH_S:g} s while a rollout runs, and the publisher judges every "
        f"{ROLLOUT_TICK_S:g} s, so a candidate this bad is rolled back within about "
        f"{ROLLOUT_FLUSH_S + ROLLOUT_TICK_S:g} s of reaching its canaries, whatever the bake "
        "time. The rollback is the stable content published again as a new generation, for "
        "every worker; the last canary served it again within "
        f"{ms(max(bad['all_stable_content_s'] - bad['decision_s'], 0.001) * 1e3)} of the "
        "decision (its next request), "
        "and " + ("no other worker ever served the candidate." if bad["only_canaries"] else
                  "**a worker that was no canary served the candidate too**."),
        "",
        f"**b.** {sizes}, each step baked {policy['bake_s']:g} s: {steps}, promoted at "
        f"{ms(good['decision_s'] * 1e3)}; the canaries failed {good['canary_health']['failures']} "
        f"of {good['canary_health']['requests']} requests."
        + (f" A step's new canaries are chosen on the publisher's next tick and held the "
           f"candidate {joined} after their step began; the step's bake counts from their "
           "choice." if joined else ""),
        "",
        f"![a rollout, per worker]({img}/bench-rollout.png)",
    ])


def _memory(result: Any) -> str:
    if not ok(result):
        return _failed("memory", result)
    body = [[r["label"], "yes" if r["model"] else "no", size(r["rss_delta"]),
             size(r["pss_delta"]), size(r["uss_delta"])] for r in result["rows"]]
    repetitions = result["rows"][0].get("repetitions", 1) if result["rows"] else 1
    return "\n".join([
        table(["config", "model", "RSS", "PSS", "USS (private)"], body),
        "",
        "Growth of a fresh reader process from just before `attach()` to just after the first "
        "`get()` (from `/proc/self/smaps_rollup`; shmconf, orjson and pydantic already "
        f"imported; the median of {repetitions} fresh processes). USS is what that worker "
        "alone pays: the parsed config (Python objects "
        "are several times the JSON size). RSS also counts the shared-memory pages it "
        "touched, which all workers share.",
    ])


def _notes(results: dict[str, Any]) -> str:
    from bench.alternatives import BY_KEY

    lines = [f"- **{cls.label}**: {cls.how}." for key, cls in BY_KEY.items() if cls.how]
    lines.append("- Reader processes are started with `sys.executable -m bench.worker` and "
                 "talk JSON lines over their pipes; nothing of the harness is pickled "
                 "(Manager, shared-memory-dict and UltraDict pickle internally).")
    lines.append("- Every run uses its own config names, runtime directory and temporary "
                 "directory, and removes its segments, files and processes at the end, also "
                 "after an error or Ctrl-C.")
    lines.append(f"- A missing redis-server is reported as \"{REDIS_MISSING}\".")
    return "\n".join(lines)


def _etcd_fanout(result: dict[str, Any] | None) -> str:
    if not result:
        return "Not measured in this run."
    if "failed" in result:
        return f"Not measured: {result['failed']}."
    from bench.etcd_fanout import table

    return "\n".join([
        table(result["rows"]),
        "",
        f"One etcd on loopback; each simulated host is a `shmconf publish` process with its "
        f"own config name watching the same etcd prefix, and {result['readers_per_host']} "
        "reader processes that poll `get()` every millisecond. The time runs from the etcd "
        "put to the last reader of the last host holding the new value; 20 rounds. All of it "
        "shares this machine's 2 cores, so the figure grows with the process count far more "
        "than a real fleet's would: there each host has its own CPUs and only the watch "
        "event crosses the network. [etcd.md](etcd.md) maps this to 1,000 and 10,000 hosts.",
    ])


def markdown(results: dict[str, Any], img: str) -> str:
    found = bars(results)
    sections = [
        "# Benchmarks",
        "",
        "shmconf side by side with what users pick instead, measured in one run on one "
        "machine: ratios are taken within the run, each figure is the median of several "
        "repetitions. `make bench` (`.venv/bin/python -m bench`) measures everything again "
        "and rewrites this page and its plots; `python -m bench --quick` is a smoke run of "
        "under a minute that writes to `bench/out/`; `make soak` "
        "(`python -m bench.soak --minutes 10`) is the leak check.",
        "",
        "## Machine",
        "",
        _machine(results),
        "",
        "## Bars",
        "",
        "The bars of the design, on this machine:",
        "",
        _bars_section(found),
        "",
        "## Read latency, unchanged config",
        "",
        _read_latency(results.get("read_latency"), img),
        "",
        "## Aggregate reads/s by reader processes",
        "",
        _scaling(results.get("scaling"), img),
        "",
        "## Propagation to every reader process",
        "",
        _propagation(results, img),
        "",
        "## Reads while the config changes 1000 times a second",
        "",
        _under_updates(results.get("under_updates"), img),
        "",
        "## shmconf: reading a new generation",
        "",
        _new_generation(results.get("new_generation")),
        "",
        "## shmconf: publish cost",
        "",
        _publish(results.get("publish"), results.get("publish_file")),
        "",
        f"![shmconf by config size]({img}/bench-shmconf-sizes.png)",
        "",
        "## shmconf: idle publisher",
        "",
        _idle(results.get("idle_cpu")),
        "",
        "## shmconf: idle workers adopt a publish",
        "",
        _idle_adoption(results.get("idle_adoption")),
        "",
        "## shmconf: first request after a publish (gunicorn)",
        "",
        _first_request(results.get("first_request")),
        "",
        "## shmconf: publisher killed under an integration",
        "",
        _restart(results.get("publisher_restart")),
        "",
        "## shmconf: a rollout, rolled back and promoted",
        "",
        _rollout(results.get("rollout"), img),
        "",
        "## shmconf: memory per worker",
        "",
        _memory(results.get("memory")),
        "",
        "## Past one host: one etcd, N simulated hosts",
        "",
        _etcd_fanout(results.get("etcd_fanout")),
        "",
        "## How each alternative is set up",
        "",
        _notes(results),
        "",
    ]
    return "\n".join(sections)


def summary(results: dict[str, Any]) -> str:
    """The bars as plain text, for the terminal."""
    lines = ["bars on this machine:"]
    for b in bars(results):
        lines.append(f"  [{'ok' if b['holds'] else 'NO'}] {b['measure']}: {b['measured']} "
                     f"(bar {b['bar']})")
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path, img_dir: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    try:
        plots.draw(results, img_dir)
    except ImportError as exc:
        results.setdefault("notes", []).append(f"plots skipped: {exc}")
    rel = img_dir.relative_to(out.parent) if img_dir.is_relative_to(out.parent) else img_dir
    out.write_text(markdown(results, str(rel)))
