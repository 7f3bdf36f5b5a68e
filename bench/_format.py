"""What the report and the plots both print: the alternatives' labels, durations."""

from __future__ import annotations

import math
from typing import Any

from bench.alternatives import LABELS as ADAPTER_LABELS

LABELS = {**ADAPTER_LABELS, "loop": "empty loop iteration (reference)",
          "shmconf-file": "shmconf, file save -> publisher service",
          "dict-control": "plain dict, same load (control)"}

#: What a table shows where nothing was measured.
NA = "n/a"


def ns(value: float | None) -> str:
    """Nanoseconds as ns, µs or ms with three significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if value < 1_000:
        return f"{value:.0f} ns"
    if value < 1_000_000:
        return f"{value / 1e3:.3g} µs"
    if value < 1e9:
        return f"{value / 1e6:.3g} ms"
    return f"{value / 1e9:.3g} s"


def label(key: str) -> str:
    return LABELS.get(key, key)


def ok(result: Any) -> bool:
    """Whether a measure's result is there and did not fail."""
    return isinstance(result, dict) and "failed" not in result
