"""Shared fixtures: a private runtime directory and unique config names.

Every segment and lock file a test makes is removed by these fixtures, also
when the test fails; ``pytest_sessionfinish`` fails the run if any segment
with the test prefix is still in ``/dev/shm``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmconf.protocol.block import SHM_DIR, list_shm_names, unlink_shm
from shmconf.protocol.layout import SHM_NAME_RE
from tests.apps.models import seq_yaml
from tests.apps.servers import server_source

#: Every name this test session creates starts with this, so its leftovers are
#: easy to find, and another session running at the same time is left alone.
TEST_PREFIX = f"pytest-{os.getpid()}-"


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime directory per test (locks and state go there)."""
    path = tmp_path / "run"
    monkeypatch.setenv("SHMCONF_RUNTIME_DIR", str(path))
    return path


def remove_segments(name: str) -> None:
    for shm_name in list_shm_names(name):
        unlink_shm(shm_name)


@pytest.fixture
def name() -> Iterator[str]:
    """A config name unique to this test; its segments are removed afterwards."""
    value = f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}"
    yield value
    remove_segments(value)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config file ``v: 0`` in a directory of its own, for watchers and publishers."""
    path = tmp_path / "conf" / "app.yaml"
    path.parent.mkdir()
    path.write_text("v: 0\n")
    return path


@pytest.fixture
def source(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' config (``seq_yaml(0)``); see ``tests.apps.servers.server_source``."""
    return server_source(tmp_path, name, monkeypatch, seq_yaml(0))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        # Objects of every layout version (shmconf.NAME, shmconf-V.NAME).
        left = [e for e in os.listdir(SHM_DIR)
                if (match := SHM_NAME_RE.fullmatch(e)) and match[2].startswith(TEST_PREFIX)]
    except OSError:
        return
    for shm_name in left:
        unlink_shm(shm_name)
    if left:
        sys.stderr.write(f"\nsegments left behind by the tests (removed now): {left}\n")
        session.exitstatus = 1


@pytest.fixture(params=["libyaml", "python"])
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a YAML test with libyaml, then with PyYAML's pure-Python parser."""
    import yaml

    from shmconf.sources.yaml import YamlSource

    if request.param == "libyaml" and not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML was built without libyaml here")
    monkeypatch.setattr(YamlSource, "libyaml", request.param == "libyaml")
    return str(request.param)
