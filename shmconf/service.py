"""The publisher's loop: signals, watching, control requests, heartbeat, status file.

A :class:`Service` drives one :class:`~shmconf.publisher.Publisher` as
gunicorn's ``Arbiter`` drives its workers: the publisher knows how to load,
validate, publish and roll back; the service decides when. It

* publishes the initial config (which must be good, unless the publisher was
  made with ``start_without_source``),
* watches the sources (files through :mod:`shmconf.watch`, other sources
  through their own watches) and reloads when they change,
* dispatches signals: SIGTERM and SIGINT stop, SIGHUP carries out a pending
  CLI request (``request.json``) or reloads,
* heartbeats into the anchor whenever idle, and
* rewrites ``status.json`` after every reload, request and start, and
  whenever the health of a source or of the file watcher changed (checked
  with every heartbeat), for the CLI and the metrics (see
  :mod:`shmconf.protocol.control`). A source that fails between reloads (etcd
  down, its watch retrying) shows within a heartbeat, not at the next reload.

Signal handlers only enqueue; the loop dispatches by event name. The service
drives the publisher and never the reverse: ``Publisher.serve_forever()``,
``start()`` and ``stop()`` are thin delegations to a service.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import orjson

from shmconf.errors import ShmconfError, SourceError
from shmconf.protocol import control

if TYPE_CHECKING:
    from shmconf.publisher import Publisher
    from shmconf.watch import Watcher

log = logging.getLogger("shmconf.service")

#: Seconds between heartbeats; ``status`` calls a publisher dead after a few missed.
HEARTBEAT_S: Final = 1.0
#: While a rollout runs, how often it is judged (the canaries' health counts
#: arrive every ``adoption.ROLLOUT_FLUSH_S``).
ROLLOUT_TICK_S: Final = 0.1


class Service:
    """Keeps ``publisher``'s config current until stopped.

    Args:
        publisher: the publisher to drive; it must stay open while the
            service runs.
    """

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._source_watches: list[Callable[[], None]] = []
        #: Reloads asked for (by a watch, SIGHUP or ``request_reload``).
        self.reloads = 0
        #: The outcome of the last CLI request, as ``status.json`` reports it.
        self.last_request: dict[str, Any] | None = None
        #: The health last written to ``status.json``.
        self._written_health: list[dict[str, Any]] | None = None
        self._heartbeat_due = 0.0
        self._status_due = 0.0

    @property
    def running(self) -> bool:
        """Started with :meth:`start` and not stopped yet."""
        return self._thread is not None

    # -- what one event does -------------------------------------------------------

    def request_reload(self) -> None:
        """Ask the loop to reload soon. Safe from signal handlers and threads."""
        self._events.put("reload")

    def reload(self) -> int | None:
        """Reload now, keeping the last good config on failure; see ``Publisher.reload``."""
        self.reloads += 1
        try:
            return self.publisher.reload()
        finally:
            self.write_status()

    def handle_request(self) -> bool:
        """Carry out a request the CLI left in ``request.json``; ``False`` if none.

        Its outcome goes into ``status.json`` under ``last_request``.
        """
        raw = control.take_request(self.publisher.state_dir)
        if raw is None:
            return False
        outcome: dict[str, Any] = {"id": None, "ok": False, "generation": None, "error": None}
        try:
            request = orjson.loads(raw)
            outcome["id"] = request.get("id")
            action = request.get("action")
            running = self.publisher.rollout
            if action == "rollout" and request.get("candidate") not in (
                    None, running.candidate if running is not None else None):
                # A newer change replaced the candidate the person decided about.
                now = f"now {running.candidate}" if running is not None else "none runs now"
                raise ShmconfError(f"generation {request['candidate']} is no longer the "
                                   f"candidate ({now}): look again with `shmconf status`, "
                                   "then decide")
            if action == "rollback":
                outcome["generation"] = self.publisher.rollback(request.get("to"))
            elif action == "rollout" and request.get("decision") == "promote":
                outcome["generation"] = self.publisher.promote()
            elif action == "rollout" and request.get("decision") == "abort":
                outcome["generation"] = self.publisher.abort_rollout()
            else:
                raise ShmconfError(f"unknown request {action!r}")
            outcome["ok"] = True
        except (ShmconfError, OSError, ValueError, AttributeError) as exc:
            outcome["error"] = str(exc)
            log.error("config %r: request failed: %s", self.publisher.name, exc)
        self.last_request = outcome
        self.write_status()
        return True

    def status(self) -> dict[str, Any]:
        """What ``status.json`` holds: the service's own view, for the CLI and metrics."""
        publisher = self.publisher
        stats = publisher.stats
        return {
            "pid": os.getpid(),
            "generation": publisher.generation,
            "digest": publisher.digest,
            "sources": [s.name for s in publisher.sources],
            "reloads": self.reloads,
            "publishes": stats.publishes,
            "rejections": dict(stats.rejections),
            "last_error": stats.last_error,
            "last_publish_ns": stats.last_publish_ns,
            "last_request": self.last_request,
            "source_health": self.health(),
            "rollout": None if publisher.rollout is None else publisher.rollout.to_json(),
            "last_rollout": publisher.last_rollout,
            "rollout_policy": (None if publisher.rollout_policy is None
                               else publisher.rollout_policy.to_json()),
            "updated_ns": time.time_ns(),
        }

    def health(self) -> list[dict[str, Any]]:
        """Each non-file source's health, then the file watcher's (when files are watched)."""
        found = [h for s in self.publisher.sources if (h := s.health()) is not None]
        watcher = self._watcher
        if watcher is not None:
            found.append(watcher.health())
        return found

    def write_status(self) -> None:
        """Rewrite ``status.json``; a failure is logged, never fatal."""
        try:
            status = self.status()
            control.write_status(self.publisher.state_dir, status)
            self._written_health = status["source_health"]
        except OSError as exc:
            log.warning("config %r: cannot write %s: %s", self.publisher.name,
                        control.STATUS_FILE, exc)

    # -- the loop ----------------------------------------------------------------------

    def _begin(self) -> None:
        """Arm the watcher, then publish the initial config (which must be good)."""
        publisher = self.publisher
        publisher.wake_service = lambda: self._events.put("tick")
        if publisher.rollout_policy is not None:
            policy = publisher.rollout_policy
            log.info("config %r: changes roll out to %s canary worker(s) first, %s, each step "
                     "baked %gs, judged after %d canary requests", publisher.name,
                     policy.canary, " then ".join(map(str, policy.steps)) + " then all"
                     if policy.steps else "then all", policy.bake_s, policy.min_requests)
        paths = publisher.watch_paths()
        if paths:
            from shmconf.watch import Watcher

            self._watcher = Watcher(paths, self.request_reload, debounce=publisher.debounce,
                                    poll=publisher.poll)
            self._watcher.start()
        try:
            self._publish_initial()
        except BaseException:
            self._end()
            raise
        # Watches of other sources resume from the revision just read, so
        # starting them after the initial publish misses nothing.
        for source in publisher.sources:
            stop = source.start_watch(self.request_reload)
            if stop is not None:
                self._source_watches.append(stop)
        self.write_status()

    def _publish_initial(self) -> None:
        publisher = self.publisher
        try:
            publisher.publish_now()
        except SourceError as exc:
            if not publisher.start_without_source:
                raise
            publisher.serve_last_good(exc)

    def _tick(self) -> None:
        """The running rollout judged; the heartbeat, and ``status.json`` when news came."""
        now = time.monotonic()
        if self.publisher.rollout is not None:
            try:
                action = self.publisher.rollout_tick()
            except (ShmconfError, OSError) as exc:
                action = None
                log.error("config %r: rollout: %s", self.publisher.name, exc)
            # Decisions at once; the counts and the time left once a second.
            if action not in (None, "wait") or now >= self._status_due:
                self._status_due = now + HEARTBEAT_S
                self.write_status()
        if now < self._heartbeat_due:
            return
        self._heartbeat_due = now + HEARTBEAT_S
        self.publisher.heartbeat()
        # Compared whole: a new error, failure count or retry time is news too,
        # while a steady state costs one comparison and no write.
        if self.health() != self._written_health:
            self.write_status()

    def _loop(self) -> None:
        """Dispatch queued events until "stop"; heartbeat whenever idle."""
        while True:
            timeout = HEARTBEAT_S if self.publisher.rollout is None else ROLLOUT_TICK_S
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                self._tick()
                continue
            if event == "stop":
                return
            if event == "tick":  # a candidate published from another thread
                self._tick()
                continue
            if event == "reload":
                event = self._coalesce_reloads()
                if event == "stop":
                    return
            # A SIGHUP carries out a pending CLI request if there is one, else reloads.
            if event == "reload" or (event == "hup" and not self.handle_request()):
                self.reload()
            self._tick()

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
        self.publisher.wake_service = None
        while self._source_watches:
            self._source_watches.pop()()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    # -- running it --------------------------------------------------------------------

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
            raise RuntimeError(f"publisher of {self.publisher.name!r} is already running")
        self._begin()
        self._thread = threading.Thread(
            target=self._run_thread, name=f"shmconf-publisher-{self.publisher.name}",
            daemon=True,
        )
        self._thread.start()

    def _run_thread(self) -> None:
        try:
            self._loop()
        finally:
            self._end()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background loop started by :meth:`start`; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._events.put("stop")
        thread.join(timeout)
