"""A demo worker: attach once, then read the config for every "request"."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from settings import Settings

import shmconf

reader = shmconf.attach("demo", model=Settings, timeout=10)
held = 0
while True:
    cfg = reader.get()  # one 8-byte load and a compare while nothing changed
    if reader.generation != held:
        held = reader.generation
        print(
            f"  worker {os.getpid()}: generation {held}: greeting={cfg.service.greeting!r} "
            f"feature_x={cfg.service.feature_x} db={cfg.database.host}",
            flush=True,
        )
    time.sleep(0.01)  # the time a request takes
