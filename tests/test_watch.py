"""The watcher against every way config files really change.

Real files under ``tmp_path`` and a real observer (or the poller), in both
modes where the scenario makes sense. The scripted tests at the end inject
events through ``Watcher._on_event`` / ``Watcher._notify`` without watchdog, to
pin down the event filter and the debounce.

Nothing here sleeps to let things settle: every wait is on a condition with a
deadline. The one exception is :meth:`Calls.stays`, which proves that *no*
further callback comes; it waits a bounded window of a few debounce periods.
Sleeps that remain pace a writer (a slow write, a save storm), which is the
scenario itself.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver

from shmconf import watch
from shmconf.watch import Watcher, _fingerprint, _resolve, _watch_plan
from tests.helpers import atomic_save

#: Debounce of every watcher here: small, to keep the file fast.
DEBOUNCE_MS = 50
#: Poll interval in poll mode.
POLL_S = 0.02
#: Window in which a stray callback would have shown: a few debounce periods
#: plus a poll. Only used to prove that nothing (more) happens.
QUIET_S = DEBOUNCE_MS * 4 / 1000 + POLL_S
#: Deadline of every wait for something that must happen.
DEADLINE_S = 10.0
#: The thread every callback must run on.
DISPATCH_THREAD = "shmconf-watch-dispatch"

MODES = ["native", "poll"]


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE_S) -> None:
    """Fail unless ``predicate()`` becomes true within ``timeout`` seconds.

    For state that no condition variable announces (the watcher's watches);
    callbacks are waited for on :attr:`Calls.cond` instead.
    """
    deadline = time.monotonic() + timeout
    ready = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {predicate}")
        ready.wait(0.005)  # re-check soon; nothing will set it


class Calls:
    """The ``on_change`` of the tests: records every call, and what the file held."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.seen: list[str | None] = []
        self.threads: set[str] = set()
        self.active = 0
        self.most_active = 0
        self.cond = threading.Condition()
        self.hook: Callable[[], None] | None = None

    def __call__(self) -> None:
        with self.cond:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.hook is not None:
                self.hook()
            content: str | None = None
            if self.path is not None:
                try:
                    content = self.path.read_text()
                except OSError:
                    content = None
            with self.cond:
                self.seen.append(content)
                self.threads.add(threading.current_thread().name)
                self.cond.notify_all()
        finally:
            with self.cond:
                self.active -= 1

    @property
    def count(self) -> int:
        with self.cond:
            return len(self.seen)

    @property
    def last(self) -> str | None:
        with self.cond:
            return self.seen[-1] if self.seen else None

    def wait_until(self, predicate: Callable[[list[str | None]], bool],
                   timeout: float = DEADLINE_S) -> None:
        """Wait for ``predicate(seen)`` on the condition, failing after ``timeout``."""
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.seen), timeout)
            assert ok, f"timed out; callbacks saw {self.seen}"

    def wait_for(self, count: int, timeout: float = DEADLINE_S) -> None:
        self.wait_until(lambda seen: len(seen) >= count, timeout)

    def wait_for_content(self, text: str | None, timeout: float = DEADLINE_S) -> None:
        self.wait_until(lambda seen: bool(seen) and seen[-1] == text, timeout)

    def stays(self, count: int) -> None:
        """Assert that no callback beyond ``count`` comes.

        The one legitimate bounded wait: nothing announces that nothing
        happened, so wait a window of a few debounce periods (QUIET_S).
        """
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen) > count, timeout=QUIET_S)
            assert len(self.seen) == count, self.seen


Start = Callable[..., tuple[Watcher, Calls]]

#: For what the dispatcher alone decides, the same in both modes.
native_only = pytest.mark.parametrize("mode", ["native"])


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(mode: str) -> Iterator[Start]:
    """Start watchers in the test's mode; all are stopped afterwards."""
    watchers: list[Watcher] = []

    def _start(*paths: Path, record: Path | None = None,
               debounce_ms: int = DEBOUNCE_MS) -> tuple[Watcher, Calls]:
        calls = Calls(record if record is not None else paths[0])
        watcher = Watcher(list(paths), calls, debounce=debounce_ms / 1000,
                          poll=POLL_S if mode == "poll" else None)
        watchers.append(watcher)
        watcher.start()
        return watcher, calls

    yield _start
    for watcher in watchers:
        watcher.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("shmconf-watch")]


