"""A group member's forgery (run as ``nobody``): fake readers in the reader table.

``python -m tests.procs.fake_canaries NAME COUNT SECONDS``: takes the locks of
COUNT entries (so they look alive), marks them as adopting while idle, and
for every one the anchor lists as a canary reports the candidate as healthy
(many requests, no failure). Prints one line per entry listed as a canary.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import sys
import time

from shmconf.protocol import layout as L
from shmconf.protocol.anchor import canaries

NOBODY = 65534
_LOCK = "hhqqi4x"


def main() -> None:
    name, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    os.setgroups([NOBODY])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    anchor_fd = os.open(f"/dev/shm/{L.anchor_shm_name(name)}", os.O_RDONLY)
    words = memoryview(mmap.mmap(anchor_fd, L.ANCHOR_SIZE, prot=mmap.PROT_READ)).cast("Q")
    table = os.open(f"/dev/shm/{L.table_shm_name(name)}", os.O_RDWR)
    import struct

    fakes = {100 + i: 20000 + i for i in range(count)}  # entry -> a pid no process has
    for entry in fakes:
        fcntl.fcntl(table, fcntl.F_OFD_SETLK, struct.pack(
            _LOCK, fcntl.F_WRLCK, os.SEEK_SET, entry * L.TABLE_ENTRY_SIZE, L.TABLE_ENTRY_SIZE, 0))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    listed: set[int] = set()
    while time.monotonic() < end:
        rollout, listed_now = int(words[L.A_ROLLOUT]), canaries(words)
        for entry, pid in fakes.items():
            canary = L.canary_key(entry, pid) in listed_now
            if canary and entry not in listed:
                listed.add(entry)
                print(f"fake entry {entry} was made a canary", flush=True)
            held = int(words[L.A_CANARY_GENERATION if canary else L.A_GENERATION])
            requests = 10_000 if canary else 0
            os.pwrite(table, L.TABLE_ENTRY.pack(pid, L.ENTRY_IDLE_ADOPTION, held, time.time_ns(),
                                                0, requests, 0, 0, rollout & 0xFFFFFFFF),
                      entry * L.TABLE_ENTRY_SIZE)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
