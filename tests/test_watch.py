"""The watcher against every way files really change (real files, real inotify)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmconf.watch import Watcher

DEBOUNCE_MS = 50


class Calls:
    """Counts callbacks and records what the file held at each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[str | None] = []
        self.cond = threading.Condition()

    def __call__(self) -> None:
        try:
            content: str | None = self.path.read_text()
        except OSError:
            content = None
        with self.cond:
            self.seen.append(content)
            self.cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.seen) >= count, timeout), self.seen

    def stays(self, count: int) -> None:
        """Assert no further callback within a bounded window (several debounces).

        The one legitimate bounded wait: proving that nothing happens.
        """
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen) > count, timeout=DEBOUNCE_MS * 6 / 1000)
            assert len(self.seen) == count, self.seen


@pytest.fixture(params=["native", "poll"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(path: Path, mode: str) -> tuple[Watcher, Calls]:
    calls = Calls(path)
    watcher = Watcher([path], calls, debounce_ms=DEBOUNCE_MS,
                      poll_s=0.02 if mode == "poll" else None)
    return watcher, calls


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "app.yaml"
    path.parent.mkdir()
    path.write_text("v: 0\n")
    return path


@pytest.fixture
def watched(config: Path, mode: str) -> Iterator[tuple[Watcher, Calls]]:
    watcher, calls = make(config, mode)
    watcher.start()
    yield watcher, calls
    watcher.stop()


def atomic_save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_mode_is_reported(watched: tuple[Watcher, Calls], mode: str) -> None:
    assert watched[0].mode == mode


def test_atomic_save_calls_back_once(watched: tuple[Watcher, Calls], config: Path) -> None:
    _, calls = watched
    atomic_save(config, "v: 1\n")
    calls.wait_for(1)
    calls.stays(1)
    assert calls.seen == ["v: 1\n"]


def test_delete_then_recreate(watched: tuple[Watcher, Calls], config: Path) -> None:
    _, calls = watched
    config.unlink()
    calls.wait_for(1)
    config.write_text("v: 2\n")
    with calls.cond:
        assert calls.cond.wait_for(lambda: calls.seen[-1] == "v: 2\n", 10), calls.seen


def test_truncate_then_slow_write_settles_to_final(watched: tuple[Watcher, Calls],
                                                   config: Path) -> None:
    _, calls = watched
    with open(config, "w") as f:  # truncates
        for chunk in ("a: 1\n", "b: 2\n", "c: 3\n"):
            f.write(chunk)
            f.flush()
            time.sleep(DEBOUNCE_MS / 1000 / 5)  # the writer pauses less than the debounce
    calls.wait_for(1)
    calls.stays(1)
    assert calls.seen == ["a: 1\nb: 2\nc: 3\n"]


def test_save_storm_gives_a_handful_and_ends_on_final(watched: tuple[Watcher, Calls],
                                                      config: Path) -> None:
    _, calls = watched
    for i in range(100):
        atomic_save(config, f"v: {i}\n")
        time.sleep(0.01)
    with calls.cond:
        assert calls.cond.wait_for(lambda: calls.seen and calls.seen[-1] == "v: 99\n", 10)
    calls.stays(len(calls.seen))
    assert 1 <= len(calls.seen) <= 20


def test_touch_calls_back_unrelated_file_does_not(watched: tuple[Watcher, Calls],
                                                  config: Path) -> None:
    _, calls = watched
    (config.parent / "other.txt").write_text("noise")
    calls.stays(0)
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
    calls.wait_for(1)


def test_kubernetes_configmap_swap(tmp_path: Path, mode: str) -> None:
    # Built as kubelet does: files are symlinks through ..data to a timestamped dir.
    volume = tmp_path / "volume"
    volume.mkdir()
    first = volume / "..2026_11_22_10_00_00.1"
    first.mkdir()
    (first / "app.yaml").write_text("v: 1\n")
    (volume / "..data").symlink_to(first.name)
    (volume / "app.yaml").symlink_to("..data/app.yaml")
    watcher, calls = make(volume / "app.yaml", mode)
    with watcher:
        second = volume / "..2026_11_22_10_05_00.2"
        second.mkdir()
        (second / "app.yaml").write_text("v: 2\n")
        (volume / "..data_tmp").symlink_to(second.name)
        os.replace(volume / "..data_tmp", volume / "..data")
        calls.wait_for(1)
        calls.stays(1)
        assert calls.seen == ["v: 2\n"]


def test_directory_that_does_not_exist_yet(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "later" / "deeper" / "app.yaml"
    watcher, calls = make(path, mode)
    with watcher:
        path.parent.mkdir(parents=True)
        path.write_text("v: 1\n")
        with calls.cond:
            assert calls.cond.wait_for(lambda: "v: 1\n" in calls.seen, 10), calls.seen
        atomic_save(path, "v: 2\n")
        with calls.cond:
            assert calls.cond.wait_for(lambda: calls.seen[-1] == "v: 2\n", 10), calls.seen


def test_stop_is_idempotent_and_final(config: Path, mode: str) -> None:
    watcher, calls = make(config, mode)
    watcher.start()
    watcher.stop()
    watcher.stop()
    atomic_save(config, "v: 9\n")
    calls.stays(0)


def test_falls_back_to_polling_when_inotify_fails(config: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_inotify(self: Watcher) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(Watcher, "_start_observer", no_inotify)
    monkeypatch.setattr("shmconf.watch.FALLBACK_POLL_S", 0.02)
    watcher, calls = make(config, "native")
    with watcher:
        assert watcher.mode == "poll"
        atomic_save(config, "v: 3\n")
        calls.wait_for(1)


def test_debounce_is_deterministic_with_injected_events(config: Path) -> None:
    # The scripted path: events injected directly, no file system involved.
    calls = Calls(config)
    watcher = Watcher([config], calls, debounce_ms=DEBOUNCE_MS, poll_s=60)
    with watcher:
        for _ in range(20):
            watcher._notify()
        calls.stays(0)  # fingerprint unchanged: nothing to report
        config.write_text("v: changed\n")
        for _ in range(5):
            watcher._notify()
        calls.wait_for(1)
        calls.stays(1)
