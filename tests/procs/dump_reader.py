"""Attach, then print ``GENERATION JSON`` for every line read on stdin."""

from __future__ import annotations

import sys

import orjson

import shmconf

reader = shmconf.attach(sys.argv[1], timeout=10)
print("ready", flush=True)
for _line in sys.stdin:
    cfg = reader.get()
    sys.stdout.write(f"{reader.generation} {orjson.dumps(cfg, default=dict).decode()}\n")
    sys.stdout.flush()
reader.close()
