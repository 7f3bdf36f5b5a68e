"""shmconf.status.collect: the header, the slot header and the meta, never the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import shmconf
from shmconf import reader as reader_module
from shmconf import status
from shmconf.errors import SegmentNotFoundError
from shmconf.integrations.process import remove_leftovers
from tests.helpers import python, wait_until


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


def test_a_killed_standalone_publisher_shows_dead_since_its_last_heartbeat(
        name: str, config: Path) -> None:
    publisher = python("-m", "shmconf", "publish", name, "-c", str(config))
    try:
        wait_until(lambda: _alive(name), 20, 0.02, "the publisher")
        pid = status.collect(name, reclaim=False).publisher_pid
        publisher.kill()
    finally:
        publisher.kill()
        publisher.communicate()
    try:
        found = status.collect(name, reclaim=False)
        assert not found.publisher_alive
        assert found.publisher_pid == pid
        assert found.publisher_dead_since_ns == found.heartbeat_ns > 0
        assert found.supervisor == {}
        text = _cli("status", name)
        assert f"pid {pid} dead since " in text
        shown = orjson.loads(_cli("status", name, "--json"))
        assert shown["publisher_dead_since_ns"] == found.heartbeat_ns

        prometheus = pytest.importorskip("prometheus_client")
        from shmconf.integrations.prometheus import ShmconfCollector

        registry = prometheus.CollectorRegistry()
        registry.register(ShmconfCollector(name))
        assert registry.get_sample_value("shmconf_publisher_up", {"name": name}) == 0.0
        assert registry.get_sample_value(
            "shmconf_publisher_heartbeat_timestamp_seconds", {"name": name}
        ) == pytest.approx(found.heartbeat_ns / 1e9)
    finally:
        remove_leftovers(name)


def test_a_cleanly_stopped_publisher_is_not_reported_dead(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
    try:
        found = status.collect(name, reclaim=False)
        assert found.publisher_pid is None
        assert found.publisher_dead_since_ns is None
        assert "not running (stopped)" in _cli("status", name)
    finally:
        remove_leftovers(name)


def _alive(name: str) -> bool:
    try:
        return status.collect(name, reclaim=False).publisher_alive
    except SegmentNotFoundError:
        return False


def _cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "shmconf", *args], capture_output=True,
                          text=True, check=True, timeout=30).stdout
