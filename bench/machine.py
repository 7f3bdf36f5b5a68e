"""The machine the figures were measured on: printed with every table."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import sys
import time
from typing import Any


def cpu_model() -> str:
    model, mhz = "unknown CPU", None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key == "cpu MHz" and mhz is None:
                with contextlib.suppress(ValueError):
                    mhz = float(value)
    return f"{model} @ {mhz / 1000:.2f} GHz" if mhz else model


def os_name() -> str:
    pretty = None
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    return f"{pretty or platform.system()}, Linux {platform.release()}"


def loadavg() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
    return "?"


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over ``seconds`` while this process sleeps: other work."""
    busy0, total0 = _cpu_times()
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(max_wait_s: float = 30.0, threshold: float = 0.15) -> dict[str, float]:
    """Wait until other processes leave the CPUs mostly idle (or ``max_wait_s`` passed).

    Returns how busy the CPUs were when the wait ended and how long it took,
    so the report can say under which conditions each measure ran.
    """
    start = time.monotonic()
    busy = busy_fraction()
    quiet = 0
    while time.monotonic() - start < max_wait_s:
        quiet = quiet + 1 if busy < threshold else 0
        if quiet >= 2:
            break
        busy = busy_fraction()
    return {"busy": busy, "waited_s": time.monotonic() - start}


def describe() -> dict[str, Any]:
    """CPU, cores, Python, OS, date and the compared packages' versions."""
    from bench.alternatives import library_versions

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": os_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": loadavg(),
        "versions": library_versions(),
        "executable": sys.executable,
    }


def one_line(machine: dict[str, Any]) -> str:
    return (f"{machine['cpu']}, {machine['cores']} cores, {machine['python']}, "
            f"{machine['os']}, {machine['date']}")
