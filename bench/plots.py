"""The plots of the report: ``docs/img/bench-*.png``, drawn with matplotlib.

Like the report, they work from the results dictionary alone. matplotlib is
imported when drawing, so the rest of the bench runs without it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._format import label, ns, ok

#: Colours: shmconf stands out, the rest are muted.
COLORS = {"shmconf": "#d62728", "shmconf-file": "#ff7f0e", "gencheck": "#f4a3a3",
          "dict": "#7f7f7f", "dict-control": "#7f7f7f", "manager": "#1f77b4",
          "redis": "#9467bd", "smd": "#8c564b", "ultradict": "#e377c2", "statpoll": "#17becf",
          "reread": "#bcbd22", "loop": "#c7c7c7"}


def draw(results: dict[str, Any], img_dir: Path) -> None:
    """Write the PNG plots of ``results`` into ``img_dir``; ``ImportError`` without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "font.size": 9})
    # Each plot: its file, the figure's layout, and what draws it (False: no data).
    plots: list[tuple[str, dict[str, Any], Callable[[Any], bool]]] = [
        ("bench-read-latency.png", {"figsize": (8, 4.2)},
         lambda ax: _plot_read_latency(results, ax)),
        ("bench-scaling.png", {"figsize": (8, 4.2)}, lambda ax: _plot_scaling(results, ax)),
        ("bench-propagation.png", {"figsize": (8, 4.2)},
         lambda ax: _plot_propagation(results, ax)),
        ("bench-under-updates.png", {"figsize": (8, 4.2)},
         lambda ax: _plot_under_updates(results, ax)),
        ("bench-shmconf-sizes.png", {"nrows": 1, "ncols": 2, "figsize": (9, 3.8)},
         lambda axes: _plot_sizes(results, axes)),
        ("bench-rollout.png", {"nrows": 1, "ncols": 2, "figsize": (10, 4.6),
                               "gridspec_kw": {"width_ratios": [1, 1.7]}},
         lambda axes: _plot_rollout(results, axes)),
    ]
    for name, layout, plot in plots:
        fig, axes = plt.subplots(**layout)
        try:
            if plot(axes):
                fig.tight_layout()
                fig.savefig(img_dir / name)
        finally:
            plt.close(fig)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 15, break_long_words=False)


def _color(key: str) -> str:
    return COLORS.get(key, "#333333")


def _plot_read_latency(results: dict[str, Any], ax: Any) -> bool:
    result = results.get("read_latency")
    if not ok(result):
        return False
    rows = sorted(((k, r) for k, r in result["rows"].items() if k != "loop"),
                  key=lambda kv: kv[1]["mean_ns"])
    names = [label(k) for k, _ in rows]
    values = [r["mean_ns"] for _, r in rows]
    ax.barh(names, values, color=[_color(k) for k, _ in rows])
    ax.set_xscale("log")
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v * 1.1, i, ns(v), va="center", fontsize=8)
    ax.set_xlim(right=max(values) * 8)
    ax.set_xlabel("mean time per read (log scale)")
    ax.set_title(f"Read latency, unchanged {result['config_bytes'] // 1024} KB config")
    return True


