"""Run inside a mount namespace whose /dev/shm is a tiny tmpfs (see test_resources.py).

Publishes a config, fills /dev/shm, publishes one that must grow, then frees
the space and publishes again. Prints one JSON line of what it observed.
"""

from __future__ import annotations

import os
import sys

import orjson

import shmconf

name = sys.argv[1]
out: dict[str, object] = {}
publisher = shmconf.Publisher(name)
reader = None
filler = "/dev/shm/filler"
try:
    publisher.publish({"v": "small"})
    reader = shmconf.attach(name)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)  # take every byte that is left
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        publisher.publish({"v": "x" * 200_000})
    except shmconf.ShmconfError as exc:
        out["error"] = str(exc)
        out["error_type"] = type(exc).__name__
    out["generation_after_error"] = publisher.generation
    out["reader_value"] = reader.get()["v"]
    os.unlink(filler)
    out["generation_after_recovery"] = publisher.publish({"v": "y" * 200_000})
    out["reader_len"] = len(reader.get()["v"])
finally:
    if reader is not None:
        reader.close()
    publisher.unlink()
    if os.path.exists(filler):
        os.unlink(filler)
print(orjson.dumps(out).decode(), flush=True)
