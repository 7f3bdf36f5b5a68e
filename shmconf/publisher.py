"""The publisher: sources -> validate -> serialize -> segment, and keep it current.

One publisher per name per host. It holds the writer lock for its whole life
(a second one is refused, or waits as a standby), loads and merges its
sources, validates them with the model, and publishes the canonical JSON as
the next generation. Running as a service, it watches the sources and
publishes again when their merged content changes.

The service talks to the CLI through two small files in its state directory
(``shmconf._paths.state_dir``): it rewrites ``status.json`` after every
publish or rejection, and on SIGHUP it first looks for ``request.json`` (a
rollback asked for by ``shmconf rollback``) before reloading its sources.

**Last-known-good is enforced here**: a config that fails to load or to
validate is logged and counted, and nothing is published; the segment keeps
the last good generation, and the service keeps running and publishes as soon
as the sources are fixed. Only the initial config must be good: a service
whose first load fails raises (``shmconf publish`` exits 1).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import filelock
import orjson

from shmconf import _gc, _paths, _snapshot, segment
from shmconf import _layout as L
from shmconf._errors import (
    ConfigTooLargeError,
    ConfigValidationError,
    PublisherRunningError,
    ShmconfError,
    SourceError,
    validation_problems,
)
from shmconf.history import History, Pin, Version, read_private, write_private
from shmconf.writer import Writer

if TYPE_CHECKING:
    from shmconf.sources import LoadedConfig, Source
    from shmconf.watch import Watcher

log = logging.getLogger("shmconf.publisher")

#: Largest serialized config accepted by default (``max_bytes``): far above
#: any sane config, far below what would strain /dev/shm.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: Seconds between heartbeats; ``status`` calls a publisher dead after a few missed.
HEARTBEAT_S: Final = 1.0
#: In the state directory: the service's view of itself, rewritten on every change.
STATUS_FILE: Final = "status.json"
#: In the state directory: a request from the CLI, carried out on the next SIGHUP.
REQUEST_FILE: Final = "request.json"

SourceSpec = "str | os.PathLike[str] | Source"


@dataclass
class PublisherStats:
    """Counters for metrics and ``status``; updated by the publishing thread only."""

    publishes: int = 0
    unchanged: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    last_publish_ns: int = 0
    last_duration_s: float = 0.0
    last_error: str | None = None
    durations_s: list[float] = field(default_factory=list)

    def record_publish(self, seconds: float) -> None:
        self.publishes += 1
        self.last_publish_ns = time.time_ns()
        self.last_duration_s = seconds
        self.durations_s.append(seconds)
        del self.durations_s[:-1000]  # a bounded window for the histogram
        self.last_error = None


def _rejection_reason(exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return "source"
    if isinstance(exc, ConfigValidationError):
        return "validation"
    if isinstance(exc, ConfigTooLargeError):
        return "size"
    if isinstance(exc, OSError):
        return "io"
    return "error"


def _resolve_gid(group: int | str | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {group!r}") from None


class Publisher:
    """Publishes one named config and, as a service, keeps it current.

    Constructing a publisher takes the writer lock of ``name`` (a second
    publisher for the name raises :class:`PublisherRunningError`, or waits
    when ``standby`` is true) and opens the segment, continuing its
    generation count. Nothing is published until :meth:`publish`,
    :meth:`publish_now`, :meth:`start` or :meth:`serve_forever`.

    Args:
        name: the config's name; workers ``attach(name)``.
        sources: files (``.json``, ``.yaml``/``.yml``, ``.toml``, ``.env``) or
            source URLs, merged in order (later wins).
        model: a pydantic model class that every version must validate against.
        debounce: seconds of quiet after a file change before reloading.
        poll: poll the files every this many seconds instead of using inotify.
        history: how many published versions to keep for ``history``/``rollback``.
        env_prefix: apply ``{PREFIX}A__B=value`` environment overrides (off when None).
        group: a group whose members may attach (segments become 0660/0640).
        max_bytes: largest serialized config accepted.
        runtime_dir: where the lock and the state live (see ``shmconf._paths``).
        standby: wait for the writer lock instead of failing.
        standby_timeout: seconds a standby waits (None: forever).
        start_without_source: when a source cannot be read at start (etcd is
            down), serve the last good version (the segment's, or the
            history's newest) instead of failing, and publish once it is back.
    """

    _writer: Writer | None = None
    _lock: filelock.BaseFileLock | None = None

    def __init__(
        self,
        name: str,
        sources: Sequence[str | os.PathLike[str] | Source] = (),
        model: type[Any] | None = None,
        *,
        debounce: float = 0.1,
        poll: float | None = None,
        history: int = 20,
        env_prefix: str | None = None,
        group: int | str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        runtime_dir: str | os.PathLike[str] | None = None,
        standby: bool = False,
        standby_timeout: float | None = None,
        slot_capacity: int = L.DEFAULT_SLOT_CAPACITY,
        start_without_source: bool = False,
    ) -> None:
        self.name = segment.validate_name(name)
        if model is not None and not hasattr(model, "model_validate"):
            raise TypeError(f"model must be a pydantic model class, got {model!r}")
        if debounce < 0:
            raise ValueError(f"'debounce' must be >= 0 seconds, got {debounce}")
        self.model = model
        self.debounce = debounce
        self.poll = poll
        self.env_prefix = env_prefix
        self.max_bytes = max_bytes
        self.start_without_source = start_without_source
        self._sources = self._open_sources(sources)
        gid = _resolve_gid(group)
        mode = 0o600 if gid is None else 0o660
        self.stats = PublisherStats()
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._source_watches: list[Callable[[], None]] = []
        self._on_publish: list[Callable[[int, Mapping[str, Any]], object]] = []

        self._runtime_dir = runtime_dir
        self._reloads = 0
        self._last_request: dict[str, Any] | None = None
        self.lock_file = _paths.lock_path(name, runtime_dir)
        self._lock = filelock.FileLock(self.lock_file, mode=mode, thread_local=False)
        self._acquire(standby, standby_timeout)
        try:
            self.state_dir = _paths.state_dir(name, runtime_dir)
            self.history = History(self.state_dir / "history", keep=history)
            self._writer = Writer(
                name, mode=mode, gid=gid, min_generation=self.history.last_generation(),
                slot_capacity=slot_capacity,
            )
            self._data, self._digest = self._published_content()
        except BaseException:
            self.close()
            raise

    def _open_sources(self, specs: Sequence[Any]) -> list[Source]:
        if not specs:
            return []
        from shmconf.sources import Source, open_source

        return [s if isinstance(s, Source) else open_source(s) for s in specs]

    def _acquire(self, standby: bool, standby_timeout: float | None) -> None:
        assert self._lock is not None
        try:
            if standby:
                log.info("config %r: standing by for the writer lock %s", self.name, self.lock_file)
                self._lock.acquire(timeout=-1 if standby_timeout is None else standby_timeout)
                log.info("config %r: took over as publisher", self.name)
            else:
                self._lock.acquire(timeout=0)
        except filelock.Timeout:
            self._lock = None
            raise PublisherRunningError(
                self.name, str(self.lock_file), _publisher_pid(self.name)
            ) from None
        # A killed writer leaves its lock file, but not the lock: flock dies with
        # the process, so holding it means we are the only writer now.

    def _published_content(self) -> tuple[dict[str, Any], str | None]:
        current = self.writer.current()
        if current is None:
            return {}, None
        meta_raw, payload = current
        try:
            meta = orjson.loads(meta_raw)
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {}, None
        return data, meta.get("digest")

    # -- state -----------------------------------------------------------------

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise ValueError(f"publisher of {self.name!r} is closed")
        return self._writer

    @property
    def generation(self) -> int:
        """The published generation (0 before the first publish)."""
        return self.writer.generation

    @property
    def sources(self) -> list[Source]:
        return list(self._sources)

    @property
    def digest(self) -> str | None:
        """Digest of the published config, ``None`` before the first publish."""
        return self._digest

    def on_publish(self, callback: Callable[[int, Mapping[str, Any]], object]) -> None:
        """Call ``callback(generation, meta)`` after every publish (metrics, tests)."""
        self._on_publish.append(callback)

    # -- publishing --------------------------------------------------------------

    def load(self) -> LoadedConfig:
        """Load and merge the sources now (nothing is validated or published)."""
        from shmconf.sources import load_sources

        return load_sources(self._sources, env_prefix=self.env_prefix)

    def validate(
        self,
        data: Mapping[str, Any],
        origin_of: Callable[[Sequence[Any]], str | None] | None = None,
    ) -> Any:
        """Validate ``data`` with the model; returns the model instance (or None).

        Raises :class:`ConfigValidationError` with one line per problem: the
        field path, the message and, when known, the source that set it.
        """
        if self.model is None:
            return None
        try:
            with _gc.paused():
                return self.model.model_validate(data)
        except ValueError as exc:
            raise ConfigValidationError(self.name, validation_problems(exc, origin_of)) from None

    def publish(self, mapping: Mapping[str, Any]) -> int:
        """Validate and publish ``mapping``; returns the published generation.

        Content identical to what is published publishes nothing and returns
        the current generation. On any error nothing is published.
        """
        instance = self.validate(mapping)
        return self._publish(mapping, instance, origin="publish", source_names=())

    def publish_now(self) -> int:
        """Load the sources, validate and publish; returns the generation.

        While a rollback is pinned (see :class:`~shmconf.history.Pin`), sources
        that still hold what they held at the rollback publish nothing.
        """
        loaded = self.load()
        instance = self.validate(loaded.data, loaded.origin_of)
        pin = self.history.pin()
        if pin is not None:
            sources_digest = _snapshot.digest(_snapshot.canonical(loaded.data))
            if sources_digest == pin.sources_digest:
                log.info("config %r: rollback to generation %d is pinned; sources unchanged",
                         self.name, pin.generation)
                return self.generation
            self.history.set_pin(None)
            log.info("config %r: sources changed; rollback pin released", self.name)
        return self._publish(
            loaded.data, instance, origin="sources", source_names=tuple(loaded.sources),
            revisions=loaded.revisions,
        )

    def rollback(self, to: int | None = None) -> int:
        """Publish a kept version again, as a new generation, and pin it.

        ``to`` defaults to the version before the published one. The pin
        keeps the running service from overwriting the rollback until its
        sources change (see :class:`~shmconf.history.Pin`).
        """
        versions = self.history.versions()
        current = self.generation
        if to is None:
            older = [v for v in versions if v.generation < current and v.digest != self._digest]
            if not older:
                raise ShmconfError(
                    f"config {self.name!r}: no earlier version is kept to roll back to"
                )
            target = older[-1]
        else:
            found = self.history.get(to)
            if found is None:
                kept = ", ".join(str(v.generation) for v in versions) or "none"
                raise ShmconfError(
                    f"config {self.name!r}: generation {to} is not in the history (kept: {kept})"
                )
            target = found
        instance = self.validate(target.data)
        generation = self._publish(
            target.data, instance, origin="rollback", source_names=target.sources, force=True
        )
        sources_digest = ""
        if self._sources:
            with contextlib.suppress(ShmconfError):
                sources_digest = _snapshot.digest(_snapshot.canonical(self.load().data))
        self.history.set_pin(Pin(generation, sources_digest))
        log.info("config %r: rolled back to the content of generation %d as generation %d",
                 self.name, target.generation, generation)
        return generation

    def _publish(
        self,
        data: Mapping[str, Any],
        instance: Any,
        *,
        origin: str,
        source_names: Sequence[str],
        force: bool = False,
        revisions: Mapping[str, int] | None = None,
    ) -> int:
        started = time.perf_counter()
        try:
            payload = _snapshot.canonical(data)
        except TypeError as exc:
            raise ConfigValidationError(self.name, [_unserializable(data, exc)]) from None
        if len(payload) > self.max_bytes:
            raise ConfigTooLargeError(self.name, len(payload), self.max_bytes)
        digest = _snapshot.digest(payload)
        if digest == self._digest and not force:
            self.stats.unchanged += 1
            log.debug("config %r: content unchanged (digest %s)", self.name, digest[:12])
            return self.generation
        changed = _snapshot.changed_paths(self._data, data)
        meta: dict[str, Any] = {
            "digest": digest,
            "size": len(payload),
            "changed": changed,
            "sources": list(source_names),
            "secrets": _snapshot.secret_paths(instance) if instance is not None else [],
            "origin": origin,
            "revisions": dict(revisions or {}),
            "model": f"{self.model.__module__}.{self.model.__qualname__}" if self.model else None,
        }
        now = time.time_ns()
        generation = self.writer.publish(payload, orjson.dumps(meta), now)
        self._data, self._digest = dict(data), digest
        elapsed = time.perf_counter() - started
        self.stats.record_publish(elapsed)
        try:
            self.history.record(Version(
                generation, now, digest, tuple(source_names), tuple(changed), origin,
                tuple(meta["secrets"]), data,
            ))
        except OSError as exc:
            # The config is live; only rollback to it is lost. Say so, keep serving.
            log.error("config %r: generation %d published but not kept in history: %s",
                      self.name, generation, exc)
        log.info(
            "config %r: published generation %d (digest %s, %.2f ms; changed: %s)",
            self.name, generation, digest[:12], elapsed * 1e3, ", ".join(changed) or "nothing",
        )
        for callback in self._on_publish:
            try:
                callback(generation, meta)
            except Exception:
                log.exception("config %r: on_publish callback failed", self.name)
        return generation

    def reload(self) -> int | None:
        """Reload from the sources, keeping the last good config on failure.

        Returns the published generation, or ``None`` when the sources were
        rejected (the reason is logged and counted in ``stats``).
        """
        self._reloads += 1
        try:
            return self.publish_now()
        except (ShmconfError, OSError) as exc:
            reason = _rejection_reason(exc)
            self.stats.rejections[reason] += 1
            self.stats.last_error = str(exc)
            log.error("config %r: rejected: %s; still serving generation %d",
                      self.name, exc, self.generation)
            return None
        finally:
            self.write_status()

    def handle_request(self) -> bool:
        """Carry out a request the CLI left in ``request.json``; ``False`` if none.

        The request is removed before it runs, so a crash cannot repeat it.
        Its outcome goes into ``status.json`` under ``last_request``.
        """
        path = self.state_dir / REQUEST_FILE
        try:
            raw = read_private(path)
            path.unlink()
        except FileNotFoundError:
            return False
        outcome: dict[str, Any] = {"id": None, "ok": False, "generation": None, "error": None}
        try:
            request = orjson.loads(raw)
            outcome["id"] = request.get("id")
            if request.get("action") != "rollback":
                raise ShmconfError(f"unknown request {request.get('action')!r}")
            outcome["generation"] = self.rollback(request.get("to"))
            outcome["ok"] = True
        except (ShmconfError, OSError, ValueError, AttributeError) as exc:
            outcome["error"] = str(exc)
            log.error("config %r: request failed: %s", self.name, exc)
        self._last_request = outcome
        self.write_status()
        return True

    def status(self) -> dict[str, Any]:
        """What ``status.json`` holds: the service's own view, for the CLI and metrics."""
        return {
            "pid": os.getpid(),
            "generation": self.generation,
            "digest": self._digest,
            "sources": [s.name for s in self._sources],
            "reloads": self._reloads,
            "publishes": self.stats.publishes,
            "rejections": dict(self.stats.rejections),
            "last_error": self.stats.last_error,
            "last_publish_ns": self.stats.last_publish_ns,
            "last_request": self._last_request,
            "source_health": [h for s in self._sources if (h := s.health()) is not None],
            "updated_ns": time.time_ns(),
        }

    def write_status(self) -> None:
        """Rewrite ``status.json``; a failure is logged, never fatal."""
        try:
            write_private(self.state_dir / STATUS_FILE, orjson.dumps(self.status()))
        except OSError as exc:
            log.warning("config %r: cannot write %s: %s", self.name, STATUS_FILE, exc)

    # -- service -----------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask the service loop to reload soon. Safe from signal handlers and threads."""
        self._events.put("reload")

    def _watch_paths(self) -> list[Path]:
        return [p for s in self._sources for p in s.watch_paths()]

    def _begin(self) -> None:
        """Arm the watcher, then publish the initial config (which must be good)."""
        paths = self._watch_paths()
        if paths:
            from shmconf.watch import Watcher

            self._watcher = Watcher(
                paths, self.request_reload, debounce_ms=int(self.debounce * 1000),
                poll_s=self.poll,
            )
            self._watcher.start()
        try:
            self._publish_initial()
        except BaseException:
            self._end()
            raise
        # Watches of other sources resume from the revision just read, so
        # starting them after the initial publish misses nothing.
        for source in self._sources:
            stop = source.start_watch(self.request_reload)
            if stop is not None:
                self._source_watches.append(stop)
        self.write_status()

    def _publish_initial(self) -> None:
        try:
            self.publish_now()
        except SourceError as exc:
            if not self.start_without_source:
                raise
            if self._digest is not None:
                log.warning("config %r: %s; serving generation %d until the source is back",
                            self.name, exc, self.generation)
            else:
                versions = self.history.versions()
                if not versions:
                    raise SourceError(
                        exc.source, f"{exc.reason}; and no last good version is kept to "
                        "start without it", exc.line, exc.column,
                    ) from None
                last = versions[-1]
                self._publish(last.data, self.validate(last.data), origin="history",
                              source_names=last.sources)
                log.warning("config %r: %s; serving the last good version from history "
                            "until the source is back", self.name, exc)
            self.stats.rejections["source"] += 1
            self.stats.last_error = str(exc)

    def _loop(self) -> None:
        """Dispatch queued events until "stop"; heartbeat whenever idle."""
        writer = self.writer
        while True:
            try:
                event = self._events.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                writer.heartbeat()
                continue
            if event == "stop":
                return
            if event == "reload":
                event = self._coalesce_reloads()
                if event == "stop":
                    return
            # A SIGHUP carries out a pending CLI request if there is one, else reloads.
            if event == "reload" or (event == "hup" and not self.handle_request()):
                self.reload()
            writer.heartbeat()

    def _coalesce_reloads(self) -> str:
        """Drop reloads queued behind this one: one reload reads every change.

        A burst of watch responses (etcd) or a SIGHUP storm then costs one
        reload. A queued "stop" or "hup" is kept and wins.
        """
        event = "reload"
        while True:
            try:
                queued = self._events.get_nowait()
            except queue.Empty:
                return event
            if queued == "stop":
                return "stop"
            if queued == "hup":
                event = "hup"

    def _end(self) -> None:
        while self._source_watches:
            self._source_watches.pop()()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def serve_forever(self) -> None:
        """Publish, then watch the sources until SIGTERM or SIGINT; SIGHUP reloads now.

        Must run in the main thread (it installs signal handlers, restored on
        return). Raises if the initial config cannot be published.
        """
        handlers = {
            signal.SIGTERM: self._handle_stop,
            signal.SIGINT: self._handle_stop,
            signal.SIGHUP: self._handle_hup,
        }
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            self._begin()
            try:
                self._loop()
            finally:
                self._end()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only enqueue. SimpleQueue.put is reentrant-safe."""
        self._events.put("stop")

    def _handle_hup(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only enqueue (a pending CLI request, else a reload)."""
        self._events.put("hup")

    def start(self) -> None:
        """Publish, then watch the sources on a background thread until :meth:`stop`.

        Raises here, in the caller, if the initial config cannot be published.
        """
        if self._thread is not None:
            raise RuntimeError(f"publisher of {self.name!r} is already running")
        self._begin()
        self._thread = threading.Thread(
            target=self._run_thread, name=f"shmconf-publisher-{self.name}", daemon=True
        )
        self._thread.start()

    def _run_thread(self) -> None:
        try:
            self._loop()
        finally:
            self._end()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background service started by :meth:`start`; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._events.put("stop")
        thread.join(timeout)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop publishing and release the writer lock. The segment stays.

        Readers keep serving the last generation; a new publisher continues it.
        """
        self.stop()
        if self._writer is not None:
            if self._writer.never_published:
                # Never published (a first start whose config was rejected):
                # leave no empty segment behind for readers to wait on.
                self._writer.unlink()
            self._writer.close()
            self._writer = None
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None

    def unlink(self) -> None:
        """Remove the segments and the lock file, then close.

        Attached readers keep their last snapshot. The history stays in the
        state directory, so a later publisher still continues the count.
        """
        self.stop()
        if self._writer is not None:
            self._writer.unlink()
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.lock_file.unlink()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._writer is None else f"generation {self.generation}"
        return f"<shmconf.Publisher {self.name!r} {state}>"


def _publisher_pid(name: str) -> int | None:
    """The pid an existing anchor names as its publisher, if it can be read."""
    try:
        anchor = segment.open_anchor(name, writable=False)
    except (OSError, segment.AnchorNotReady):
        return None
    try:
        return int(anchor.words[L.A_PUBLISHER_PID]) or None
    finally:
        anchor.close()


def _unserializable(data: Mapping[str, Any], exc: TypeError) -> str:
    """Where in ``data`` the value orjson refused is, and why (error path only)."""
    from shmconf.sources.base import InvalidData, dotted, normalize

    try:
        normalize(dict(data))
    except InvalidData as bad:
        return f"{dotted(bad.path)}: not JSON-serializable: {bad.reason}"
    return f"(root): not JSON-serializable: {exc}"
