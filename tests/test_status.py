"""shmconf.status.collect: the header, the slot header and the meta, never the config."""

from __future__ import annotations

import orjson
import pytest

import shmconf
from shmconf import reader as reader_module
from shmconf import status


def test_status_reads_the_meta_without_parsing_the_config(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with shmconf.Publisher(name) as publisher:
        data = {"big": ["x" * 100] * 100, "n": 1}
        generation = publisher.publish(data)
        parsed: list[int] = []
        real_loads = orjson.loads

        def counting_loads(raw: bytes | str) -> object:
            parsed.append(len(raw))
            return real_loads(raw)

        monkeypatch.setattr(status.orjson, "loads", counting_loads)
        before = len(reader_module._live_readers)
        found = status.collect(name)
        assert len(reader_module._live_readers) == before  # no reader was made
        assert found.generation == generation
        assert found.digest == publisher.digest
        payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        assert found.slot_used > len(payload)  # the meta and the payload, exactly
        assert all(size < len(payload) for size in parsed)  # only the meta was parsed
        publisher.unlink()
