"""Coverage-guided fuzzing (atheris) of attach() and get() over damaged segment bytes.

Each input restores one pristine segment (generation 2 published, a reader
attached at generation 1), writes one to four damaged byte runs over the
anchor header, the reader table, the data header or the slots, and then reads
through the attached reader and through a fresh ``attach()``. The property is
the one of ``test_corruption.py``: a :class:`shmconf.ShmconfError` or one of
the two published configs. Anything else (another exception type, garbage)
is a crash that libFuzzer reports with the input that caused it.

Usage::

    python tests/fuzz_segment.py [libFuzzer flags: -runs=N, -max_total_time=S, ...]

``make test`` runs a bounded run (``test_corruption.py``), ``make fuzz`` a long
one. The fuzzing runs in a forked child, so that the parent removes the
segment and the lock and history files even when libFuzzer ends the child
with ``exit()``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

FIRST = {"service": {"name": "api", "port": 8080}, "features": ["a", "b"], "limit": 1.5}
SECOND = {**FIRST, "limit": 2.5}
#: Bytes of one damaged run; 64 reaches any field of a header or a slot header.
MAX_RUN = 64


def main(argv: list[str]) -> int:
    name = os.environ.get("SHMCONF_FUZZ_NAME") or f"fuzz-{os.getpid()}"
    # Locks and history go to a private directory, removed afterwards.
    runtime_dir = tempfile.mkdtemp(prefix="shmconf-fuzz-")
    os.environ["SHMCONF_RUNTIME_DIR"] = runtime_dir
    child = os.fork()
    if child == 0:
        try:
            _fuzz(name, argv)
        finally:
            os._exit(70)  # atheris.Fuzz() returned or raised: not a clean end
    _, status = os.waitpid(child, 0)
    # The last input left the segment damaged: a publisher would refuse to
    # open it, so remove it by name.
    from shmconf.protocol.block import list_shm_names, unlink_shm

    for shm_name in list_shm_names(name):
        unlink_shm(shm_name)
    shutil.rmtree(runtime_dir, ignore_errors=True)
    return os.waitstatus_to_exitcode(status)


def _fuzz(name: str, argv: list[str]) -> None:
    import logging

    import atheris

    # Every damaged generation logs a warning; a million of them are noise.
    logging.disable(logging.CRITICAL)

    # Imported here, in the child, so that the parser is instrumented for
    # coverage (the parent imported none of shmconf).
    with atheris.instrument_imports(include=["shmconf"]):
        import orjson

        import shmconf
        from shmconf.protocol import layout as L

    from shmconf import reader as reader_module
    # A damaged slot fails every attempt; many attempts per input are time, not coverage.
    reader_module._MAX_ATTEMPTS = 3  # type: ignore[attr-defined]

    publisher = shmconf.Publisher(name)
    publisher.publish(FIRST)
    writer = publisher.writer
    anchor, data, table = writer.anchor, writer._data, writer._table
    assert data is not None
    assert table is not None
    table_size = 64 * L.TABLE_ENTRY_SIZE
    at_first = (anchor.pread(0, anchor.size), data.pread(0, data.size))
    publisher.publish(SECOND)
    at_second = (anchor.pread(0, anchor.size), data.pread(0, data.size))
    regions = [
        (anchor, 0, L.ANCHOR_HEADER_SIZE),
        (anchor, L.ANCHOR_HEADER_SIZE, anchor.size),
        (data, 0, L.DATA_HEADER_SIZE),
        (data, L.DATA_HEADER_SIZE, data.size),
        (table, 0, table_size),
    ]

    def restore(state: tuple[bytes, bytes]) -> None:
        anchor.pwrite(0, state[0])
        os.ftruncate(data.fileno(), data.size)
        data.pwrite(0, state[1])

    def check(reader: Any) -> None:
        try:
            value = reader.get()
        except shmconf.ShmconfError:
            return
        plain = orjson.loads(orjson.dumps(value, default=dict))
        if plain not in (FIRST, SECOND):
            raise AssertionError(f"get() returned garbage: {plain!r}")

    def one_input(raw: bytes) -> None:
        provider = atheris.FuzzedDataProvider(raw)
        restore(at_first)
        reader = shmconf.attach(name, timeout=0)  # holds FIRST
        try:
            restore(at_second)
            for _ in range(provider.ConsumeIntInRange(1, 4)):
                choice = provider.ConsumeIntInRange(0, len(regions))
                if choice == len(regions):
                    # Cut short, as an owner's tooling might: no mapping faults.
                    os.ftruncate(data.fileno(), provider.ConsumeIntInRange(0, data.size))
                    continue
                block, start, end = regions[choice]
                offset = provider.ConsumeIntInRange(start, end - 1)
                run = provider.ConsumeBytes(provider.ConsumeIntInRange(1, MAX_RUN))
                block.pwrite(offset, run[: end - offset])
            check(reader)
        finally:
            reader.close()
        try:
            fresh = shmconf.attach(name, timeout=0)
        except shmconf.ShmconfError:
            return
        try:
            check(fresh)
        finally:
            fresh.close()

    if not any(arg.startswith("-max_len=") for arg in argv):
        argv = [*argv, f"-max_len={4 * (MAX_RUN + 16)}"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
