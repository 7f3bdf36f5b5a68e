"""Publish self-checking configs as fast as possible until killed.

Every config carries ``check`` (see consistency_reader.py). Every 50th one is
large enough to force the segment to grow, so kills also land mid-growth.
Prints ``publishing`` once the writer lock is held.
"""

from __future__ import annotations

import sys

import orjson

import shmconf
from tests.checked import config

name, start = sys.argv[1], int(sys.argv[2])
publisher = shmconf.Publisher(name)
print("publishing", flush=True)
seq = start
while True:
    seq += 1
    size = 300_000 + seq % 7 * 50_000 if seq % 50 == 0 else 100 + seq % 5000
    publisher.writer.publish(orjson.dumps(config(seq, size)))
