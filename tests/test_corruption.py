"""Random bytes over any part of a segment: a clear ShmconfError or the last good snapshot.

Never another exception type, never a crash, never garbage. Bounded
hypothesis and atheris runs here; ``make fuzz`` runs the same properties much
longer.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmconf

# `shmconf.reader` is also the name of a function (the process's reader), so
# the module is reached through sys.modules.
from shmconf import reader as reader_module
from shmconf.errors import AnchorNotReady
from shmconf.protocol import layout as L
from shmconf.protocol.anchor import check_anchor
from shmconf.protocol.block import SharedBlock, list_shm_names
from shmconf.protocol.layout import anchor_shm_name
from tests.helpers import REPO

GOOD = {"service": {"name": "api", "port": 8080}, "features": ["a", "b"], "limit": 1.5}
#: Examples per property in `make test`; `make fuzz` raises it.
EXAMPLES = int(os.environ.get("SHMCONF_FUZZ_EXAMPLES", "150"))
#: Inputs of the coverage-guided run (tests/fuzz_segment.py) in `make test`,
#: from a fixed seed so that a failure reproduces; `make fuzz` explores.
ATHERIS_RUNS = 10_000
ATHERIS_SEED = 1

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def few_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    # A damaged slot fails every attempt; 200 attempts per example is time, not coverage.
    monkeypatch.setattr(reader_module, "_MAX_ATTEMPTS", 3)


def _damage(block: SharedBlock, offset: int, data: bytes) -> None:
    offset = offset % block.size
    block.pwrite(offset, data[: block.size - offset])


def _check_get(reader: shmconf.Reader[object]) -> None:
    try:
        value = reader.get()
    except shmconf.ShmconfError:
        return
    plain = orjson.loads(orjson.dumps(value, default=dict))
    assert plain in (GOOD, {**GOOD, "limit": 2.5})


@pytest.mark.slow
@fuzz_settings
@given(target=st.sampled_from(["anchor-header", "table", "data-header", "slot", "truncate-data",
                               "truncate-table"]),
       offset=st.integers(0, 1 << 20), data=st.binary(min_size=1, max_size=64))
def test_damage_after_attach_keeps_last_good_or_raises_shmconf_error(
    name: str, target: str, offset: int, data: bytes
) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish(GOOD)
        reader = shmconf.attach(name, timeout=1)
        try:
            writer = publisher.writer
            assert writer._data is not None
            if target == "anchor-header":
                _damage(writer.anchor, offset % L.ANCHOR_HEADER_SIZE, data)
            elif target == "table":
                assert writer._table is not None
                writer._table.pwrite(offset % (64 * L.TABLE_ENTRY_SIZE), data)
            elif target == "truncate-data":
                # Cut short under the reader, as an owner's tooling might: a
                # mapping would fault with SIGBUS; pread reads short.
                os.ftruncate(writer._data.fileno(), offset % writer._data.size)
            elif target == "truncate-table":
                assert writer._table is not None
                os.ftruncate(writer._table.fileno(), offset % 256)
            elif target == "data-header":
                _damage(writer._data, offset % L.DATA_HEADER_SIZE, data)
            else:
                _damage(writer._data, L.DATA_HEADER_SIZE + offset, data)
            _check_get(reader)
            # A damaged published slot is overwritten by the next publishes.
            with contextlib.suppress(shmconf.ShmconfError):
                publisher.publish({**GOOD, "limit": 2.5})
            _check_get(reader)
            try:
                fresh = shmconf.attach(name, timeout=0.2)
            except shmconf.ShmconfError:
                pass
            else:
                _check_get(fresh)
                fresh.close()
        finally:
            reader.close()
            publisher.unlink()


@fuzz_settings
@given(offset=st.integers(0, L.ANCHOR_SIZE - 1), data=st.binary(min_size=1, max_size=32))
def test_attach_to_damaged_segment_raises_only_shmconf_errors(
    name: str, offset: int, data: bytes
) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish(GOOD)
        _damage(publisher.writer.anchor, offset, data)
        try:
            reader = shmconf.attach(name, timeout=0.05)
        except shmconf.ShmconfError:
            pass
        else:
            _check_get(reader)
            reader.close()
        publisher.unlink()


@fuzz_settings
@given(header=st.binary(min_size=L.ANCHOR_HEADER_SIZE, max_size=L.ANCHOR_HEADER_SIZE))
def test_header_parsing_of_random_bytes(name: str, header: bytes) -> None:
    block = SharedBlock.create(anchor_shm_name(name), L.ANCHOR_SIZE)
    try:
        block.write(0, header)
        with contextlib.suppress(shmconf.SegmentError, AnchorNotReady):
            check_anchor(block)
    finally:
        block.close()
        block.unlink()


@pytest.mark.slow
def test_coverage_guided_fuzzing_of_attach_and_get(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris does not install here; hypothesis still runs")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz_segment.py"), f"-runs={ATHERIS_RUNS}",
         f"-seed={ATHERIS_SEED}", f"-artifact_prefix={tmp_path}/"],
        env={**os.environ, "SHMCONF_FUZZ_NAME": name},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=100, check=False,
    )
    # atheris prints an uncaught exception and its input on stdout, libFuzzer
    # its progress on stderr.
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"Done {ATHERIS_RUNS} runs" in result.stdout
    assert not list_shm_names(name)
