"""Resource exhaustion: a full /dev/shm, an unwritable state directory, a huge config."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import shmconf
from shmconf import _paths
from tests.helpers import REPO


def _can_mount_private_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /dev/shm"],
        capture_output=True, check=False,
    )
    return probe.returncode == 0


@pytest.mark.needs_root
@pytest.mark.skipif(not _can_mount_private_tmpfs(),
                    reason="needs root and mount namespaces to give a process a tiny /dev/shm")
def test_full_dev_shm_fails_cleanly_keeps_last_good_and_recovers(name: str) -> None:
    # A private mount namespace with a 2 MiB /dev/shm: nothing outside sees it.
    script = (f"mount -t tmpfs -o size=2m tmpfs /dev/shm && "
              f"exec {sys.executable} -m tests.procs.enospc {name}")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert out["error_type"] == "SegmentError"
    assert "no space" in out["error"]
    assert "/dev/shm is full" in out["error"]
    assert out["generation_after_error"] == 1
    assert out["reader_value"] == "small"
    assert out["generation_after_recovery"] == 2
    assert out["reader_len"] == 200_000


def test_history_failure_is_logged_and_publish_stands(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"v": 1})

        def disk_full(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(publisher.history, "record", disk_full)
        assert publisher.publish({"v": 2}) == 2
        assert "published but not kept in history" in caplog.text
        reader = shmconf.attach(name)
        assert reader.get()["v"] == 2
        reader.close()
        publisher.unlink()


def test_runtime_dir_that_cannot_be_created_is_a_clear_error(name: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(_paths.RuntimeDirError, match="cannot create the directory"):
        shmconf.Publisher(name, runtime_dir=blocker / "run")


def test_runtime_dir_symlink_is_refused(name: str, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(_paths.RuntimeDirError, match="not a directory"):
        shmconf.Publisher(name, runtime_dir=link)


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_runtime_dir_owned_by_another_user_is_refused(name: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(_paths.RuntimeDirError, match="owned by uid 65534"):
        shmconf.Publisher(name, runtime_dir=other)


def test_state_dir_is_private(name: str, runtime_dir: Path) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"password": "hunter2"})
        for path in (runtime_dir, publisher.state_dir, publisher.history.directory):
            assert path.stat().st_mode & 0o777 == 0o700, path
        for file in publisher.history.directory.iterdir():
            assert file.stat().st_mode & 0o777 == 0o600, file
        publisher.unlink()


def test_a_shared_runtime_dir_is_refused_and_left_as_it_is(name: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(_paths.RuntimeDirError, match="writable by other users") as info:
        shmconf.Publisher(name, runtime_dir=shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # never chmod'ed
    # The advice, followed literally, works.
    advice = str(info.value).rsplit("--runtime-dir ", 1)[1]
    with shmconf.Publisher(name, runtime_dir=advice) as publisher:
        publisher.publish({"a": 1})
        assert stat.S_IMODE(os.stat(advice).st_mode) == 0o700
        publisher.unlink()


def test_an_existing_private_enough_dir_keeps_its_mode(name: str, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    with shmconf.Publisher(name, runtime_dir=mine) as publisher:
        publisher.publish({"a": 1})
        publisher.unlink()
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755


def test_read_only_commands_and_unlink_leave_a_shared_dir_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for command in (["history", "nosuchname"], ["status", "nosuchname"],
                    ["unlink", "nosuchname"]):
        result = subprocess.run([sys.executable, "-m", "shmconf", "--runtime-dir", str(shared),
                                 *command], capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 1, result.stderr
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
        assert list(shared.iterdir()) == []
