"""Notice every way a config file really changes, and call back once it settled.

Files are replaced more often than they are written in place: editors save to
a temporary file and rename it over the original, Kubernetes swaps a ``..data``
symlink to a new directory, tools delete and recreate. A watch on the file
itself follows the old inode and goes deaf after the first such save. So
:class:`Watcher` watches **directories**, never files:

- the directory that holds each file (after following every symlink),
- the directory of every symlink met on the way (``app.yaml``, ``..data``),
- for a directory that does not exist yet, its nearest existing ancestor,
  re-armed on the real directory once it appears.

An event counts when it names a directory entry the path resolution went
through (the file, a symlink on the way, a directory above it); an editor's
swap file or a neighbour's log does not. After ``debounce_ms`` without such an
event the watcher re-resolves the paths, moves its watches where they now
belong, and compares a **fingerprint** of the files: for each path the
``os.stat`` of its target (device, inode, size, mtime) and the chain of
symlinks that leads there. Only a changed fingerprint calls ``on_change()``,
on one dedicated thread, never concurrently with itself. A touch changes the
fingerprint and calls back; the publisher then compares a digest of the
content and publishes nothing.

Where inotify is not available (NFS, some container mounts) ``poll_s``
compares the fingerprint every ``poll_s`` seconds instead, with the same
debounce. The watcher also falls back to polling, with a warning, when the
native observer cannot start or cannot add a watch (inotify limits reached).

Example:
    >>> import pathlib, tempfile, threading
    >>> changed = threading.Event()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp, "app.yaml")
    ...     with Watcher([path], changed.set, debounce_ms=20):
    ...         _ = path.write_text("answer: 42\\n")
    ...         changed.wait(timeout=5)
    True
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

__all__ = ["FALLBACK_POLL_S", "MAX_DELAY_DEBOUNCES", "Watcher"]

log = logging.getLogger("shmconf.watch")

#: Poll interval of the automatic fallback: stat-ing a few files once a second
#: costs nothing measurable and bounds how late a change is noticed.
FALLBACK_POLL_S: Final = 1.0
#: A file that never stops changing still calls back this many debounce periods
#: after its first change, so a busy writer cannot hold a new config back forever.
MAX_DELAY_DEBOUNCES: Final = 10
#: Symlinks followed before a path counts as a loop (the kernel's own limit).
MAX_SYMLINKS: Final = 40
#: Event types that never change a file: opening it, and closing it after a read.
_NOISE_EVENTS: Final = frozenset({"opened", "closed_no_write"})
#: Event types that, on a directory, only echo a change to one of its entries,
#: which is reported on its own (watchdog adds one to every create and delete).
_DIRECTORY_ECHOES: Final = frozenset({"modified", "attrib"})
#: Retries when a directory vanishes between resolving the paths and watching it.
_REARM_ATTEMPTS: Final = 5
#: The longest debounce: far more would overflow the dispatcher's waits
#: (threading.TIMEOUT_MAX) and is no debounce anyone means.
MAX_DEBOUNCE_S: Final = 86_400.0
#: Shortest poll while a change settles, so that ``debounce_ms=0`` cannot spin.
_MIN_SETTLE_POLL_S: Final = 0.005

#: What the fingerprint keeps of one file: device, inode, size, mtime in ns.
StatKey = tuple[int, int, int, int]
#: One entry per watched path: its stat key (``None`` when it cannot be
#: stat-ed) and the symlinks on its way, each with what it points to.
Fingerprint = tuple[tuple[StatKey | None, tuple[tuple[str, str], ...]], ...]


class _Resolved(NamedTuple):
    """Where one path leads, and every directory entry that decides it."""

    #: Each directory entry looked at, outermost first (symlinks included).
    entries: tuple[str, ...]
    #: Each symlink met, with the target it holds.
    links: tuple[tuple[str, str], ...]
    #: The path with every symlink resolved, as far as the entries exist.
    real: str


def _resolve(path: str) -> _Resolved:
    """Follow ``path`` one entry at a time, the way the kernel does.

    Unlike :func:`os.path.realpath` this keeps every entry and symlink on the
    way: each is a place where a rename (an editor's save, kubelet's
    ``..data`` swap) changes what the path means.

    Args:
        path: an absolute path; its entries need not exist.
    """
    entries: list[str] = []
    links: list[tuple[str, str]] = []
    real = os.sep
    todo = path.split(os.sep)[::-1]  # a stack: the next name is last
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            real = os.path.dirname(real)  # `real` holds no symlinks, so this is exact
            continue
        entry = os.path.join(real, name)
        entries.append(entry)
        try:
            target = os.readlink(entry)
        except OSError:  # not a symlink, or not there (yet): take the name as it is
            real = entry
            continue
        links.append((entry, target))
        if len(links) > MAX_SYMLINKS:  # a loop: stat() reports ELOOP, the file counts as missing
            real = os.path.join(entry, *todo[::-1])
            break
        if os.path.isabs(target):
            real = os.sep
        todo.extend(target.split(os.sep)[::-1])
    return _Resolved(tuple(entries), tuple(links), real)


def _stat_key(path: str) -> StatKey | None:
    try:
        st = os.stat(path)  # follows symlinks: the file a reader would open
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _fingerprint(paths: Sequence[str]) -> Fingerprint:
    """What must differ for the files to count as changed."""
    return tuple((_stat_key(path), _resolve(path).links) for path in paths)


def _nearest_dir(directory: str) -> str:
    """``directory`` itself if it exists, else its nearest existing ancestor."""
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        directory = os.path.dirname(directory)
    return directory


def _watch_plan(paths: Sequence[str]) -> tuple[set[str], frozenset[str]]:
    """The directories to watch, and the entries whose events count."""
    dirs: set[str] = set()
    relevant: set[str] = set()
    for path in paths:
        resolved = _resolve(path)
        relevant.update(resolved.entries)
        dirs.add(_nearest_dir(os.path.dirname(resolved.real)))
        for link, _ in resolved.links:
            dirs.add(_nearest_dir(os.path.dirname(link)))
    return dirs, frozenset(relevant)


def _native_mode() -> str:
    name = getattr(Observer, "__name__", "")
    if name == "InotifyObserver":
        return "inotify"
    # watchdog falls back to its own stat poller where it has no native API;
    # ours is cheaper (it stats only the watched files), so use that instead.
    return "poll" if "Polling" in name else "native"


class _Handler(FileSystemEventHandler):
    """Hands every watchdog event to the watcher, on watchdog's thread."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)