def _plot_scaling(results: dict[str, Any], ax: Any) -> bool:
    result = results.get("scaling")
    if not ok(result):
        return False
    counts = result["counts"]
    for key, row in result["rows"].items():
        ax.plot(counts, [row[str(n)]["reads_per_s"] for n in counts], marker="o",
                label=label(key), color=_color(key),
                linewidth=2.5 if key == "shmconf" else 1.2)
    ax.set_yscale("log")
    ax.set_xticks(counts)
    ax.set_xlabel("reader processes")
    ax.set_ylabel("aggregate reads/s (log scale)")
    ax.set_title(f"Scaling ({results['machine']['cores']} cores)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return True


def _plot_propagation(results: dict[str, Any], ax: Any) -> bool:
    result = results.get("propagation")
    if not ok(result) or not result["rows"]:
        return False
    keys = list(dict.fromkeys(r["alt"] for r in result["rows"]))
    counts = result["counts"]
    width = 0.8 / (2 * len(counts))
    for j, n in enumerate(counts):
        for k, stat in enumerate(("p50_ms", "p99_ms")):
            values = []
            for key in keys:
                row = next((r for r in result["rows"] if r["alt"] == key and r["readers"] == n),
                           None)
                values.append(row[stat] if row else 0)
            offset = (j * 2 + k) * width - 0.4 + width / 2
            ax.bar([i + offset for i in range(len(keys))], values, width,
                   label=f"{n} readers, {stat[:3]}", alpha=0.55 + 0.45 * k,
                   color=["#1f77b4", "#d62728", "#2ca02c", "#9467bd"][j * 2 + k])
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([_wrap(label(k)) for k in keys], fontsize=6.5)
    ax.set_ylabel("ms until every reader holds it (log)")
    ax.axhline(100, color="#d62728", linestyle="--", linewidth=0.8,
               label="100 ms bar (file save)")
    ax.set_title(f"Propagation (readers poll every {result['poll_ms']:g} ms)")
    ax.legend(fontsize=7)
    return True


def _plot_under_updates(results: dict[str, Any], ax: Any) -> bool:
    result = results.get("under_updates")
    if not ok(result) or not result["rows"]:
        return False
    keys = list(result["rows"])
    stats = (("p50_ns", "p50"), ("p99_ns", "p99"), ("p999_ns", "p99.9"))
    width = 0.8 / len(stats)
    for j, (stat, name) in enumerate(stats):
        values = [max(1.0, result["rows"][k][stat]) for k in keys]
        ax.bar([i + j * width - 0.4 + width / 2 for i in range(len(keys))], values, width,
               label=name, color=["#9ecae1", "#4292c6", "#08519c"][j])
    ax.axhline(5_000, color="#d62728", linestyle="--", linewidth=0.8, label="5 µs bar")
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([_wrap(label(k)) for k in keys], fontsize=6.5)
    ax.set_ylabel("ns per read (log)")
    ax.set_title("Read latency while the config changes 1000 times/s")
    ax.legend(fontsize=7)
    return True


def _plot_sizes(results: dict[str, Any], axes: Any) -> bool:
    ng, pc = results.get("new_generation"), results.get("publish")
    drew = False
    if ok(ng):
        ax = axes[0]
        xs = [r["size"] / 1024 for r in ng["rows"]]
        ax.plot(xs, [r["plain_p50_ns"] / 1e3 for r in ng["rows"]], marker="o", label="no model")
        ax.plot(xs, [r["model_p50_ns"] / 1e3 for r in ng["rows"]], marker="s",
                label="pydantic model")
        ax.axhline(50, color="#d62728", linestyle="--", linewidth=0.8, label="50 µs bar (4 KB)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("config size (KB)")
        ax.set_ylabel("µs")
        ax.set_title("First get() after a publish")
        ax.legend(fontsize=7)
        drew = True
    if ok(pc):
        ax = axes[1]
        xs = [r["size"] / 1024 for r in pc["rows"]]
        ax.plot(xs, [r["plain"]["p50_ms"] for r in pc["rows"]], marker="o", label="no model")
        ax.plot(xs, [r["model"]["p50_ms"] for r in pc["rows"]], marker="s",
                label="pydantic model")
        ax.plot([4, 1024], [1, 50], linestyle="none", marker="_", markersize=18,
                color="#d62728", label="bars: 1 ms (4 KB), 50 ms (1 MB)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("config size (KB)")
        ax.set_ylabel("ms")
        ax.set_title("publish(mapping)")
        ax.legend(fontsize=7)
        drew = True
    return drew


#: The rollout plot's colours, by the content a worker served.
ROLLOUT_COLORS = {"stable": ("#d9d9d9", "#969696"), "bad": ("#d62728",), "good": ("#2ca02c",)}


def _plot_rollout(results: dict[str, Any], axes: Any) -> bool:
    """Per worker, the generation it served over time: a rollback, then a promotion."""
    from matplotlib.patches import Patch

    result = results.get("rollout")
    if not ok(result):
        return False
    assert result is not None
    if "timeline" not in result:
        return False
    timeline = result["timeline"]
    workers = timeline["workers"]
    # One colour per generation: stable content in greys (darker for later
    # generations), the bad candidate red, the good one green.
    colors: dict[int, str] = {}
    names: dict[int, str] = {}
    for held in sorted({(h[1], h[2]) for w in workers for h in w["held"]}):
        generation, version = held
        shades = ROLLOUT_COLORS.get(version, ("#333333",))
        used = sum(1 for g in colors if names[g].startswith(version))
        colors[generation] = shades[min(used, len(shades) - 1)]
        names[generation] = version
    panels = (
        (axes[0], "bad", "rolled back", "#d62728",
         f"a. Bad candidate (fail_rate 0.5): rolled back after "
         f"{result['bad']['decision_s']:.2f} s"),
        (axes[1], "good", "promoted", "#2ca02c",
         f"b. Good candidate: {_steps_title(result)}, promoted after "
         f"{result['good']['decision_s']:.2f} s"),
    )
    for ax, key, outcome, outcome_color, title in panels:
        moments = timeline[key]
        t0 = moments["published"]
        start, end = -0.25, moments["decided"] - t0 + 0.35

        def first(w: dict[str, Any], version: str, t0: float = t0) -> float:
            return next((h[0] for h in w["held"] if h[2] == version and h[0] >= t0), 1e9)

        order = sorted(workers, key=lambda w: (first(w, key), w["pid"]))
        shown: dict[int, None] = {}
        for lane, w in enumerate(order):
            held = w["held"]
            for i, (t, generation, _version, canary) in enumerate(held):
                until = held[i + 1][0] if i + 1 < len(held) else t0 + end
                left, right = max(t - t0, start), min(until - t0, end)
                if right <= left:
                    continue
                shown[generation] = None
                ax.broken_barh([(left, right - left)], (lane - 0.35, 0.7),
                               facecolors=colors[generation],
                               edgecolors="black" if canary else "none", linewidth=0.8)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([f"pid {w['pid']}" for w in order], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(start, end)
        # The moments, named on a second axis at the top: publish, steps, decision.
        ticks, names_at, tick_colors = [0.0], ["published"], ["black"]
        ax.axvline(0, color="black", linestyle="--", linewidth=0.9)
        for n, t in enumerate(moments["steps"], start=2):
            ax.axvline(t - t0, color="#ff7f0e", linestyle=":", linewidth=1.2)
            ticks.append(t - t0)
            names_at.append(f"step {n}")
            tick_colors.append("#ff7f0e")
        ax.axvline(moments["decided"] - t0, color=outcome_color, linewidth=1.2)
        ticks.append(moments["decided"] - t0)
        names_at.append(outcome)
        tick_colors.append(outcome_color)
        top = ax.secondary_xaxis("top")
        top.set_xticks(ticks, labels=names_at, fontsize=7)
        for label_, color in zip(top.get_xticklabels(), tick_colors, strict=True):
            label_.set_color(color)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xlabel("seconds since the candidate was published")
        ax.set_title(title, fontsize=8.5)
        ax.grid(axis="y", visible=False)
        labels = {"stable": "stable content", "bad": "bad candidate", "good": "good candidate"}
        handles = [Patch(facecolor=colors[g], label=f"generation {g}: "
                         f"{labels.get(names[g], names[g])}") for g in sorted(shown)]
        handles.append(Patch(facecolor="white", edgecolor="black", label="while a canary"))
        ax.legend(handles=handles, fontsize=6.5, loc="upper center", ncol=2,
                  bbox_to_anchor=(0.5, -0.17), frameon=False)
    axes[0].set_ylabel(f"worker processes ({result['workers']})")
    return True


def _steps_title(result: dict[str, Any]) -> str:
    policy = result["policy"]
    sizes = [str(policy["canary"]), *[str(s) for s in policy["steps"]], "all"]
    return " -> ".join(sizes) + f", {policy['bake_s']:g} s each"
