"""A reader that reads only when told: one line on stdin, one read.

Prints ``ready GENERATION`` after attaching, then for every line on stdin
``GENERATION GREETING``. Used to hold an old generation on purpose.
"""

from __future__ import annotations

import sys

import shmconf

reader = shmconf.attach(sys.argv[1], timeout=10)
print(f"ready {reader.generation}", flush=True)
for _line in sys.stdin:
    cfg = reader.get()
    print(f"{reader.generation} {cfg.get('greeting')}", flush=True)
reader.close()
