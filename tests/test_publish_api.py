"""Publisher.publish(mapping): validation first, last good stays on error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, field_validator

import shmconf
from shmconf.protocol.block import list_shm_names


class Settings(BaseModel):
    port: int
    password: SecretStr
    workers: int = 4

    @field_validator("workers")
    @classmethod
    def positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value


def test_invalid_mapping_names_field_path_and_publishes_nothing(name: str) -> None:
    with shmconf.Publisher(name, model=Settings) as publisher:
        assert publisher.publish({"port": 80, "password": "hunter2"}) == 1
        with pytest.raises(shmconf.ConfigValidationError) as info:
            publisher.publish({"port": "not a port", "password": "s3cret-value"})
        message = str(info.value)
        assert "port: Input should be a valid integer" in message
        assert "s3cret-value" not in message
        with pytest.raises(shmconf.ConfigValidationError, match="workers: Value error, must be"):
            publisher.publish({"port": 80, "password": "x", "workers": 0})
        assert publisher.generation == 1
        reader = shmconf.attach(name, model=Settings)
        try:
            assert reader.get().port == 80
            assert reader.get().password.get_secret_value() == "hunter2"
            assert reader.meta["secrets"] == ["password"]
        finally:
            reader.close()
        publisher.unlink()


def test_unserializable_mapping_is_rejected(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        with pytest.raises(shmconf.ConfigValidationError, match="not JSON-serializable"):
            publisher.publish({"when": object()})
        assert publisher.generation == 0
        publisher.unlink()


def test_too_large_config_is_rejected(name: str) -> None:
    with shmconf.Publisher(name, max_bytes=1000) as publisher:
        publisher.publish({"v": 1})
        with pytest.raises(shmconf.ConfigTooLargeError, match="above the limit of 1000"):
            publisher.publish({"v": "x" * 2000})
        assert publisher.generation == 1
        publisher.unlink()


def test_history_keeps_versions_and_rollback_publishes_old_content(name: str) -> None:
    with shmconf.Publisher(name, history=3) as publisher:
        for v in range(5):
            publisher.publish({"v": v})
        assert [v.generation for v in publisher.history.versions()] == [3, 4, 5]
        generation = publisher.rollback(to=3)
        assert generation == 6
        reader = shmconf.attach(name)
        try:
            assert reader.get()["v"] == 2
            assert reader.meta["origin"] == "rollback"
        finally:
            reader.close()
        with pytest.raises(shmconf.ShmconfError, match="not in the history"):
            publisher.rollback(to=1)
        publisher.unlink()


def test_secret_paths_found_through_nesting_lists_dicts_and_optionals() -> None:
    from typing import Optional

    from pydantic import BaseModel, SecretBytes

    from shmconf.content import secret_paths

    class Upstream(BaseModel):
        host: str
        token: Optional[SecretStr] = None  # noqa: UP045 - Optional on purpose

    class Node(BaseModel):
        name: str
        children: list[Node] = []
        key: SecretBytes | None = None

    class Big(BaseModel):
        plain: dict[str, int]
        upstreams: list[Upstream]
        by_name: dict[str, SecretStr]
        tree: Node

    big = Big.model_validate({
        "plain": {"a": 1},
        "upstreams": [{"host": "a"}, {"host": "b", "token": "t"}],
        "by_name": {"x": "s1"},
        "tree": {"name": "root", "children": [{"name": "leaf", "key": b"k"}]},
    })
    assert sorted(secret_paths(big)) == [
        "by_name.x", "tree.children.0.key", "upstreams.1.token",
    ]


def test_unlink_after_close_removes_segments_and_lock(name: str) -> None:
    # CPython's SharedMemory habit: close(), then unlink().
    publisher = shmconf.Publisher(name)
    publisher.publish({"a": 1})
    publisher.close()
    assert list_shm_names(name)
    publisher.unlink()
    assert list_shm_names(name) == []
    assert not publisher.lock_file.exists()


def test_unlink_after_close_never_removes_another_publishers_name(name: str) -> None:
    first = shmconf.Publisher(name)
    first.publish({"a": 1})
    first.close()
    with shmconf.Publisher(name) as second:
        second.publish({"a": 2})
        with pytest.raises(shmconf.PublisherRunningError):
            first.unlink()
        assert list_shm_names(name)
        second.unlink()


def test_a_pinned_rollback_is_published_again_after_the_segment_is_gone(
        tmp_path: Path, name: str) -> None:
    source = tmp_path / "app.json"
    source.write_text('{"v": 1}')
    with shmconf.Publisher(name, sources=[source]) as publisher:
        publisher.publish_now()
        source.write_text('{"v": 2}')
        publisher.publish_now()
        publisher.rollback()  # pinned to v=1 while the sources hold v=2
    shmconf.Publisher(name).unlink()  # the segment goes; the history and pin stay
    with shmconf.Publisher(name, sources=[source]) as publisher:
        publisher.publish_now()
        with shmconf.attach(name) as reader:
            assert reader.get()["v"] == 1
        publisher.unlink()


def test_a_name_published_afresh_reports_changes_against_the_history(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1, "b": 2})
        publisher.unlink()  # the segment goes; the history stays
    with shmconf.Publisher(name) as again:
        generation = again.publish({"a": 1, "b": 3})
        assert generation == 2  # the count goes on from the history
        with shmconf.attach(name) as reader:
            assert reader.get()["b"] == 3
            assert reader.meta["changed"] == ["b"]  # not every key, as on a first publish
        again.unlink()