class Watcher:
    """Calls ``on_change()`` once the watched files changed and settled.

    Args:
        paths: the files to watch. They, and their directories, need not exist
            yet; symlinks are followed (and re-resolved after every change).
        on_change: called without arguments on the watcher's own thread,
            never concurrently with itself. Exceptions are logged.
        debounce: seconds of quiet after the last relevant event before the
            fingerprint is compared. A file that keeps changing is still
            compared every ``MAX_DELAY_DEBOUNCES`` periods.
        poll: compare the fingerprint every this many seconds instead of
            using inotify (for NFS and other file systems without it).
        debounce_ms, poll_s: the same in the units of earlier releases;
            deprecated (a DeprecationWarning), kept for one release.

    Raises:
        ValueError: for no paths, a negative ``debounce`` or a ``poll`` that
            is not positive.

    ``start()`` returns once watching is armed: every change after it is
    noticed. After ``stop()`` returns, ``on_change`` is never called again.
    """

    def __init__(
        self,
        paths: Sequence[os.PathLike[str] | str],
        on_change: Callable[[], None],
        *,
        debounce: float = 0.1,
        poll: float | None = None,
        debounce_ms: int | None = None,
        poll_s: float | None = None,
    ) -> None:
        if debounce_ms is not None:
            warnings.warn("Watcher(debounce_ms=N) is deprecated; pass debounce=N / 1000 "
                          "(seconds)", DeprecationWarning, stacklevel=2)
            debounce = debounce_ms / 1000
        if poll_s is not None:
            warnings.warn("Watcher(poll_s=S) is deprecated; pass poll=S", DeprecationWarning,
                          stacklevel=2)
            poll = poll_s
        if not paths:
            raise ValueError("'paths' must name at least one file to watch")
        if not 0 <= debounce <= MAX_DEBOUNCE_S:
            raise ValueError(f"'debounce' must be 0 to {MAX_DEBOUNCE_S:g} seconds, "
                             f"got {debounce!r}")
        if poll is not None and not poll > 0:
            raise ValueError(f"'poll' must be a positive number of seconds, got {poll!r}")
        poll_s = poll
        # Absolute, but not normalized: `..` after a symlink must be resolved
        # on disk (by _resolve), not cut away lexically.
        absolute = (os.path.join(os.getcwd(), os.fspath(p)) for p in paths)
        self._paths: tuple[str, ...] = tuple(dict.fromkeys(absolute))
        self._on_change = on_change
        self._debounce_s = debounce
        self._max_delay_s = self._debounce_s * MAX_DELAY_DEBOUNCES
        self._poll_s = poll_s
        self._mode = "poll" if poll_s is not None else _native_mode()
        self._no_native = self._mode == "poll" and poll_s is None
        if self._no_native:
            self._poll_s = FALLBACK_POLL_S

        # Guards everything below that more than one thread touches.
        self._cond = threading.Condition()
        self._started = False
        self._stopping = False
        self._pending = False
        self._first_event = 0.0
        self._last_event = 0.0
        self._relevant: frozenset[str] = frozenset()
        # Directories reported deleted: a watch on one is dead (inotify drops
        # it), even if a new directory of the same name is there by now.
        self._vanished: set[str] = set()
        self._threads: list[threading.Thread] = []
        # Only one stop() does the teardown; see stop().
        self._stop_lock = threading.Lock()

        # Touched by start(), stop() and the dispatch thread, never at once.
        self._observer: BaseObserver | None = None
        self._handler = _Handler(self)
        self._watches: dict[str, ObservedWatch] = {}
        # The fingerprint of the last callback (or of start()); None forces the
        # next settled comparison to call back (see _check()).
        self._reported: Fingerprint | None = None
        # What health() reports: "ok", "polling" after a fallback (it works,
        # but later), "failing" while checks raise. Set by whichever thread
        # meets the failure; each assignment is one tuple, read whole.
        self._health: tuple[str, str | None, int] = ("ok", None, time.time_ns())
        # The state to return to once checks pass again.
        self._steady: tuple[str, str | None] = ("ok", None)

    @property
    def paths(self) -> tuple[str, ...]:
        """The watched paths, absolute, as given (symlinks not resolved)."""
        return self._paths

    @property
    def mode(self) -> str:
        """``"inotify"`` (``"native"`` for watchdog's other backends) or ``"poll"``.

        It turns to ``"poll"`` when the native observer fails and the watcher
        falls back to polling.
        """
        return self._mode

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Arm the watches and start the threads; changes after this returns are noticed.

        Raises:
            RuntimeError: when called twice, or after :meth:`stop`.
        """
        with self._cond:
            if self._started or self._stopping:
                raise RuntimeError("a Watcher starts once; construct a new one to watch again")
            self._started = True
        if self._mode == "poll":
            if self._no_native:
                log.info("no native file watching on this platform; polling every %gs",
                         FALLBACK_POLL_S)
            self._rearm()
        else:
            try:
                self._start_observer()
            except OSError as exc:
                self._fall_back_to_polling(exc)
                self._rearm()
            except BaseException:
                self._stop_observer()
                raise
        # Taken after arming: a change between the two is already in the
        # baseline (and its event finds nothing new), one after it is reported.
        self._reported = _fingerprint(self._paths)
        if self._mode == "poll":
            self._spawn(self._run_poll, "poll")
        self._spawn(self._run_dispatch, "dispatch")
        log.debug("watching %s (%s)", ", ".join(self._paths), self._mode)

    def stop(self) -> None:
        """Stop watching and join the threads. Idempotent.

        After this returns ``on_change`` is never called again. A callback
        in progress on another thread is waited for; called from inside
        ``on_change`` itself, the callback's own thread ends after it returns.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        current = threading.current_thread()
        own = current in self._threads
        # From on_change while another stop() waits for this very thread:
        # blocking here would deadlock, and that stop() finishes the job.
        if not self._stop_lock.acquire(blocking=not own):
            return
        try:
            with self._cond:
                threads = list(self._threads)
            for thread in threads:
                if thread is not current:
                    thread.join()
            # Only now: the dispatch thread may have been moving watches.
            self._stop_observer()
            with self._cond:
                self._threads = [t for t in self._threads if t is current]
        finally:
            self._stop_lock.release()

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], role: str) -> None:
        thread = threading.Thread(target=target, name=f"shmconf-watch-{role}", daemon=True)
        with self._cond:
            if self._stopping:
                return
            self._threads.append(thread)
        thread.start()

    # -- native watching -----------------------------------------------------------

    def _start_observer(self) -> None:
        observer = Observer()
        self._observer = observer
        observer.name = "shmconf-watch-observer"
        observer.daemon = True
        # Started before any watch: scheduling on a live observer arms each
        # inotify watch before schedule() returns.
        observer.start()
        self._rearm()

    def _rearm(self) -> None:
        """Move the watches to where the paths lead now (polling: only re-plan).

        Raises:
            OSError: a watch cannot be added for a reason other than its
                directory vanishing (inotify limits, permissions).
        """
        for attempt in range(_REARM_ATTEMPTS):
            wanted, relevant = _watch_plan(self._paths)
            # Published before the new watches exist, so that their first
            # events are not dropped as irrelevant.
            with self._cond:
                self._relevant = relevant
            observer = self._observer
            if observer is None:  # polling: the plan only decides which events count
                return
            with self._cond:
                vanished, self._vanished = self._vanished, set()
            for directory in sorted(vanished & self._watches.keys()):
                observer.unschedule(self._watches.pop(directory))
            try:
                for directory in sorted(wanted - self._watches.keys()):
                    self._watches[directory] = observer.schedule(
                        self._handler, directory, recursive=False
                    )
            except (FileNotFoundError, NotADirectoryError):
                # Removed since _watch_plan() looked: plan again from what is there now.
                log.debug("watched directory vanished while arming (attempt %d)", attempt + 1)
                continue
            for directory in sorted(self._watches.keys() - wanted):
                observer.unschedule(self._watches.pop(directory))
            return
        raise FileNotFoundError(f"the directories of {', '.join(self._paths)} keep vanishing")

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._watches = {}
        if observer is None:
            return
        observer.stop()  # also closes the inotify descriptor of a never-started observer
        if observer.is_alive():
            observer.join()

    def health(self) -> dict[str, Any]:
        """The watcher's state for ``status``: ``ok``, ``polling`` (fell back) or ``failing``.

        With the last error and since when (``since_ns``, nanoseconds since
        the epoch), in the form a source's health has.
        """
        state, error, since_ns = self._health
        return {"source": f"file watcher ({self._mode})", "state": state, "error": error,
                "since_ns": since_ns}

    def _set_health(self, state: str, error: str | None) -> None:
        old_state, old_error, since_ns = self._health
        if (state, error) != (old_state, old_error):
            self._health = (state, error, since_ns if state == old_state else time.time_ns())

    def _fall_back_to_polling(self, exc: OSError) -> None:
        self._steady = ("polling", f"cannot watch natively: {exc}")
        self._set_health(*self._steady)
        self._stop_observer()
        self._poll_s = FALLBACK_POLL_S
        self._mode = "poll"
        log.warning(
            "cannot watch %s natively (%s); polling every %gs instead. Raise "
            "fs.inotify.max_user_watches / max_user_instances (sysctl) to watch natively, "
            "or pass poll_s (--poll) to choose polling on purpose",
            ", ".join(self._paths), exc, FALLBACK_POLL_S,
        )

    def _on_event(self, event: FileSystemEvent) -> None:
        """Sort a watchdog event: noise is dropped, each path it names is noted."""
        kind = event.event_type
        if kind in _NOISE_EVENTS or (event.is_directory and kind in _DIRECTORY_ECHOES):
            return
        src_path = os.fsdecode(event.src_path)
        if event.is_directory and kind == "deleted":
            with self._cond:
                # Every watched directory is an entry of some path (hence relevant);
                # other directories need no note, and must not pile up here.
                if src_path in self._relevant:
                    self._vanished.add(src_path)
        self._notify(src_path)
        if event.dest_path:
            self._notify(os.fsdecode(event.dest_path))

    # -- polling ---------------------------------------------------------------------

    def _run_poll(self) -> None:
        """Compare the fingerprint every ``poll_s``; faster while a change settles."""
        poll_s = self._poll_s or FALLBACK_POLL_S
        settle_poll_s = max(min(poll_s, self._debounce_s / 2), _MIN_SETTLE_POLL_S)
        seen = self._reported if self._reported is not None else _fingerprint(self._paths)
        interval = poll_s
        settled_at = 0.0
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, timeout=interval):
                    return
            current = _fingerprint(self._paths)
            now = time.monotonic()
            if current != seen:
                seen = current
                self._notify()
                # Look again within the debounce, so that a slow writer keeps
                # postponing the callback as inotify events would.
                interval = settle_poll_s
                settled_at = now + self._debounce_s
            elif now >= settled_at:
                interval = poll_s

    # -- debounce and dispatch --------------------------------------------------------

    def _notify(self, path: str | None = None) -> None:
        """Note that something may have changed at ``path`` (``None``: anywhere).

        The one way in for every event source: the watchdog handler (one call
        per path an event names), the poller, and tests that script events.
        Each relevant call restarts the debounce.
        """
        with self._cond:
            if path is not None and path not in self._relevant:
                return
            now = time.monotonic()
            self._last_event = now
            if not self._pending:
                self._pending = True
                self._first_event = now
                # Later events need no wake-up: the dispatcher looks at
                # _last_event again when its wait ends.
                self._cond.notify_all()

    def _wait_settled(self) -> bool | None:
        """Block until a change settled (or must be looked at anyway).

        Returns:
            ``False`` when quiet for the debounce, ``True`` when events still
            come but the longest delay has passed, ``None`` when stopping.
        """
        with self._cond:
            while not self._stopping:
                if not self._pending:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                quiet_at = self._last_event + self._debounce_s
                if now >= quiet_at:
                    self._pending = False
                    return False
                latest = self._first_event + self._max_delay_s
                if now >= latest:
                    self._pending = False
                    return True
                self._cond.wait(min(quiet_at, latest) - now)
            return None

    def _run_dispatch(self) -> None:
        while True:
            busy = self._wait_settled()
            if busy is None:
                return
            try:
                self._check(busy=busy)
            except Exception as exc:  # the watcher must outlive any one bad check
                log.exception("checking %s for changes failed", ", ".join(self._paths))
                self._set_health("failing", f"checking for changes failed: {exc}")
            else:
                if self._health[0] == "failing":
                    self._set_health(*self._steady)

    def _check(self, *, busy: bool) -> None:
        """Re-arm, compare the fingerprint, and call back if it changed."""
        try:
            self._rearm()
        except OSError as exc:
            self._fall_back_to_polling(exc)
            self._rearm()
            self._spawn(self._run_poll, "poll")
        current = _fingerprint(self._paths)
        if current == self._reported:
            return
        # Taken while the file was still being written (busy), a fingerprint
        # may match a later write in the same mtime tick: do not trust it.
        self._reported = None if busy else current
        with self._cond:
            if self._stopping:
                return
        try:
            self._on_change()
        except Exception:  # a failing callback must not end the watching
            log.exception("on_change callback failed; watching goes on")