def retarget(link: Path, target: str) -> None:
    """Point a symlink elsewhere atomically (``ln -sfn`` through a rename)."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)


class Kubelet:
    """A ConfigMap volume, updated the way kubelet's AtomicWriter does it.

    The visible ``app.yaml`` is a symlink to ``..data/app.yaml``; ``..data`` is a
    symlink to a timestamped directory. An update writes a new timestamped
    directory, points a ``..data_tmp`` symlink at it, renames that over
    ``..data``, then removes the old directory.
    """

    def __init__(self, volume: Path) -> None:
        self.volume = volume
        self.serial = 0
        volume.mkdir()
        current = self._write_version("v: 1\n")
        (volume / "..data").symlink_to(current)
        (volume / "app.yaml").symlink_to("..data/app.yaml")
        self.current = current

    @property
    def path(self) -> Path:
        return self.volume / "app.yaml"

    def _write_version(self, text: str) -> str:
        self.serial += 1
        name = f"..2026_11_22_10_00_{self.serial:02d}.{1000 + self.serial}"
        (self.volume / name).mkdir()
        (self.volume / name / "app.yaml").write_text(text)
        return name

    def update(self, text: str) -> None:
        new = self._write_version(text)
        (self.volume / "..data_tmp").symlink_to(new)
        os.replace(self.volume / "..data_tmp", self.volume / "..data")
        old, self.current = self.current, new
        (self.volume / old / "app.yaml").unlink()
        (self.volume / old).rmdir()


# -- the scenarios, in both modes ---------------------------------------------


def test_mode_is_reported(start: Start, config: Path, mode: str) -> None:
    watcher, _ = start(config)
    assert watcher.mode == ("inotify" if mode == "native" else "poll")


def test_atomic_save_calls_back_once(start: Start, config: Path) -> None:
    _, calls = start(config)
    atomic_save(config, "v: 1\n", suffix=".swp")
    calls.wait_for(1)
    calls.stays(1)
    assert calls.seen == ["v: 1\n"]


def test_kubernetes_configmap_swap(start: Start, tmp_path: Path) -> None:
    kubelet = Kubelet(tmp_path / "volume")
    _, calls = start(kubelet.path)
    kubelet.update("v: 2\n")
    calls.wait_for_content("v: 2\n")
    kubelet.update("v: 3\n")
    calls.wait_for_content("v: 3\n")
    calls.stays(2)
    assert calls.seen == ["v: 2\n", "v: 3\n"]


def test_delete_then_recreate_quickly_calls_back_once(start: Start, config: Path) -> None:
    _, calls = start(config)
    config.unlink()
    config.write_text("v: 2\n")
    calls.wait_for(1)
    calls.stays(1)
    assert calls.seen == ["v: 2\n"]


def test_delete_then_recreate_later(start: Start, config: Path) -> None:
    _, calls = start(config)
    config.unlink()
    calls.wait_for(1)
    assert calls.seen == [None]
    config.write_text("v: 2\n")
    calls.wait_for(2)
    calls.stays(2)
    assert calls.seen == [None, "v: 2\n"]


def test_truncate_then_slow_write_calls_back_once_with_final_content(
    start: Start, config: Path
) -> None:
    _, calls = start(config)
    chunks = [f"key{i}: {i}\n" for i in range(5)]
    with open(config, "w") as f:  # truncates
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            # Pacing the writer: each pause is shorter than the debounce.
            time.sleep(DEBOUNCE_MS / 1000 / 5)
    calls.wait_for(1)
    calls.stays(1)
    assert calls.seen == ["".join(chunks)]


def test_save_storm_gives_a_handful_and_ends_on_the_last_save(
    start: Start, config: Path
) -> None:
    _, calls = start(config)
    began = time.monotonic()
    for i in range(100):
        atomic_save(config, f"v: {i}\n", suffix=".swp")
        time.sleep(0.01)  # pacing the writer: 100 saves in about a second
    assert time.monotonic() - began < 3
    calls.wait_for_content("v: 99\n")
    # A check made while saves still came (the longest delay passed) is not
    # trusted, so the quiet check after it may call back once more with the
    # same content (the publisher's digest turns that into no publish).
    first = calls.count
    with calls.cond:
        calls.cond.wait_for(lambda: len(calls.seen) > first, timeout=QUIET_S)
    settled = calls.count
    calls.stays(settled)
    assert settled - first <= 1
    assert calls.seen[first - 1:] == ["v: 99\n"] * (settled - first + 1)
    assert 1 <= settled <= 6, calls.seen
    assert calls.threads == {DISPATCH_THREAD}
    assert calls.most_active == 1


def test_directory_that_does_not_exist_yet(
    start: Start, tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "later" / "deeper" / "app.yaml"
    watcher, calls = start(path)
    path.parent.mkdir(parents=True)
    if mode == "native":
        # Re-armed on the real directory before the file exists.
        wait_until(lambda: str(path.parent) in watcher._watches)
        assert str(tmp_path) not in watcher._watches
    calls.stays(0)  # a new directory alone changes no file
    path.write_text("v: 1\n")
    calls.wait_for_content("v: 1\n")
    atomic_save(path, "v: 2\n", suffix=".swp")
    calls.wait_for_content("v: 2\n")


def test_file_and_directories_appearing_at_once(start: Start, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "app.yaml"
    _, calls = start(path)
    path.parent.mkdir(parents=True)
    path.write_text("v: 1\n")
    calls.wait_for_content("v: 1\n")
    calls.stays(1)


def test_touch_calls_back(start: Start, config: Path) -> None:
    _, calls = start(config)
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls.wait_for(1)
    calls.stays(1)


@native_only
def test_unrelated_changes_in_the_directory_do_not_call_back(
    start: Start, config: Path
) -> None:
    _, calls = start(config)
    neighbour = config.parent / "other.yaml"
    neighbour.write_text("x: 1\n")
    atomic_save(neighbour, "x: 2\n", suffix=".swp")
    (config.parent / ".app.yaml.swp").write_text("draft\n")  # an editor's swap file
    (config.parent / ".app.yaml.swp").unlink()
    (config.parent / "sub").mkdir()
    assert config.read_text() == "v: 0\n"  # reads open and close the file
    calls.stays(0)


def test_symlink_into_another_directory_is_followed(start: Start, tmp_path: Path) -> None:
    (tmp_path / "opt").mkdir()
    (tmp_path / "srv").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "opt" / "app.yaml").write_text("v: opt\n")
    (tmp_path / "srv" / "app.yaml").write_text("v: srv\n")
    link = tmp_path / "etc" / "app.yaml"
    link.symlink_to("../opt/app.yaml")
    _, calls = start(link)
    # A save in the target's directory, which holds no watched path itself.
    atomic_save(tmp_path / "opt" / "app.yaml", "v: opt 2\n", suffix=".swp")
    calls.wait_for_content("v: opt 2\n")
    retarget(link, "../srv/app.yaml")
    calls.wait_for_content("v: srv\n")
    # Re-resolved: the new target's directory is watched now.
    atomic_save(tmp_path / "srv" / "app.yaml", "v: srv 2\n", suffix=".swp")
    calls.wait_for_content("v: srv 2\n")
    calls.stays(3)


@native_only
def test_several_files_one_callback_per_settled_change(start: Start, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    prod = tmp_path / "prod" / "prod.toml"
    base.write_text("a: 1\n")
    _, calls = start(base, prod)
    atomic_save(base, "a: 2\n", suffix=".swp")
    calls.wait_for(1)
    prod.parent.mkdir()
    prod.write_text("b = 1\n")
    calls.wait_for(2)
    calls.stays(2)


def test_stop_is_idempotent_and_final(start: Start, config: Path) -> None:
    watcher, calls = start(config)
    atomic_save(config, "v: 1\n", suffix=".swp")  # pending: stop() comes before the debounce ends
    watcher.stop()
    watcher.stop()
    atomic_save(config, "v: 2\n", suffix=".swp")
    calls.stays(0)
    with pytest.raises(RuntimeError, match="construct a new one"):
        watcher.start()


@native_only
def test_stop_waits_for_a_running_callback(start: Start, config: Path) -> None:
    watcher, calls = start(config)
    entered, release = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        release.wait(DEADLINE_S)

    calls.hook = block
    atomic_save(config, "v: 1\n", suffix=".swp")
    assert entered.wait(DEADLINE_S)
    stopper = threading.Thread(target=watcher.stop)
    stopper.start()
    stopper.join(QUIET_S)
    assert stopper.is_alive()  # stop() waits for the callback in progress
    release.set()
    stopper.join(DEADLINE_S)
    assert not stopper.is_alive()
    assert calls.seen == ["v: 1\n"]


@native_only
def test_stop_from_inside_the_callback(start: Start, config: Path) -> None:
    watcher, calls = start(config)
    calls.hook = watcher.stop
    atomic_save(config, "v: 1\n", suffix=".swp")
    calls.wait_for(1)
    atomic_save(config, "v: 2\n", suffix=".swp")
    calls.stays(1)


@native_only
def test_callback_error_is_logged_and_watching_goes_on(
    start: Start, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, calls = start(config)
    failures = iter([RuntimeError("boom")])

    def fail_once() -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    calls.hook = fail_once
    with caplog.at_level(logging.ERROR, logger="shmconf.watch"):
        atomic_save(config, "v: 1\n", suffix=".swp")
        wait_until(lambda: any("on_change" in r.getMessage() for r in caplog.records))
        atomic_save(config, "v: 2\n", suffix=".swp")
        calls.wait_for_content("v: 2\n")


# -- the native observer failing ----------------------------------------------


def test_falls_back_to_polling_when_no_watch_can_be_added(
    config: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_watches(self: BaseObserver, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(BaseObserver, "schedule", no_watches)
    monkeypatch.setattr(watch, "FALLBACK_POLL_S", POLL_S)
    calls = Calls(config)
    with caplog.at_level(logging.WARNING, logger="shmconf.watch"), \
            Watcher([config], calls, debounce=DEBOUNCE_MS / 1000) as watcher:
        assert watcher.mode == "poll"
        assert "max_user_watches" in caplog.text
        atomic_save(config, "v: 1\n", suffix=".swp")
        calls.wait_for_content("v: 1\n")


def test_falls_back_to_polling_when_the_observer_cannot_start(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_inotify() -> Any:
        raise OSError(errno.EMFILE, "too many inotify instances")

    monkeypatch.setattr(watch, "Observer", no_inotify)
    monkeypatch.setattr(watch, "FALLBACK_POLL_S", POLL_S)
    calls = Calls(config)
    with Watcher([config], calls, debounce=DEBOUNCE_MS / 1000) as watcher:
        assert watcher.mode == "poll"
        config.unlink()
        config.write_text("v: 1\n")
        calls.wait_for_content("v: 1\n")


def test_falls_back_to_polling_when_a_later_watch_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "later" / "app.yaml"
    schedule = BaseObserver.schedule

    def limited(self: BaseObserver, handler: Any, directory: str, **kwargs: Any) -> Any:
        if directory == str(path.parent):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return schedule(self, handler, directory, **kwargs)

    monkeypatch.setattr(BaseObserver, "schedule", limited)
    monkeypatch.setattr(watch, "FALLBACK_POLL_S", POLL_S)
    calls = Calls(path)
    with Watcher([path], calls, debounce=DEBOUNCE_MS / 1000) as watcher:
        assert watcher.mode == "inotify"
        path.parent.mkdir()
        wait_until(lambda: watcher.mode == "poll")
        path.write_text("v: 1\n")
        calls.wait_for_content("v: 1\n")


def test_arguments_are_checked(config: Path) -> None:
    with pytest.raises(ValueError, match="'paths'"):
        Watcher([], lambda: None)
    with pytest.raises(ValueError, match="'debounce' must be 0 to 86400 seconds"):
        Watcher([config], lambda: None, debounce=-1)
    with pytest.raises(ValueError, match="'poll' must be a positive number"):
        Watcher([config], lambda: None, poll=0)


# -- resolution and fingerprint --------------------------------------------------


def test_resolution_of_a_configmap_volume(tmp_path: Path) -> None:
    kubelet = Kubelet(tmp_path / "volume")
    volume = str(kubelet.volume)
    resolved = _resolve(str(kubelet.path))
    assert resolved.links == (
        (f"{volume}/app.yaml", "..data/app.yaml"),
        (f"{volume}/..data", kubelet.current),
    )
    assert resolved.real == f"{volume}/{kubelet.current}/app.yaml"
    dirs, relevant = _watch_plan([str(kubelet.path)])
    assert dirs == {volume, f"{volume}/{kubelet.current}"}
    assert {f"{volume}/app.yaml", f"{volume}/..data", resolved.real} <= relevant
    assert f"{volume}/..data_tmp" not in relevant


def test_fingerprint_sees_a_relinked_identical_file(tmp_path: Path) -> None:
    # Same inode, size and mtime behind a different symlink target: still a change.
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "app.yaml").write_text("v: 1\n")
    os.link(tmp_path / "one" / "app.yaml", tmp_path / "two" / "app.yaml")
    link = tmp_path / "app.yaml"
    link.symlink_to("one/app.yaml")
    before = _fingerprint([str(link)])
    retarget(link, "two/app.yaml")
    assert _fingerprint([str(link)]) != before


def test_fingerprint_survives_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    ((stat_key, links),) = _fingerprint([str(tmp_path / "a")])
    assert stat_key is None
    assert len(links) > watch.MAX_SYMLINKS


# -- scripted events, no watchdog --------------------------------------------------


def event(kind: str, src: Path, dest: Path | None = None, *, directory: bool = False) -> Any:
    """A stand-in for a watchdog event, with the attributes the watcher reads."""
    return SimpleNamespace(event_type=kind, src_path=str(src),
                           dest_path=str(dest) if dest else "", is_directory=directory)


@pytest.fixture
def scripted(config: Path) -> Iterator[tuple[Watcher, Calls]]:
    """A watcher fed only by the test: no observer, a poller that never polls."""
    calls = Calls(config)
    watcher = Watcher([config], calls, debounce=DEBOUNCE_MS / 1000, poll=3600)
    with watcher:
        yield watcher, calls


@pytest.fixture
def frozen(config: Path) -> Iterator[Watcher]:
    """Like ``scripted``, with a debounce that never ends within a test."""
    watcher = Watcher([config], lambda: None, debounce=3600, poll=3600)
    with watcher:
        yield watcher


def test_scripted_noise_is_ignored(frozen: Watcher, config: Path) -> None:
    folder = config.parent
    swap = folder / ".app.yaml.swp"
    for noise in [
        event("opened", config),
        event("closed_no_write", config),
        event("modified", folder, directory=True),  # echo of a change inside
        event("attrib", folder, directory=True),
        event("created", swap),
        event("modified", swap),
        event("closed", swap),
        event("created", folder / "other.yaml"),
        event("deleted", folder / "other.yaml"),
        event("created", folder / "app.yaml.d", directory=True),
        event("deleted", folder / "app.yaml.d", directory=True),
    ]:
        frozen._on_event(noise)
        assert not frozen._pending, noise
    assert not frozen._vanished  # unrelated directories are not remembered
    frozen._on_event(event("moved", swap, config))
    assert frozen._pending


@pytest.mark.parametrize("kind", ["modified", "attrib", "closed", "created", "deleted"])
def test_scripted_events_on_the_file_count(frozen: Watcher, config: Path, kind: str) -> None:
    frozen._on_event(event(kind, config))
    assert frozen._pending


def test_scripted_kubelet_update(tmp_path: Path) -> None:
    kubelet = Kubelet(tmp_path / "volume")
    volume = kubelet.volume
    watcher = Watcher([kubelet.path], lambda: None, debounce=3600, poll=3600)
    with watcher:
        # What watchdog reports in the volume directory while kubelet updates it.
        for before_swap in [
            event("created", volume / "..2026_11_22_10_05_00.2", directory=True),
            event("created", volume / "..data_tmp"),
        ]:
            watcher._on_event(before_swap)
            assert not watcher._pending
        watcher._on_event(event("moved", volume / "..data_tmp", volume / "..data"))
        assert watcher._pending


def test_scripted_deleted_watch_directory_counts(frozen: Watcher, config: Path) -> None:
    frozen._on_event(event("deleted", config.parent, directory=True))
    assert frozen._pending
    assert frozen._vanished == {str(config.parent)}  # its watch is re-added on the next check


def test_scripted_events_restart_the_debounce(
    scripted: tuple[Watcher, Calls], config: Path
) -> None:
    watcher, calls = scripted
    config.write_text("v: 1\n")
    last = time.monotonic()
    for _ in range(20):  # 200 ms of events, 10 ms apart: never quiet for the debounce
        last = time.monotonic()
        watcher._notify(str(config))
        time.sleep(0.01)  # pacing the events
        assert calls.count == 0
    calls.wait_for(1)
    assert time.monotonic() - last >= DEBOUNCE_MS / 1000
    calls.stays(1)
    assert calls.seen == ["v: 1\n"]


def test_scripted_events_without_a_change_do_not_call_back(
    scripted: tuple[Watcher, Calls], config: Path
) -> None:
    watcher, calls = scripted
    for _ in range(20):
        watcher._notify(str(config))
    watcher._notify()
    calls.stays(0)
    config.write_text("v: 1\n")
    watcher._notify(str(config.parent / "unrelated"))
    calls.stays(0)  # the change is there, but no event about it
    watcher._notify(str(config))
    calls.wait_for(1)
    calls.stays(1)


def test_scripted_endless_events_still_call_back(config: Path) -> None:
    debounce_ms = 50
    calls = Calls(config)
    most_s = debounce_ms * watch.MAX_DELAY_DEBOUNCES / 1000
    with Watcher([config], calls, debounce=debounce_ms / 1000, poll=3600) as watcher:
        began = time.monotonic()
        i = 0
        while calls.count == 0:
            assert time.monotonic() - began < DEADLINE_S
            i += 1
            config.write_text(f"v: {i}\n")
            watcher._notify(str(config))
            time.sleep(0.002)  # pacing the writer: far faster than the debounce
        assert time.monotonic() - began >= most_s * 0.9
        # That fingerprint was taken while the writer was busy, so it is not
        # trusted: the next settled check calls back even if nothing differs.
        watcher._notify(str(config))
        calls.wait_for(2)
        assert calls.last == f"v: {i}\n"


def test_directory_removed_and_recreated(start: Start, config: Path) -> None:
    _, calls = start(config)
    config.unlink()
    config.parent.rmdir()
    config.parent.mkdir()
    config.write_text("v: 1\n")
    calls.wait_for_content("v: 1\n")
    # The new directory is watched, not the deleted one.
    atomic_save(config, "v: 2\n", suffix=".swp")
    calls.wait_for_content("v: 2\n")


def test_the_millisecond_spellings_still_work_with_a_warning(config: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"debounce=N / 1000"):
        watcher = Watcher([config], lambda: None, debounce_ms=250)
    assert watcher._debounce_s == 0.25
    with pytest.warns(DeprecationWarning, match=r"poll=S"):
        watcher = Watcher([config], lambda: None, poll_s=2.0)
    assert watcher.mode == "poll"
