"""Notice every way a config file really changes, and call back once it settled.

Files are replaced more often than they are written in place: editors save
to a temporary file and rename it over the original, Kubernetes swaps a
``..data`` symlink to a new directory, tools delete and recreate. A watch on
the file itself follows the old inode and goes deaf. So :class:`Watcher`
watches the **parent directories** (and the directory of each symlink's
target), treats any event there as "something may have changed", and after
``debounce_ms`` of quiet compares a **fingerprint** of the watched files
(device, inode, size, mtime and the resolved path of each): only a changed
fingerprint calls back. A directory that does not exist yet is covered by
watching its nearest existing ancestor and re-arming when it appears.

``on_change()`` runs on one dedicated thread, never concurrently with
itself. A touch changes the fingerprint and calls back; the publisher then
compares a digest of the content and publishes nothing.

Where inotify is not available (NFS, some container mounts) or its watches
are exhausted, ``poll_s`` (or the automatic fallback) compares the
fingerprint every ``poll_s`` seconds instead, with the same debounce.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("shmconf.watch")

#: Poll interval when inotify cannot be used and none was given.
FALLBACK_POLL_S: Final = 1.0
#: Events that do not change anything (watchdog reports reads on inotify).
_IGNORED_EVENTS: Final = frozenset({"opened", "closed_no_write"})

Fingerprint = tuple[Any, ...]


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """What must differ for a file to count as changed: identity, size, mtime, target."""
    parts: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append((os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
                          st.st_mtime_ns))
        except OSError:
            parts.append(None)
    return tuple(parts)


def _existing_ancestor(directory: Path) -> Path:
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    return directory


def watch_dirs(paths: Sequence[Path]) -> set[Path]:
    """Directories to watch: each file's parent (or its nearest existing
    ancestor) and the directory of each symlink target."""
    dirs: set[Path] = set()
    for path in paths:
        dirs.add(_existing_ancestor(path.absolute().parent))
        with contextlib.suppress(OSError):
            real = Path(os.path.realpath(path))
            if real != path.absolute():
                dirs.add(_existing_ancestor(real.parent))
    return dirs


class Watcher:
    """Calls ``on_change()`` once the watched files changed and settled.

    Args:
        paths: the files to watch (they need not exist yet).
        on_change: called without arguments, from the watcher's own thread.
        debounce_ms: quiet time after the last event before comparing.
        poll_s: poll every this many seconds instead of using inotify.
    """

    def __init__(
        self,
        paths: Sequence[os.PathLike[str] | str],
        on_change: Callable[[], None],
        *,
        debounce_ms: int = 100,
        poll_s: float | None = None,
    ) -> None:
        if debounce_ms < 0:
            raise ValueError(f"'debounce_ms' must be >= 0, got {debounce_ms}")
        if poll_s is not None and poll_s <= 0:
            raise ValueError(f"'poll_s' must be > 0 seconds, got {poll_s}")
        self.paths = [Path(p).absolute() for p in paths]
        self._on_change = on_change
        self._debounce_s = debounce_ms / 1000
        self._poll_s = poll_s
        self._cond = threading.Condition()
        self._pending = False
        self._last_event = 0.0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self._watches: dict[Path, Any] = {}
        self._handler: Any = None
        self._seen: Fingerprint = ()

    @property
    def mode(self) -> str:
        """``"native"`` (inotify through watchdog) or ``"poll"``."""
        return "poll" if self._poll_s is not None else "native"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Arm the watches; changes after this returns are never missed."""
        self._seen = fingerprint(self.paths)
        if self._poll_s is None:
            try:
                self._start_observer()
            except OSError as exc:
                log.warning("cannot watch with inotify (%s); polling every %.1fs instead",
                            exc, FALLBACK_POLL_S)
                self._stop_observer()
                self._poll_s = FALLBACK_POLL_S
        if self._poll_s is not None:
            self._spawn(self._poll_loop, "poll")
        self._spawn(self._dispatch_loop, "dispatch")

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        thread = threading.Thread(target=target, name=f"shmconf-watch-{what}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop watching; ``on_change`` is never called after this returns. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_observer()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()
        self._threads = []

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- native watching -------------------------------------------------------

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _IGNORED_EVENTS:
                    watcher._notify()

        self._handler = Handler()
        self._observer = Observer()
        self._rearm()
        self._observer.start()

    def _rearm(self) -> None:
        """Watch the directories the files need now (new ones appear, targets move)."""
        if self._observer is None:
            return
        wanted = watch_dirs(self.paths)
        for directory in set(self._watches) - wanted:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(self._watches.pop(directory))
        for directory in wanted - set(self._watches):
            self._watches[directory] = self._observer.schedule(
                self._handler, str(directory), recursive=False
            )

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            with contextlib.suppress(RuntimeError):
                observer.stop()
                observer.join()
        self._watches = {}

    # -- polling ------------------------------------------------------------------

    def _poll_loop(self) -> None:
        assert self._poll_s is not None
        last = self._seen
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, timeout=self._poll_s):
                    return
            current = fingerprint(self.paths)
            if current != last:
                last = current
                self._notify()

    # -- debounce and dispatch ------------------------------------------------------

    def _notify(self) -> None:
        """Record that something may have changed (from watchdog or the poller)."""
        with self._cond:
            self._pending = True
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                # Debounce: wait until no event came for debounce_s.
                while not self._stopping:
                    quiet = time.monotonic() - self._last_event
                    if quiet >= self._debounce_s:
                        break
                    self._cond.wait(self._debounce_s - quiet)
                if self._stopping:
                    return
                self._pending = False
            with contextlib.suppress(OSError):
                self._rearm()
            current = fingerprint(self.paths)
            if current == self._seen:
                continue
            self._seen = current
            try:
                self._on_change()
            except Exception:
                log.exception("watch callback failed")
