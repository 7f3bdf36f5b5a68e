"""A process of another user in the publisher's group: reads, or attacks, as told.

Started as root, it imports what it needs, then drops to ``nobody`` (uid and
group 65534), as a server that drops privileges does; the publisher runs as
root with ``group=65534``. Then, one command per line on stdin, one JSON
answer per line on stdout:

With ``--attach-first`` it attaches (idle adoption on) before it drops.

* ``attach [trusted]``: attach (with ``trusted_owner=0`` when asked), with
  idle adoption; answers the value of ``v`` and the generation, or the error.
* ``read``: the generation and ``v`` this process holds, without a read, then
  with one.
* ``write-anchor`` / ``write-data``: try to open them for writing (truncate).
* ``truncate-table``, ``scribble-table``: damage the reader table.
* ``lock-table N``: take the locks of the first N entries and keep them.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from typing import Any

import orjson

import shmconf
import shmconf.adoption  # now: after the drop, the interpreter's files may be out of reach
from shmconf.protocol import layout as L
from shmconf.protocol import table, wake
from shmconf.protocol.block import SHM_DIR

NOBODY = 65534
name = sys.argv[1]
#: The member's reader, once attached (one entry: a list keeps it out of globals).
readers: list[shmconf.Reader[Any]] = []
if sys.argv[2:] == ["--attach-first"]:
    # As a server that attaches, then drops privileges (gunicorn's user=).
    readers.append(shmconf.attach(name, timeout=5, idle_adoption=True))
os.setgroups([NOBODY])
os.setgid(NOBODY)
os.setuid(NOBODY)

held: list[int] = []
publishers: list[shmconf.Publisher] = []


def path(shm_name: str) -> str:
    return os.path.join(SHM_DIR, shm_name)


def try_to_write(shm_name: str) -> dict[str, Any]:
    try:
        fd = os.open(path(shm_name), os.O_RDWR)
    except PermissionError as exc:
        return {"refused": exc.strerror}
    os.ftruncate(fd, 0)
    os.close(fd)
    return {"refused": None}


def answer(line: str) -> dict[str, Any]:
    command, *args = line.split()
    if command == "attach":
        try:
            reader = shmconf.attach(name, timeout=5, idle_adoption=True,
                                    trusted_owner=0 if args == ["trusted"] else None)
        except shmconf.ShmconfError as exc:
            return {"error": str(exc)}
        readers.append(reader)
        return {"v": reader.get()["v"], "generation": reader.generation, "pid": os.getpid()}
    if command == "read":
        reader = readers[-1]
        before = reader.generation
        return {"held": before, "v": reader.get()["v"], "generation": reader.generation}
    if command == "write-anchor":
        return try_to_write(L.anchor_shm_name(name))
    if command == "write-data":
        return try_to_write(L.data_shm_name(name, int(args[0])))
    if command == "truncate-table":
        os.truncate(path(L.table_shm_name(name)), 0)
        return {"done": True}
    if command == "scribble-table":
        fd = os.open(path(L.table_shm_name(name)), os.O_WRONLY)
        os.pwrite(fd, b"\xff" * 4096, 0)
        os.close(fd)
        return {"done": True}
    if command == "publisher":  # a publisher of this user, in the given runtime directory
        publishers.append(shmconf.Publisher(name, runtime_dir=args[0]))
        return {"generation": publishers[-1].publish({"v": 1})}
    if command == "publish":
        return {"generation": publishers[-1].publish({"v": "x" * int(args[0])}),
                "serial": publishers[-1].writer.anchor.words[L.A_DATA_SERIAL]}
    if command == "restart-publisher":
        publishers.pop().close()
        publishers.append(shmconf.Publisher(name, runtime_dir=args[0]))
        return {"generation": publishers[-1].publish({"v": 2})}
    if command == "plant":  # another user's object under one of the name's names
        fd = os.open(path(f"{L.anchor_shm_name(name)}{args[0]}"), os.O_CREAT | os.O_EXCL,
                     0o600)
        os.close(fd)
        return {"done": True}
    if command == "symlink-table":
        os.symlink("/etc/passwd", path(L.table_shm_name(name)))
        return {"done": True}
    if command == "wake-loop":  # FUTEX_WAKE needs no write access: only a read-only mapping
        fd = os.open(path(L.anchor_shm_name(name)), os.O_RDONLY)
        with wake.WakeWord(fd) as word:
            deadline = time.monotonic() + float(args[0])
            wakes = 0
            while time.monotonic() < deadline:
                word.wake_all()
                wakes += 1
        os.close(fd)
        return {"wakes": wakes}
    if command == "fake-entries":  # entries no reader could have written
        fd = os.open(path(L.table_shm_name(name)), os.O_WRONLY)
        for index in range(int(args[0])):
            os.pwrite(fd, L.TABLE_ENTRY.pack(0xFFFFFFF0 - index, 1, 1 << 60, 0, 0, 0, 0, 0, 0),
                      (100 + index) * L.TABLE_ENTRY_SIZE)
        os.close(fd)
        return {"done": True}
    if command == "lock-table":
        fd = os.open(path(L.table_shm_name(name)), os.O_RDWR)
        for index in range(int(args[0])):
            request = table._lock_request(fcntl.F_WRLCK, index)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
            held.append(index)
        return {"held": len(held)}
    return {"error": f"unknown command {command!r}"}


print(orjson.dumps({"uid": os.getuid()}).decode(), flush=True)
for line in sys.stdin:
    print(orjson.dumps(answer(line)).decode(), flush=True)
for reader in readers:
    reader.close()
for publisher in publishers:
    publisher.unlink()
    publisher.close()
