"""A publisher killed under an integration: how long until a new one serves.

The path every integration takes (gunicorn's ``ShmconfHooks``, a uvicorn
launcher): a :class:`~shmconf.integrations.process.PublisherProcess`, whose
child is the supervisor, which runs the publisher. Each repetition starts a
fresh one (so every kill meets the first backoff, 0.1 s, as a one-off crash
does), SIGKILLs the publisher, and times two moments from the kill:

* **holds the name**: the anchor names a new live publisher (its pid and a
  fresh heartbeat, what ``shmconf status`` calls alive): the writer lock is
  taken and the segment opened;
* **serving**: the supervisor reports it serving: the new publisher read and
  checked its sources (publishing only if they changed) and watches them.

Both include the backoff and a fresh interpreter's start (imports of
shmconf, pydantic, watchdog). The bar (DESIGN.md): under 2 s to serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._common import BenchError, Session, eprint, make_config, median
from bench.propagation import yaml_versions

#: Seconds to wait for each moment before the repetition counts as failed.
_DEADLINE_S = 30.0


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Children started inside log to ``path`` (the supervisor logs each kill at ERROR)."""
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {_DEADLINE_S:g}s of the kill")
        time.sleep(0.002)


def _once(session: Session, source: Path) -> dict[str, float]:
    from shmconf import status
    from shmconf.integrations.process import PublisherProcess

    name = session.name("restart")
    process = PublisherProcess(name, [source], debounce=0.05)
    with _stderr_to(session.path("services", f"{name}.log")):
        process.start()
    try:
        first = status.collect(name, reclaim=False).publisher_pid
        if first is None:
            raise BenchError("the publisher process did not record its pid")
        killed = time.monotonic()
        os.kill(first, signal.SIGKILL)

        def holds() -> bool:
            found = status.collect(name, reclaim=False)
            return found.publisher_alive and found.publisher_pid not in (None, first)

        def serving() -> bool:
            found = status.collect(name, reclaim=False).supervisor
            return found.get("state") == "serving" and int(found.get("restarts") or 0) >= 1

        _wait(holds, "new publisher holding the name")
        held = time.monotonic() - killed
        _wait(serving, "new publisher serving")
        served = time.monotonic() - killed
        return {"holds_s": held, "serving_s": served}
    finally:
        process.stop()


def run(session: Session) -> dict[str, Any]:
    """Kill the publisher of a fresh PublisherProcess ``repeats`` times; the delays."""
    repeats = 2 if session.quick else 10
    source = session.path("restart", "app.yaml")
    source.write_bytes(yaml_versions(make_config(4096))(1))
    rows = [_once(session, source) for _ in range(repeats)]
    serving = [r["serving_s"] for r in rows]
    holds = [r["holds_s"] for r in rows]
    result = {
        "repeats": repeats,
        "holds_median_s": median(holds),
        "holds_max_s": max(holds),
        "serving_median_s": median(serving),
        "serving_max_s": max(serving),
        "serving_s": serving,
    }
    eprint(f"  killed -> serving: median {result['serving_median_s']:.3f} s, "
           f"max {result['serving_max_s']:.3f} s ({repeats} kills)")
    return result
