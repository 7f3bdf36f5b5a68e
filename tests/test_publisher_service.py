"""`shmconf publish` as a service: files change every way they do, signals work.

A real publisher process, real files, real reader processes. Each case ends
in exactly the content on disk, published once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import REPO, DumpReader, atomic_save, python, wait_until


class Service:
    def __init__(self, name: str, config: Path, *extra: str) -> None:
        self.name, self.config = name, config
        self.proc = python("-m", "shmconf", "publish", name, "-c", str(config),
                           "--debounce", "50ms", *extra)
        wait_until(lambda: self.status() is not None or self.proc.poll() is not None,
                   message="publisher up")
        assert self.proc.poll() is None, self.proc.communicate()

    def status(self) -> dict[str, object] | None:
        result = subprocess.run([*self.proc.args[:3], "status", self.name, "--json"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return None
        data = dict(orjson.loads(result.stdout))
        return data if data["generation"] else None

    def generation(self) -> int:
        status = self.status()
        assert status is not None
        return int(status["generation"])  # type: ignore[call-overload]

    def service(self) -> dict[str, object]:
        status = self.status()
        assert status is not None
        return dict(status["service"])  # type: ignore[call-overload]

    def wait_settled(self, expected: dict[str, object], reader: DumpReader) -> int:
        """Wait until the reader holds ``expected``; return that generation."""
        wait_until(lambda: reader.read()[1] == expected, timeout=15, message=f"{expected}")
        return reader.read()[0]

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def service(name: str, config: Path) -> Iterator[Service]:
    svc = Service(name, config)
    yield svc
    code, err = svc.stop()
    assert code == 0, err
    subprocess.run([*svc.proc.args[:3], "unlink", name, "--force"], capture_output=True,
                   check=False)


@pytest.fixture
def reader(service: Service) -> Iterator[DumpReader]:
    dump = DumpReader(service.name)
    yield dump
    dump.close()


def test_atomic_save_publishes_once(service: Service, reader: DumpReader) -> None:
    atomic_save(service.config, "v: 1\n")
    assert service.wait_settled({"v": 1}, reader) == 2
    assert service.service()["publishes"] == 2


def test_unchanged_content_publishes_nothing(service: Service, reader: DumpReader) -> None:
    atomic_save(service.config, "v: 1\n")
    service.wait_settled({"v": 1}, reader)
    reloads = int(service.service()["reloads"])  # type: ignore[call-overload]
    os.utime(service.config)  # a touch
    atomic_save(service.config, "v: 1\n")  # an identical rewrite
    atomic_save(service.config, "# reordered, same content\nv: 1\n")
    wait_until(lambda: int(service.service()["reloads"]) > reloads,  # type: ignore[call-overload]
               message="reload after touch")
    assert service.generation() == 2


def test_delete_then_recreate(service: Service, reader: DumpReader) -> None:
    service.config.unlink()
    wait_until(lambda: "file not found" in str(service.service()["last_error"]),
               message="rejection of the missing file")
    assert reader.read() == (1, {"v": 0})
    service.config.write_text("v: 2\n")
    assert service.wait_settled({"v": 2}, reader) == 2


def test_directory_removed_and_created_again(service: Service, reader: DumpReader) -> None:
    shutil.rmtree(service.config.parent)
    wait_until(lambda: "file not found" in str(service.service()["last_error"]),
               message="rejection of the missing directory")
    service.config.parent.mkdir()
    service.config.write_text("v: 3\n")
    assert service.wait_settled({"v": 3}, reader) == 2


def test_truncate_then_slow_write_publishes_final_once(service: Service,
                                                       reader: DumpReader) -> None:
    with open(service.config, "w") as f:
        for chunk in ("a: 1\n", "b: 2\n", "c: 3\n"):
            f.write(chunk)
            f.flush()
            time.sleep(0.01)  # the writer pauses less than the 50 ms debounce
    assert service.wait_settled({"a": 1, "b": 2, "c": 3}, reader) == 2
    assert service.service()["publishes"] == 2


def test_save_storm_publishes_a_handful_ending_on_final(service: Service,
                                                        reader: DumpReader) -> None:
    for i in range(1, 101):
        atomic_save(service.config, f"v: {i}\n")
        time.sleep(0.01)
    generation = service.wait_settled({"v": 100}, reader)
    assert 2 <= generation <= 21


def test_invalid_config_keeps_last_good_and_service_alive(service: Service,
                                                          reader: DumpReader) -> None:
    atomic_save(service.config, "v: [unclosed\n")
    wait_until(lambda: service.service().get("last_error") is not None, message="rejection")
    assert f"{service.config}:2" in str(service.service()["last_error"])
    assert service.proc.poll() is None
    assert reader.read() == (1, {"v": 0})
    atomic_save(service.config, "v: 5\n")
    assert service.wait_settled({"v": 5}, reader) == 2


def test_kubernetes_configmap_volume(name: str, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "..2026_11_22_1").mkdir()
    (volume / "..2026_11_22_1" / "app.yaml").write_text("v: 1\n")
    (volume / "..data").symlink_to("..2026_11_22_1")
    (volume / "app.yaml").symlink_to("..data/app.yaml")
    svc = Service(name, volume / "app.yaml")
    reader = DumpReader(name)
    try:
        (volume / "..2026_11_22_2").mkdir()
        (volume / "..2026_11_22_2" / "app.yaml").write_text("v: 2\n")
        (volume / "..data_tmp").symlink_to("..2026_11_22_2")
        os.replace(volume / "..data_tmp", volume / "..data")
        shutil.rmtree(volume / "..2026_11_22_1")
        assert svc.wait_settled({"v": 2}, reader) == 2
    finally:
        reader.close()
        code, err = svc.stop()
        assert code == 0, err


def test_sighup_reloads_now(name: str, config: Path) -> None:
    svc = Service(name, config, "--poll", "3600")  # the watcher would take an hour
    reader = DumpReader(name)
    try:
        config.write_text("v: 7\n")
        svc.proc.send_signal(signal.SIGHUP)
        assert svc.wait_settled({"v": 7}, reader) == 2
    finally:
        reader.close()
        code, err = svc.stop()
        assert code == 0, err
    assert "published generation 2" in err


def test_sigterm_exits_0_and_readers_keep_serving(name: str, config: Path) -> None:
    svc = Service(name, config)
    reader = DumpReader(name)
    try:
        code, err = svc.stop()
        assert code == 0, err
        assert reader.read() == (1, {"v": 0})
    finally:
        reader.close()
        subprocess.run([*svc.proc.args[:3], "unlink", name], capture_output=True, check=False)


def test_missing_initial_config_exits_1(name: str, tmp_path: Path) -> None:
    proc = python("-m", "shmconf", "publish", name, "-c", str(tmp_path / "none.yaml"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "none.yaml: file not found" in err


def test_standby_takes_over_within_a_second(name: str, config: Path, tmp_path: Path) -> None:
    active = Service(name, config)
    log = tmp_path / "standby.log"
    with open(log, "wb") as log_file:
        standby = subprocess.Popen(
            [*active.proc.args[:3], "publish", name, "-c", str(config), "--standby"],
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=REPO,
        )
    try:
        wait_until(lambda: "standing by" in log.read_text(), message="standby waiting")
        before = active.generation()
        active.proc.send_signal(signal.SIGKILL)
        active.proc.communicate()
        killed_at = time.monotonic()
        wait_until(lambda: (active.status() or {}).get("publisher_pid") == standby.pid
                   and (active.status() or {}).get("publisher_alive") is True,
                   timeout=10, message="standby took over")
        assert time.monotonic() - killed_at < 2.0
        assert active.generation() >= before
        atomic_save(config, "v: 1\n")
        wait_until(lambda: active.generation() == before + 1, message="standby publishes")
    finally:
        for proc in (active.proc, standby):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        subprocess.run([*active.proc.args[:3], "unlink", name, "--force"], capture_output=True,
                       check=False)
    assert standby.returncode == 0, log.read_text()
    assert "took over as publisher" in log.read_text()
