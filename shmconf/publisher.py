"""The publisher: sources -> validate -> serialize -> segment, and keep it current.

One publisher per name per host. It holds the writer lock for its whole life
(a second one is refused, or waits as a standby), loads and merges its
sources, validates them with the model, and publishes the canonical JSON as
the next generation; it keeps the history that ``rollback`` publishes from.
When to publish is the business of :mod:`shmconf.service`, the loop that
watches the sources, handles signals and CLI requests and heartbeats;
:meth:`Publisher.serve_forever`, :meth:`~Publisher.start` and
:meth:`~Publisher.stop` hand the publisher to such a loop.

**Last-known-good is enforced here**: a config that fails to load or to
validate is logged and counted, and nothing is published; the segment keeps
the last good generation, and the service keeps running and publishes as soon
as the sources are fixed (:meth:`Publisher.reload`). Only the initial config
must be good: a service whose first load fails raises (``shmconf publish``
exits 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import grp
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

import filelock
import orjson

from shmconf import _gc, _paths, content
from shmconf.errors import (
    AnchorNotReady,
    ConfigTooLargeError,
    ConfigValidationError,
    PublisherRunningError,
    ShmconfError,
    SourceError,
    validation_problems,
)
from shmconf.history import History, Pin, Version
from shmconf.model import (
    apply_environment,
    is_settings,
    published_data,
    round_trip_problems,
    snapshot_model,
)
from shmconf.model import validate as validate_snapshot
from shmconf.protocol import layout as L
from shmconf.protocol.anchor import open_anchor
from shmconf.protocol.layout import validate_name
from shmconf.rollout import Rollout, RolloutRun, Verdict
from shmconf.sources import LoadedConfig, Source, load_sources, open_source
from shmconf.sources.base import dotted
from shmconf.writer import Writer, unlink_name

if TYPE_CHECKING:
    from shmconf.service import Service

log = logging.getLogger("shmconf.publisher")

#: Largest serialized config accepted by default (``max_bytes``): far above
#: any sane config, far below what would strain /dev/shm.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: During a rollout, how often the whole reader table is read (the other
#: workers' health, the workers that may become canaries), in seconds.
_ROLLOUT_SCAN_S: Final = 1.0
#: Workers tried (each lock asked) for the canaries a tick adds, at most.
_CANARY_TRIES: Final = 64

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


def _one_writer(
    method: Callable[Concatenate[Publisher, _P], _R],
) -> Callable[Concatenate[Publisher, _P], _R]:
    """Run ``method`` holding the publisher's writing lock (``Publisher._writing``).

    ``publish()`` may come from the application's thread while the service
    judges the rollout and heartbeats on its own: one at a time. The lock is
    reentrant, so a locked method may call another.
    """
    @functools.wraps(method)
    def locked(publisher: Publisher, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with publisher._writing:
            return method(publisher, *args, **kwargs)

    return locked


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
        rollout: roll each change out to canary workers first and promote it
            or roll it back by their health (a :class:`~shmconf.Rollout`, or
            its keywords as a mapping); see docs/rollout.md. The first
            publish and a rollback go to every worker at once.
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
        rollout: Rollout | Mapping[str, Any] | None = None,
    ) -> None:
        self.name = validate_name(name)
        #: How changes roll out (None: to every worker at once).
        self.rollout_policy = Rollout.of(rollout)
        self._run: RolloutRun | None = None
        self._rollout_scan_due = 0.0
        #: How the last rollout ended, as ``status`` shows it.
        self.last_rollout: dict[str, Any] | None = None
        self._writing = threading.RLock()  # see _one_writer
        #: Set by a running service: asks its loop to judge the rollout now.
        self.wake_service: Callable[[], object] | None = None
        #: The class snapshots are validated with (see shmconf.model).
        self._snapshot_model = snapshot_model(model) if model is not None else None
        if model is not None and env_prefix and is_settings(model):
            raise ValueError(
                f"env_prefix (--env-prefix) is for models that are not BaseSettings; "
                f"{model.__name__} reads its own environment with its model_config "
                "(env_prefix, env_nested_delimiter): leave env_prefix out")
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
        self._service: Service | None = None
        self._reported_unmatched: tuple[str, ...] = ()
        self._on_publish: list[Callable[[int, Mapping[str, Any]], object]] = []
        self._runtime_dir = runtime_dir
        # What this publisher creates, so that a first start that never
        # publishes (its config was rejected) can leave nothing behind.
        state_path = _paths.runtime_path(runtime_dir) / name
        self._new_state = not state_path.exists()
        self._new_lock = not (_paths.runtime_path(runtime_dir) / f"{name}.lock").exists()
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
            if self._writer.resolved_rollout is not None:
                self._record_resolved_rollout(self._writer.resolved_rollout)
        except BaseException:
            self.close()
            raise

    def _record_resolved_rollout(self, resolved: tuple[int, str]) -> None:
        """Say in the history how this publisher ended its predecessor's rollout."""
        candidate, outcome = resolved
        promoted = outcome == "promoted"
        reason = ("the publisher stopped while promoting it" if promoted
                  else "the publisher stopped during its rollout")
        self.last_rollout = {"outcome": outcome, "candidate": candidate,
                             "generation": self.generation, "reason": reason,
                             "ended_ns": time.time_ns()}
        found = self.history.get(candidate)
        if found is not None:
            self._note_rollout(found, "promoted" if promoted else f"rolled back: {reason}")
        if self._digest is not None and not promoted:
            with contextlib.suppress(OSError):
                self.history.record(Version(
                    self.generation, time.time_ns(), self._digest, origin="rollout",
                    data=self._data, rollout=f"rollback of {candidate}: {reason}",
                    secrets=self._secrets_of(self._digest)))

    def _secrets_of(self, digest: str) -> tuple[str, ...]:
        """The secret paths the history keeps for the newest version with ``digest``."""
        for version in reversed(self.history.versions()):
            if version.digest == digest:
                return version.secrets
        return ()

    def _note_rollout(self, version: Version, note: str) -> None:
        with contextlib.suppress(OSError):
            self.history.record(dataclasses.replace(version, rollout=note))

    def _open_sources(self, specs: Sequence[Any]) -> list[Source]:
        if not specs:
            return []
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
        """What is published (the baseline of the next publish), and its digest.

        A segment made afresh (after ``unlink``) has nothing published, but the
        history still has the last version: its data is the baseline of the
        changed paths, with no digest, so that the same content is published
        again (readers need it) as a change of nothing.
        """
        current = self.writer.current()
        if current is None:
            last = self.history.get(self.history.last_generation())
            return (dict(last.data) if last is not None else {}), None
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
        """Load and merge the sources now (nothing is validated or published).

        Environment overrides that name no field of the model are logged as
        a warning (once for each set of them).
        """
        loaded = load_sources(self._sources, env_prefix=self.env_prefix, model=self.model)
        if loaded.unmatched and loaded.unmatched != self._reported_unmatched:
            log.warning("config %r: %s set%s no field of %s; ignored by the model",
                        self.name, ", ".join(loaded.unmatched),
                        "s" if len(loaded.unmatched) == 1 else "",
                        getattr(self.model, "__name__", "the model"))
        self._reported_unmatched = loaded.unmatched
        return loaded

    def validate(
        self,
        data: Mapping[str, Any],
        origin_of: Callable[[Sequence[Any]], str | None] | None = None,
        *,
        environment: bool = True,
    ) -> Any:
        """Validate ``data`` with the model; returns the model instance (or None).

        The instance is of the model's snapshot class (``shmconf.model``):
        frozen, equal to what every worker validates from the published data.
        A ``BaseSettings`` model applies its own environment, ``.env`` and
        secrets directory over ``data`` here, once (not for a version taken
        back from the history: ``environment=False``).

        Raises :class:`ConfigValidationError` with one line per problem: the
        field path, the message and, when known, the source that set it.
        """
        model = self._snapshot_model
        if model is None:
            return None
        try:
            with _gc.paused(), (apply_environment() if environment
                                else contextlib.nullcontext()):
                return validate_snapshot(model, data)
        except ValueError as exc:
            problems = validation_problems(exc, origin_of, [s.name for s in self._sources])
            raise ConfigValidationError(self.name, problems, self._model_name) from None

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
        if not self._sources and self._digest is not None:
            # Nothing to load: what publish() published stays (a start() or a
            # SIGHUP of a publisher without sources must not publish {}).
            return self.generation
        loaded = self.load()
        instance = self.validate(loaded.data, loaded.origin_of)
        pin = self.history.pin()
        if pin is not None:
            sources_digest = content.digest(content.canonical(loaded.data))
            pinned = self.history.get(pin.generation)
            if sources_digest == pin.sources_digest and pinned is not None:
                if self._digest is None:
                    # Nothing published (the segment was unlinked, or /dev/shm
                    # emptied): the pinned version is what must be served.
                    return self._publish(pinned.data,
                                         self.validate(pinned.data, environment=False),
                                         origin="rollback", source_names=pinned.sources)
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

        ``to`` defaults to the version before the published one; during a
        rollout, to the stable version (the candidate is rolled back, as
        :meth:`abort_rollout` does). The pin
        keeps the running service from overwriting the rollback until its
        sources change (see :class:`~shmconf.history.Pin`). Rolling back to a
        version whose content is already published and pinned publishes
        nothing, so a retry with the same ``to`` is harmless.
        """
        if to is None and self._run is not None:
            # The last change is the candidate: undo that, not the stable version.
            return self.abort_rollout("rolled back by a person (`shmconf rollback`)")
        if to is None:
            found = self.history.before(self.generation, self._digest)
            if found is None:
                raise ShmconfError(
                    f"config {self.name!r}: no earlier version is kept to roll back to"
                )
            target = found
        else:
            found = self.history.get(to)
            if found is None:
                kept = ", ".join(str(v.generation) for v in self.history.versions()) or "none"
                raise ShmconfError(
                    f"config {self.name!r}: generation {to} is not in the history (kept: {kept})"
                )
            target = found
        if target.digest == self._digest and self.history.pin() is not None:
            # Already in force (a retried `shmconf rollback --to N`): nothing to do.
            log.info("config %r: the content of generation %d is already published and "
                     "pinned", self.name, target.generation)
            return self.generation
        instance = self.validate(target.data, environment=False)
        generation = self._publish(
            target.data, instance, origin="rollback", source_names=target.sources, force=True
        )
        sources_digest = ""
        if self._sources:
            with contextlib.suppress(ShmconfError):
                sources_digest = content.digest(content.canonical(self.load().data))
        self.history.set_pin(Pin(generation, sources_digest))
        log.info("config %r: rolled back to the content of generation %d as generation %d",
                 self.name, target.generation, generation)
        return generation

    @_one_writer
    def _publish(
        self,
        data: Mapping[str, Any],
        instance: Any,
        *,
        origin: str,
        source_names: Sequence[str],
        force: bool = False,
        revisions: Mapping[str, int] | None = None,
        rollout_note: str = "",
    ) -> int:
        started = time.perf_counter()
        data, payload = self._serialize(data, instance)
        digest = content.digest(payload)
        run = self._run
        if not force and run is not None and digest == self._digest:
            # The sources went back to the stable version mid-rollout.
            return self.abort_rollout("the sources went back to the stable version")
        if not force and digest in (self._digest, run.digest if run else None):
            self.stats.unchanged += 1
            log.debug("config %r: content unchanged (digest %s)", self.name, digest[:12])
            return self.generation if run is None else run.candidate
        canary = (self.rollout_policy is not None and not force and self._digest is not None
                  and origin in ("sources", "publish"))
        changed = content.changed_paths(self._data, data)
        meta: dict[str, Any] = {
            "digest": digest,
            "size": len(payload),
            "changed": changed,
            "sources": list(source_names),
            "secrets": content.secret_paths(instance) if instance is not None else [],
            "origin": origin,
            "revisions": dict(revisions or {}),
            "model": f"{self.model.__module__}.{self.model.__qualname__}" if self.model else None,
        }
        cuts = content.sections(data, payload)  # for model-less readers of a large config
        if cuts is not None:
            meta["sections"] = cuts
        now = time.time_ns()
        if canary:
            generation = self._publish_candidate(payload, meta, now, digest, data)
        else:
            generation = self._publish_to_all(payload, meta, now, digest, data, origin=origin)
        elapsed = time.perf_counter() - started
        self.stats.record_publish(elapsed)
        try:
            self.history.record(Version(
                generation, now, digest, tuple(source_names), tuple(changed), origin,
                tuple(meta["secrets"]), data,
                rollout="candidate" if canary else rollout_note,
            ))
        except OSError as exc:
            # The config is live; only rollback to it is lost. Say so, keep serving.
            log.error("config %r: generation %d published but not kept in history: %s",
                      self.name, generation, exc)
        log.info(
            "config %r: published generation %d%s (digest %s, %.2f ms; changed: %s)",
            self.name, generation, " to canaries" if canary else "", digest[:12],
            elapsed * 1e3, ", ".join(changed) or "nothing",
        )
        for callback in self._on_publish:
            try:
                callback(generation, meta)
            except Exception:
                log.exception("config %r: on_publish callback failed", self.name)
        if canary:
            # Its canaries now (once it is in the history), not at the service's
            # next tick; from then on the service judges it every ROLLOUT_TICK_S.
            self.rollout_tick()
            if self.wake_service is not None:
                self.wake_service()
        return generation

    @property
    def _model_name(self) -> str | None:
        return getattr(self.model, "__name__", None)

    @_one_writer
    def heartbeat(self) -> None:
        """The writer's heartbeat (the service calls it every second)."""
        self.writer.heartbeat()

    # -- rollouts (docs/rollout.md) ---------------------------------------------------

    @property
    def rollout(self) -> RolloutRun | None:
        """The running rollout, if any."""
        return self._run

    def _serialize(self, data: Mapping[str, Any], instance: Any) -> tuple[Mapping[str, Any], bytes]:
        """The data to publish and its canonical JSON, checked (round trip, size)."""
        if instance is not None:
            # The validated data, defaults and environment included: what
            # every worker validates back into an equal instance.
            try:
                data = published_data(instance)
            except (ValueError, TypeError) as exc:  # bytes that are not UTF-8, say
                raise ConfigValidationError(
                    self.name, [f"(root): the validated config has no JSON form: "
                                f"{type(exc).__name__}"], self._model_name) from None
        try:
            payload = content.canonical(data)
        except TypeError as exc:
            raise ConfigValidationError(self.name, [_unserializable(data, exc)]) from None
        if instance is not None:
            assert self._snapshot_model is not None
            problems = round_trip_problems(self._snapshot_model, instance, data, payload)
            if problems:
                raise ConfigValidationError(self.name, problems, self._model_name)
        if len(payload) > self.max_bytes:
            raise ConfigTooLargeError(self.name, len(payload), self.max_bytes)
        return data, payload

    def _publish_to_all(
        self, payload: bytes, meta: dict[str, Any], now: int, digest: str,
        data: Mapping[str, Any], *, origin: str,
    ) -> int:
        """Publish a version to every worker; a running rollout ends with it."""
        generation = self.writer.publish(payload, orjson.dumps(meta), now)
        self._data, self._digest = dict(data), digest
        run, self._run = self._run, None
        if run is not None:  # a rollback, or a version from the history
            self._rollout_ended(run, "replaced", f"generation {generation} ({origin}) was "
                                "published to every worker")
        return generation

    def _publish_candidate(
        self, payload: bytes, meta: dict[str, Any], now: int, digest: str,
        data: Mapping[str, Any],
    ) -> int:
        """Publish a change to canaries only; a candidate already out is replaced."""
        assert self.rollout_policy is not None
        writer = self.writer
        rollout = writer.next_generation()  # the candidate's generation names its rollout
        previous = self._run
        # A replaced candidate's canaries stay canaries (the anchor's list lasts
        # until the rollout ends): they go straight to the new candidate.
        meta["rollout"] = rollout
        generation = writer.publish_candidate(payload, orjson.dumps(meta), now, rollout)
        self._rollout_scan_due = 0.0  # the whole table at its first judgement
        self._run = RolloutRun(self.rollout_policy, rollout, generation, self.generation,
                               digest, dict(data), canaries=dict(previous.canaries)
                               if previous else {})
        if previous is not None:
            self._rollout_ended(previous, "replaced", f"replaced by candidate {generation}")
        return generation

    @_one_writer
    def rollout_tick(self) -> str | None:
        """Judge the running rollout now and act on it; returns what was done (or None).

        The service calls this several times a second while a rollout runs.
        """
        run = self._run
        if run is None:
            return None
        writer = self.writer
        if writer.rollout != run.id:
            # The writer published the stable content again (a repaired slot).
            self._run = None
            self._rollout_ended(run, "rolled back", "the stable version was published again")
            return "rollback"
        # The listed canaries every tick (their locks asked); the whole table,
        # for the other workers' health and the eligible ones, once a second:
        # a table a group member flooded costs a bounded amount per tick.
        now = time.monotonic()
        listed = set(run.canaries)
        full = now >= self._rollout_scan_due
        if full:
            self._rollout_scan_due = now + _ROLLOUT_SCAN_S
        entries = writer.readers(only=None if full else listed, locks_of=listed)
        verdict = run.judge(entries, now, full=full)
        if run.relist:
            run.relist = False
            writer.reset_canaries(list(run.canaries.items()))
        if verdict.action == "grow":
            self._add_canaries(run, verdict)
        elif verdict.action == "step":
            run.next_step()
            log.info("config %r: rollout of generation %d healthy; step %d of %d", self.name,
                     run.candidate, run.step + 1, len(run.policy.sizes))
            return "step"
        elif verdict.action == "promote":
            self.promote(verdict.reason)
        elif verdict.action == "rollback":
            self.abort_rollout(verdict.reason)
        return verdict.action

    def _add_canaries(self, run: RolloutRun, verdict: Verdict) -> None:
        """List ``verdict.count`` of the workers it offers as canaries, each checked alive."""
        writer = self.writer
        picked: list[tuple[int, int]] = []
        for entry in verdict.assign[:_CANARY_TRIES]:
            if len(picked) == verdict.count:
                break
            if writer.reader_alive(entry.slot, entry.pid):
                picked.append((entry.slot, entry.pid))
        if not picked:
            self._rollout_scan_due = 0.0  # look at the whole table again next tick
            return
        if writer.canary_room() < len(picked):
            # The anchor's list still names canaries that left: write it again
            # with the ones this rollout has (their readers find themselves).
            writer.reset_canaries(list(run.canaries.items()))
        added = writer.add_canaries(picked)
        if not added:
            run.waiting = f"the canary list is full ({L.CANARY_LIST_MAX} canaries)"
            return
        for slot, pid in picked[:added]:
            run.listed(slot, pid)
        writer.wake_readers()
        run.staffed()  # the step's bake runs from its canaries' start
        log.info("config %r: rollout of generation %d, step %d: canaries %s", self.name,
                 run.candidate, run.step + 1,
                 ", ".join(str(p) for p in sorted(run.canaries.values())))

    @_one_writer
    def promote(self, reason: str = "promoted by a person") -> int:
        """Give the running rollout's candidate to every worker now; returns its generation."""
        run = self._run
        if run is None:
            raise ShmconfError(f"config {self.name!r}: no rollout is running")
        generation = self.writer.promote()
        self._data, self._digest = run.data, run.digest
        self._run = None
        self._rollout_ended(run, "promoted", reason)
        log.info("config %r: generation %d promoted to every worker: %s", self.name,
                 generation, reason)
        return generation

    @_one_writer
    def abort_rollout(self, reason: str = "aborted by a person") -> int:
        """Roll the running rollout's candidate back; returns the generation published.

        The stable content is published again as a new generation (readers
        never go back to a lower one), for every worker; canaries return to
        it, the others see the same content. The rollback is pinned like
        :meth:`rollback`: sources that still hold the candidate publish
        nothing until they change.
        """
        run = self._run
        if run is None:
            raise ShmconfError(f"config {self.name!r}: no rollout is running")
        self._run = None
        stable = self.history.get(run.stable)
        sources = stable.sources if stable is not None else ()
        generation = self._publish(
            self._data, self.validate(self._data, environment=False), origin="rollout",
            source_names=sources, force=True, rollout_note=f"rollback of {run.candidate}: {reason}",
        )
        sources_digest = ""
        if self._sources:
            with contextlib.suppress(ShmconfError, OSError):
                sources_digest = content.digest(content.canonical(self.load().data))
        self.history.set_pin(Pin(generation, sources_digest))
        self._rollout_ended(run, "rolled back", reason, generation)
        log.error("config %r: candidate generation %d rolled back (%s); every worker serves "
                  "the stable version again as generation %d", self.name, run.candidate,
                  reason, generation)
        return generation

    def _rollout_ended(
        self, run: RolloutRun, outcome: str, reason: str, generation: int | None = None
    ) -> None:
        self.last_rollout = {
            "outcome": outcome, "candidate": run.candidate, "stable": run.stable,
            "generation": self.generation if generation is None else generation,
            "reason": reason, "started_ns": run.started_ns, "ended_ns": time.time_ns(),
            "canary_health": run.canary_health.to_json(),
            "stable_health": run.stable_health.to_json(),
        }
        found = self.history.get(run.candidate)
        if found is not None:
            note = {"promoted": "promoted", "replaced": reason}.get(outcome, f"{outcome}: {reason}")
            self._note_rollout(found, note)

    def reload(self) -> int | None:
        """Reload from the sources, keeping the last good config on failure.

        **Last-known-good is enforced here.** Returns the published
        generation, or ``None`` when the sources were rejected: the reason is
        logged and counted in ``stats``, and nothing is published.
        """
        try:
            return self.publish_now()
        except (ShmconfError, OSError) as exc:
            reason = _rejection_reason(exc)
            self.stats.rejections[reason] += 1
            self.stats.last_error = str(exc)
            log.error("config %r: rejected: %s; still serving generation %d",
                      self.name, exc, self.generation)
            return None
        except Exception as exc:
            # A bug (here or in a parser) must not end the service either. Its
            # message may quote a value, so only the type is logged at error
            # level; the traceback goes to debug.
            self.stats.rejections["error"] += 1
            self.stats.last_error = f"unexpected {type(exc).__name__} while loading"
            log.error("config %r: rejected: unexpected %s while loading (please report it); "
                      "still serving generation %d", self.name, type(exc).__name__,
                      self.generation)
            log.debug("config %r: the unexpected error", self.name, exc_info=True)
            return None

    def serve_last_good(self, exc: SourceError) -> None:
        """Keep serving without a source that cannot be read at start (``start_without_source``).

        The segment's generation stays if there is one; otherwise the
        history's newest version is published again. Raises ``exc``, extended,
        when there is neither.
        """
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
            self._publish(last.data, self.validate(last.data, environment=False),
                          origin="history",
                          source_names=last.sources)
            log.warning("config %r: %s; serving the last good version from history "
                        "until the source is back", self.name, exc)
        self.stats.rejections["source"] += 1
        self.stats.last_error = str(exc)

    def watch_paths(self) -> list[Path]:
        """The files a watcher must watch: those of every file source."""
        return [p for s in self._sources for p in s.watch_paths()]

    # -- as a service (see shmconf.service) -------------------------------------------

    def serve_forever(self) -> None:
        """Publish, then keep the config current until SIGTERM or SIGINT; SIGHUP reloads.

        Must run in the main thread. Raises if the initial config cannot be
        published. See :meth:`shmconf.service.Service.serve_forever`.
        """
        from shmconf.service import Service

        Service(self).serve_forever()

    def start(self) -> None:
        """Publish, then keep the config current on a background thread until :meth:`stop`.

        Raises here, in the caller, if the initial config cannot be published.
        """
        from shmconf.service import Service

        if self._service is not None:
            raise RuntimeError(f"publisher of {self.name!r} is already running")
        service = Service(self)
        service.start()
        self._service = service

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background service started by :meth:`start`; idempotent."""
        service, self._service = self._service, None
        if service is not None:
            service.stop(timeout)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop publishing and release the writer lock. The segment stays.

        Readers keep serving the last generation; a new publisher continues it.
        """
        self.stop()
        never_published = False
        if self._run is not None:
            log.warning("config %r: stopped during the rollout of generation %d: its canaries "
                        "keep it until the next publisher of the name starts and rolls it back",
                        self.name, self._run.candidate)
        if self._writer is not None:
            never_published = self._writer.never_published
            if never_published:
                # Never published (a first start whose config was rejected):
                # leave no empty segment behind for readers to wait on.
                self._writer.unlink()
            self._writer.close()
            self._writer = None
        if never_published:
            self._remove_what_was_created()
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None

    def _remove_what_was_created(self) -> None:
        """After a start that published nothing: the state directory and lock file it made.

        Only while still holding the lock, and only what is empty: nothing
        another publisher or an earlier run wrote is touched.
        """
        if self._lock is None or not hasattr(self, "state_dir"):
            return
        if self._new_state:
            with contextlib.suppress(OSError):
                (self.state_dir / "history").rmdir()
                self.state_dir.rmdir()
        if self._new_lock:
            with contextlib.suppress(OSError):
                self.lock_file.unlink()

    def unlink(self) -> None:
        """Remove the name's segments and its lock file, then close.

        Works before or after :meth:`close`, as ``SharedMemory.unlink()``
        does: after a close it takes the writer lock again, without waiting,
        so it never removes a name that another publisher owns now (that
        raises :class:`PublisherRunningError`). Attached readers keep their
        last snapshot. The history stays in the state directory, so a later
        publisher still continues the count.
        """
        self.stop()
        if self._writer is None:
            lock = filelock.FileLock(self.lock_file, thread_local=False)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                raise PublisherRunningError(
                    self.name, str(self.lock_file), _publisher_pid(self.name)
                ) from None
            try:
                unlink_name(self.name)
                with contextlib.suppress(FileNotFoundError):
                    self.lock_file.unlink()
            finally:
                lock.release(force=True)
            return
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
        anchor = open_anchor(name, writable=False)
    except (OSError, AnchorNotReady):
        return None
    try:
        return int(anchor.words[L.A_PUBLISHER_PID]) or None
    finally:
        anchor.close()


def _unserializable(data: Mapping[str, Any], exc: TypeError) -> str:
    """Where in ``data`` is the value orjson refused, and why (error path only).

    Walks down to the first leaf orjson cannot serialize and names its key
    path; the reason is orjson's (types, never values).
    """
    path: list[str | int] = []
    node: Any = data
    reason = str(exc)
    while isinstance(node, (Mapping, list, tuple)):
        items = list(node.items()) if isinstance(node, Mapping) else list(enumerate(node))
        for key, value in items:
            try:
                orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            except TypeError as bad:
                path.append(key)
                node, reason = value, str(bad)
                break
        else:
            break
    return f"{dotted(tuple(path))}: not JSON-serializable: {reason}"
