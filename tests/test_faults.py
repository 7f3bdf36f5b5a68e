"""A publisher killed at any instant: readers only see complete snapshots.

The publisher process is SIGKILLed at random moments (mid-slot, mid-growth,
mid-history) again and again while readers check every snapshot; each
restart takes over the segment and continues the generation count.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess

import orjson
import pytest

import shmconf
from shmconf.protocol.block import list_shm_names
from tests.checked import config
from tests.helpers import python

KILLS = 25


@pytest.mark.slow
def test_sigkill_loop_never_shows_torn_or_regressed_snapshot(name: str) -> None:
    with shmconf.Publisher(name) as first:
        first.publish(config(0, 100))
    readers = [python("-m", "tests.procs.consistency_reader", name, "--seconds", "120")
               for _ in range(2)]
    rng = random.Random(1234)
    generations = []
    try:
        for reader in readers:
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "attached"
        for kill in range(KILLS):
            proc = python("-m", "tests.procs.churn_publisher", name, str(kill * 1_000_000))
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "publishing"
            # Let it publish for a random while, then kill it without warning.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.005, 0.15))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            with shmconf.Publisher(name) as restarted:
                generations.append(restarted.generation)
        # Only the anchor, one data segment and the reader table survive all the kills.
        assert len(list_shm_names(name)) == 3
        with shmconf.Publisher(name) as last:
            final = last.publish(config(10**9, 1000, final=True))
        results = []
        for reader in readers:
            out, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, err
            results.append(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
                reader.communicate()
    print(f"\nkill loop: {KILLS} SIGKILLs survived, "
          f"{sum(r['generations'] for r in results)} snapshots checked, generation "
          f"{generations[0]} -> {final}")
    assert generations == sorted(generations)
    assert generations[-1] > generations[0]
    for result in results:
        assert result["errors"] == []
        assert result["last"] == final
