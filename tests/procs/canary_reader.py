"""A worker's reader: idle adoption on, as in the integrations, so it can be a canary.

Prints ``ready GENERATION`` after attaching, then answers one line on stdin
with one line: ``read`` prints ``GENERATION GREETING CANARY`` (CANARY 1 while
the publisher made this process a canary), ``serve N F`` counts N requests,
F of them failed, as an integration counts the requests it serves, and
prints ``served``. With ``--exit-on KEY`` it exits (status 3, at once, as a
crash would) when it adopts a config whose KEY is true.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import shmconf

reader = shmconf.attach(sys.argv[1], timeout=10, idle_adoption=True)
if sys.argv[2:3] == ["--exit-on"]:
    key = sys.argv[3]

    def crash(old: Any, new: Any) -> None:
        if new and new.get(key):
            os._exit(3)

    reader.on_change(crash)
print(f"ready {reader.generation}", flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "serve":
        requests, failed = int(args[0]), int(args[1])
        for index in range(requests):
            reader.count_request(failed=index < failed)
        print("served", flush=True)
    else:
        cfg = reader.get()
        print(f"{reader.generation} {cfg.get('greeting')} {int(reader.canary)}", flush=True)
reader.close()
