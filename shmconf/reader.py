"""The read side: a seqlock read of the published slot, cached once per process.

``Reader.get()`` on an unchanged config is one aligned 8-byte load from the
anchor (R1), a compare with the cached generation and the return of the
cached object: no lock, no syscall, no copy (in C where shmconf._speedups is
built: ``shmconf/_fastpath.py``). Only a new generation takes the
slow path, once per process: R2 here, R3-R6 in
:func:`shmconf.protocol.slot.read_slot`, R7 here (``docs/design.md`` lists
the steps and why each check is needed). Any failed check goes back to R1, a
bounded number of times; a copy that passes is one the writer finished, of
generation ``g``: never torn, never older than ``g``.

A reader maps only the anchor, read-only; it copies slots out of the data
segment with ``pread`` and writes its reader-table entry with ``pwrite``.
With idle adoption on (``attach(..., idle_adoption=True)``, the default of
every integration), a thread sleeps on the anchor's wake word and adopts each
new generation as soon as it is published (``shmconf/adoption.py``).

Readers never unlink and never register with the resource tracker; closing
or exiting leaves the segment to the publisher.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

import orjson

from shmconf import _gc, frozen
from shmconf.content import SECTIONED_FROM
from shmconf.errors import (
    AnchorNotReady,
    AttachTimeout,
    ConfigValidationError,
    SegmentError,
    validation_problems,
)
from shmconf.protocol import layout as L
from shmconf.protocol import table
from shmconf.protocol.anchor import canaries, open_anchor
from shmconf.protocol.block import SharedBlock
from shmconf.protocol.layout import anchor_shm_name, validate_name
from shmconf.protocol.slot import open_data, read_slot
from shmconf.protocol.table import open_table

if TYPE_CHECKING:
    from shmconf._fastpath import PyFastPath as FastPath
    from shmconf.adoption import IdleAdopter
else:
    from shmconf._fastpath import FastPath

log = logging.getLogger("shmconf.reader")

T = TypeVar("T")
M = TypeVar("M")

#: What ``get()`` returns when there is no model: a read-only dict (``FrozenDict``).
ConfigMapping = Mapping[str, Any]
#: ``callback(old, new)`` with the values at the watched path.
ChangeCallback = Callable[[Any, Any], object]

#: Slow-path attempts before a generation is declared unreadable. A writer
#: needs microseconds per slot, so a healthy segment never comes close.
_MAX_ATTEMPTS: Final = 200
#: Longest pause between two attempts, in seconds.
_MAX_BACKOFF_S: Final = 0.002
#: How often a reader whose anchor was unlinked looks for a new one.
_RETIRED_RECHECK_S: Final = 0.5
#: How often, at most, a reader checks that its reader table still has a name.
_TABLE_RECHECK_S: Final = 1.0
#: With idle adoption, how long requests serve the snapshot they have while the
#: adoption thread adopts a new generation, before one adopts it itself.
_ADOPTER_GRACE_S: Final = 0.5
#: After a claim found no free entry, how long before the next try.
_CLAIM_RETRY_S: Final = 30.0
#: How long the adoption thread waits for a canary's health checks; a check
#: still running then counts as failed (docs/rollout.md).
HEALTH_CHECK_TIMEOUT_S: Final = 10.0

_MISSING: Final = object()

assert L.A_GENERATION == 2

#: The snapshot pinned by ``Reader.pinned()`` in this context (thread, task).
pinned_snapshot: ContextVar[object] = ContextVar("shmconf_pinned", default=_MISSING)


class _Unreadable(Exception):
    """The slot failed its checks on every attempt."""


class _Retired(_Unreadable):
    """The name was unlinked and nothing is published under it yet: wait quietly."""


class Reader(FastPath, Generic[T]):
    """A process's handle on a published config. Create with :func:`attach`.

    Thread-safe: ``get()`` may be called from any number of threads; the slow
    path takes a lock, the fast path takes none. ``get()`` and the three
    attributes it reads (``_words``, ``_gen``, ``_snapshot``) come from
    :class:`shmconf._fastpath.FastPath`.
    """

    __slots__ = (
        "__weakref__",
        "_adopted_ns",
        "_adopter",
        "_allow_back",
        "_anchor",
        "_bad_generation",
        "_callbacks",
        "_canary",
        "_canary_words",
        "_capacity",
        "_checking",
        "_checks",
        "_claim_after",
        "_data",
        "_entry",
        "_entry_lock",
        "_expect",
        "_flushed",
        "_full",
        "_health",
        "_lock",
        "_meta",
        "_model",
        "_pending_since",
        "_pid",
        "_published_ns",
        "_register",
        "_retired_check_at",
        "_rollout_seen",
        "_serial",
        "_stride",
        "_table",
        "_table_checked_at",
        "_trusted_uids",
        "_writer_uid",
        "name",
    )

    def __init__(
        self,
        name: str,
        anchor: SharedBlock,
        model: Callable[[Any], T] | None,
        trusted_uids: frozenset[int] | None,
        register: bool = True,
    ) -> None:
        self.name = name
        self._anchor: SharedBlock | None = anchor
        #: The anchor's words. ``_words`` is what the fast path loads word 2
        #: of: these, or (in a canary of a rollout) ``_canary_words``, the
        #: same page seen from A_CANARY_GENERATION on.
        self._full: memoryview = anchor.words
        self._words: memoryview = self._full
        self._canary_words: memoryview | None = None
        self._canary = False
        self._allow_back = False
        self._rollout_seen = 0
        #: Health under the generation held, in this rollout: requests,
        #: failed requests, failed checks (see count_request()); and the
        #: counts last written to the reader table.
        self._health: list[int] = [0, 0, 0]
        self._flushed: tuple[int, ...] = ()
        self._checks: list[Callable[[Any], object]] = []
        #: A canary's health checks run on the generation it holds (the
        #: entry says so, and a rollout's step waits for them).
        self._checking = False
        self._model = model
        self._trusted_uids = trusted_uids
        # The data segments and the reader table are the anchor's writer's: the
        # same owner as the anchor this reader already trusted. Fixed now, so a
        # worker that drops privileges later (gunicorn's user=) still accepts
        # the next data segment.
        self._writer_uid = frozenset({anchor.stat().st_uid})
        self._register = register
        self._table: SharedBlock | None = None
        self._table_checked_at = 0.0
        self._claim_after = 0.0
        self._entry_lock = threading.Lock()
        #: When a request first saw a generation the adoption thread has not
        #: adopted yet (0: none pending).
        self._pending_since = 0.0
        self._adopter: IdleAdopter | None = None
        self._adopted_ns = 0
        self._expect = 0
        self._lock = threading.Lock()
        self._gen: int = -1
        self._bad_generation: int = -1
        self._snapshot = None  # type: ignore[assignment]  # set by the first refresh
        #: The meta's JSON as published, and its parse once someone asked for it.
        self._meta: tuple[bytes, dict[str, Any] | None] = (b"", {})
        self._published_ns = 0
        self._data: SharedBlock | None = None
        self._serial = 0
        self._capacity = 0
        self._stride = 0
        self._callbacks: list[tuple[ChangeCallback, tuple[str, ...] | None]] = []
        self._retired_check_at = 0.0
        self._pid = os.getpid()
        self._entry: int | None = None
        _live_readers.add(self)

    # -- the hot path ------------------------------------------------------------

    _snapshot: T

    if TYPE_CHECKING:
        def get(self) -> T:
            """The current snapshot: a model instance, or a read-only mapping."""

    @property
    def generation(self) -> int:
        """Generation of the snapshot ``get()`` returned last."""
        return self._gen

    @property
    def meta(self) -> Mapping[str, Any]:
        """What the publisher recorded with that snapshot: digest, changed paths, sources.

        Parsed on first use, not on every adoption: most workers never ask.
        """
        raw, parsed = self._meta
        if parsed is None:
            try:
                found = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:  # checksummed: only a writer's bug gets here
                found = {}
            parsed = found if isinstance(found, dict) else {}
            self._meta = (raw, parsed)
        return MappingProxyType(parsed)

    @property
    def published_at(self) -> float:
        """``time.time()`` at which that snapshot was published."""
        return self._published_ns / 1e9

    @contextlib.contextmanager
    def pinned(self) -> Iterator[T]:
        """One snapshot for a whole unit of work (a request, a job).

        Inside the block, ``shmconf.current()`` returns the same snapshot,
        whatever is published meanwhile; the next block sees the new one.
        """
        snapshot = self.get()
        token = pinned_snapshot.set(snapshot)
        try:
            yield snapshot
        finally:
            pinned_snapshot.reset(token)

    def on_change(self, callback: ChangeCallback, path: str | None = None) -> ChangeCallback:
        """Call ``callback(old, new)`` when a new generation changes ``path``.

        ``path`` is dotted (``"database.pool"``); ``None`` watches the whole
        config. The callback runs in this process, on the thread whose read
        adopted the new generation, after the cache holds it (so ``get()``
        inside the callback returns ``new``) and without any lock held. It runs
        once per adopted generation that changes the value at ``path``; a
        process that skips generations compares what it held with what it
        adopts. An exception in a callback is logged and never breaks reads.
        Returns ``callback``, so this works as a decorator factory too.
        """
        parts = tuple(path.split(".")) if path else None
        self._callbacks.append((callback, parts))
        return callback

    # -- health, for rollouts (docs/rollout.md) ----------------------------------

    def count_request(self, failed: bool = False) -> None:
        """Count one request served under the current snapshot (``failed``: 5xx, exception).

        The integrations call this for every request (gunicorn's
        ``pre_request``/``post_request`` hooks, the ASGI wrapper, the WSGI
        middleware); during a rollout the publisher compares the canaries'
        failure ratio with everyone else's. Costs two integer additions.
        """
        health = self._health
        health[0] += 1
        if failed:
            health[1] += 1

    def report_failure(self) -> None:
        """Count a failure the integrations cannot see (a degraded answer, a failed job).

        It adds a failure, without a request, under the generation this
        process holds: during a rollout, failures in canaries roll it back.
        Not for a failure ``count_request(failed=True)`` already counted.
        """
        self._health[1] += 1

    def add_health_check(self, check: Callable[[T], object]) -> Callable[[T], object]:
        """Run ``check(snapshot)`` when this process adopts a rollout's candidate as a canary.

        A check that raises (anything, ``SystemExit`` included) or returns
        ``False`` (a database host that does not answer, say) is a failed
        check: the publisher rolls the candidate back at once. Checks run on
        a thread of their own; one still running after
        ``HEALTH_CHECK_TIMEOUT_S`` (10 s) counts as failed, and the rollout's
        step waits for them. A change callback that raises counts the same
        way. Returns ``check``.
        """
        self._checks.append(check)
        return check

    @property
    def canary(self) -> bool:
        """Whether the publisher made this process a canary of the running rollout."""
        return self._canary

    def _check_role(self) -> None:
        """Become a canary, or stop being one, as the anchor's canary list says.

        The adoption thread asks at every wake: the publisher lists the
        canaries in the anchor, then wakes every reader. A canary's fast path
        loads the canary word instead of the stable one: the same single
        load, from a view of the anchor that starts later.
        """
        rollout = int(self._full[L.A_ROLLOUT])
        if not rollout and not self._canary and not self._rollout_seen:
            return
        if rollout != self._rollout_seen:
            self._rollout_seen = rollout  # counts start again in each rollout
            self._health = [0, 0, 0]
        if rollout and not self._full[L.A_CANARY_COUNT]:
            return  # no list yet, or the publisher writes it again: no change
        entry = self._entry
        canary = (bool(rollout) and entry is not None
                  and L.canary_key(entry, self._pid) in canaries(self._full))
        if canary == self._canary:
            return
        if canary:
            if self._canary_words is None:
                self._canary_words = self._full[L.CANARY_VIEW:]
            self._words = self._canary_words
        else:
            # Back to the stable word: it may name a generation below the
            # candidate this process held (it dropped off the canary list
            # mid-rollout: the table was made again, its entry changed).
            self._allow_back = True
            self._words = self._full
        self._canary = canary

    def _flush_health(self) -> None:
        """Write the health counts into the reader table if they changed (adoption thread).

        Also when the entry no longer names this process (a group member
        truncated or scribbled on the table): a rollout judges what it finds.
        """
        if tuple(self._health) != self._flushed or not self._entry_intact():
            self._update_entry()

    def _entry_intact(self) -> bool:
        """Whether this process's table entry still names it (one 4-byte pread)."""
        table_block, entry = self._table, self._entry
        if table_block is None or entry is None:
            return True
        try:
            raw = table_block.pread(entry * L.TABLE_ENTRY_SIZE, 4)
        except (OSError, ValueError):
            return True
        return int.from_bytes(raw, "little") == self._pid

    def _run_checks(self, snapshot: T) -> None:
        """A canary's health checks on the candidate it adopted, on a thread of their own.

        Nobody waits for them: the rollout's step does (the entry says
        "checking"). Checks still running after HEALTH_CHECK_TIMEOUT_S count
        as failed, whichever thread adopted. The outcome is written to the
        table at once.
        """
        if not self._checks:
            if self._checking:
                self._checking = False
                self._update_entry()
            return
        generation = self._gen
        recorded = threading.Lock()  # the outcome is written once: by the checks or the wait

        def record(failed: int) -> None:
            if recorded.acquire(blocking=False) and self._gen == generation:
                self._health[2] += failed
                self._checking = False
                self._update_entry()

        def run() -> None:
            failed = 0
            for check in list(self._checks):
                try:
                    ok = check(snapshot) is not False
                except BaseException:  # a check's own exit or timeout is its failure too
                    log.exception("config %r: health check %r failed on candidate "
                                  "generation %d", self.name, check, generation)
                    ok = False
                else:
                    if not ok:
                        log.error("config %r: health check %r failed on candidate "
                                  "generation %d", self.name, check, generation)
                failed += not ok
            deadline.cancel()
            record(failed)

        def too_late() -> None:
            log.error("config %r: the health checks of candidate generation %d did not "
                      "finish in %gs: counted as failed", self.name, generation,
                      HEALTH_CHECK_TIMEOUT_S)
            record(1)

        deadline = threading.Timer(HEALTH_CHECK_TIMEOUT_S, too_late)
        deadline.daemon = True
        deadline.start()
        threading.Thread(target=run, name=f"shmconf-check-{self.name}", daemon=True).start()

    def remove_callback(self, callback: ChangeCallback) -> None:
        """Stop calling ``callback``."""
        self._callbacks = [(cb, p) for cb, p in self._callbacks if cb is not callback]

    def refresh(self) -> T:
        """Adopt the newest generation now (callbacks included); same as ``get()``.

        Useful in an idle process that wants its change callbacks to run
        without waiting for the next ``get()``; :meth:`start_idle_adoption`
        does it for every publish.
        """
        return self.get()

    def start_idle_adoption(self) -> None:
        """Adopt each new generation as soon as it is published, without a ``get()``.

        A daemon thread sleeps on the anchor's wake word (a ``futex``: no CPU
        while nothing is published) and adopts a new generation when the
        publisher wakes it, so change callbacks run and ``shmconf status
        --wait-for`` converges in a process that serves no requests. The
        parse happens on that thread, not on a request. Survives ``fork``:
        a child starts its own thread. Idempotent.
        """
        if self._anchor is None:
            raise ValueError(f"reader of {self.name!r} is closed")
        if self._adopter is None:
            self._start_adopter()
            self._update_entry()

    def _start_adopter(self) -> None:
        from shmconf.adoption import IdleAdopter

        self._adopter = IdleAdopter(self)
        self._adopter.start()

    def stop_idle_adoption(self) -> None:
        """Stop the idle-adoption thread; ``get()`` adopts on the next call again."""
        adopter, self._adopter = self._adopter, None
        if adopter is not None:
            adopter.stop()
            self._update_entry()

    @property
    def idle_adoption(self) -> bool:
        """Whether a thread adopts new generations while this process is idle."""
        return self._adopter is not None

    # -- the slow path -----------------------------------------------------------

    def _refresh(self) -> T:
        if self._anchor is None:
            raise ValueError(f"reader of {self.name!r} is closed")
        if self._words[L.A_GENERATION] == self._bad_generation:
            return self._stale_or_recheck()
        if not self._may_adopt():
            return self._snapshot
        # A with statement: the lock is released whatever interrupts the
        # adoption, a KeyboardInterrupt right after the acquire included.
        with self._lock:
            old, new, callbacks = self._adopt_or_keep()
        if new is old:
            return new
        try:
            for callback, parts in callbacks:
                self._run_callback(callback, parts, old, new)
        finally:  # even past a callback's SystemExit: the entry must not say "checking" for ever
            if self._canary and self._full[L.A_ROLLOUT]:
                self._run_checks(new)
            elif self._checking:
                self._checking = False
                self._update_entry()
        return new

    def _may_adopt(self) -> bool:
        """Whether to adopt now (under the lock), or serve the snapshot this process has.

        With idle adoption the adoption thread parses the new generation (it
        was woken with the publish). A request serves the snapshot it has
        meanwhile, rather than parse, or wait for that parse; only if the
        thread has not adopted it within _ADOPTER_GRACE_S does a request
        adopt it itself.
        """
        # A process that must leave the candidate it holds (no canary any more,
        # or a canary's forked child) does so now, not after the grace.
        if (self._adopter is None or self._gen < 0 or self._allow_back
                or getattr(adoption_thread, "active", False)):
            return True
        now = time.monotonic()
        if not self._pending_since:
            self._pending_since = now
        # Past the grace, only if no one is adopting meanwhile.
        return now - self._pending_since >= _ADOPTER_GRACE_S and not self._lock.locked()

    def _adopt_or_keep(self) -> tuple[T, T, list[tuple[ChangeCallback, tuple[str, ...] | None]]]:
        """Under the lock: ``(old, new, callbacks to run)``; new is old when nothing changed."""
        if self._anchor is None:  # closed while this thread waited for the lock
            raise self._closed_error()
        generation = self._words[L.A_GENERATION]
        old = self._snapshot
        if generation == self._gen:
            return old, old, []
        try:
            self._adopt()
        except _Unreadable as exc:
            if self._anchor is None:  # closed mid-adoption: its blocks went away
                raise self._closed_error() from None
            self._refuse(generation)
            if self._gen < 0:
                raise SegmentError(
                    anchor_shm_name(self.name),
                    f"generation {generation} fails its checks on every read; the segment "
                    "is corrupted: restart the publisher or `shmconf unlink` it",
                ) from None
            if isinstance(exc, _Retired):  # expected after an unlink: no warning
                log.debug("config %r: unlinked; serving generation %d until it is "
                          "published again", self.name, self._gen)
            else:
                log.warning("config %r: generation %d is unreadable (corrupted slot); still "
                            "serving generation %d", self.name, generation, self._gen)
            return old, old, []
        except ConfigValidationError as exc:
            self._refuse(generation)
            if self._gen < 0:
                raise
            log.error("config %r: %s; still serving generation %d", self.name, exc, self._gen)
            return old, old, []
        except (OSError, ValueError):
            if self._anchor is None:
                raise self._closed_error() from None
            raise
        return old, self._snapshot, (self._callbacks if old is not None else [])

    def _closed_error(self) -> ValueError:
        return ValueError(f"reader of {self.name!r} is closed")

    def _refuse(self, generation: int) -> None:
        """Remember a generation that cannot be adopted: the fast path skips it."""
        self._bad_generation = generation
        self._pending_since = 0.0
        self._update_entry()

    def _adopt(self) -> None:
        """R1-R7 under the lock: read the newest complete generation into the cache."""
        if self._full[L.A_FLAGS] & L.FLAG_RETIRED:
            self._follow_new_anchor()
        generation, meta, payload, published_ns = self._read_slot()
        snapshot = self._parse(payload, self._sections(meta, payload))
        if generation < self._gen and self._allow_back:
            self._allow_back = False  # a canary's candidate, given back: take the stable one
        elif generation < self._gen:
            # Only a segment recreated from scratch counts down; keep the newer one.
            log.warning("config %r: generation went back from %d to %d; ignoring it",
                        self.name, self._gen, generation)
            raise _Unreadable
        self._meta = (meta, None)
        self._published_ns = published_ns
        self._snapshot = snapshot  # first the object, then the generation the
        self._gen = generation     # fast path compares: a thread never pairs them wrongly
        self._health = [0, 0, 0]   # health is counted per generation held
        self._allow_back = False
        # Listed as checking from the first write on: a step must not pass
        # between this adoption and the end of the checks.
        self._checking = bool(self._checks) and self._canary and bool(self._full[L.A_ROLLOUT])
        self._adopted_ns = time.time_ns()
        self._pending_since = 0.0
        self._update_entry()

    def _read_slot(self) -> tuple[int, bytes, bytes, int]:
        for attempt in range(_MAX_ATTEMPTS):
            if attempt:
                _backoff(attempt)
            # R1: pairs with W4 (the canary word in a canary: its own W4)
            generation = self._words[L.A_GENERATION]
            serial = self._full[L.A_DATA_SERIAL]  # R2: pairs with G3
            if serial != self._serial and not self._open_data(serial):
                continue
            data = self._data
            if data is None:
                continue
            found = read_slot(data, generation, self._stride, self._capacity,  # R3-R6
                              self._expect)
            if found is not None:
                meta, payload, published_ns = found
                # The next config is usually about this size: one pread then.
                self._expect = len(meta) + len(payload) + 512
                return generation, meta, payload, published_ns
        raise _Unreadable

    def _open_data(self, serial: int) -> bool:
        try:
            block, capacity, stride = open_data(
                self.name, serial, writable=False, trusted_uids=self._writer_uid
            )
        except FileNotFoundError:
            return False  # replaced again meanwhile: R1 finds the newer serial
        except OSError as exc:  # SegmentError too: damaged, or not readable by this user
            if isinstance(exc, PermissionError):
                _warn_once(f"config {self.name!r}: cannot read data segment {serial}: {exc}; "
                           "give the readers' group with --group (group= in the integrations)")
            log.debug("config %r: data segment %d: %s", self.name, serial, exc)
            return False
        if self._data is not None:
            self._data.close()
        self._data, self._serial, self._capacity, self._stride = block, serial, capacity, stride
        return True

    def _sections(self, meta: bytes, payload: bytes) -> list[list[Any]] | None:
        """The publisher's cuts of a large payload, when this thread parses it in pieces.

        Only the adoption thread does (``shmconf.adoption``): it lets requests
        run between the pieces. A request that adopts parses in one go.
        """
        if (self._model is not None or len(payload) < SECTIONED_FROM
                or not getattr(adoption_thread, "active", False)):
            return None
        try:
            found = orjson.loads(meta).get("sections")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return found if isinstance(found, list) else None

    def _parse(self, payload: bytes, sections: list[list[Any]] | None = None) -> T:
        # The collector is paused while the snapshot is built (see shmconf._gc),
        # inline: _gc.paused()'s generator costs about 1 us on every new generation.
        collecting = gc.isenabled()
        gc.disable()
        _gc.PAUSING[0] += collecting  # a child forked meanwhile turns it back on
        try:
            if self._model is None:
                if sections:
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        # sleep(0) lets a waiting thread take the GIL between pieces.
                        return frozen.loads_in_sections(  # type: ignore[return-value]
                            payload, sections, _yield, self._snapshot)
                try:
                    # Without the C speedups, what did not change is taken from the
                    # snapshot this one replaces.
                    return frozen.loads(payload, self._snapshot)  # type: ignore[no-any-return]
                except orjson.JSONDecodeError:
                    raise _Unreadable from None
            # pydantic parses the JSON itself: no intermediate dicts, faster
            # than orjson + model_validate at every size (docs/bench.md), and
            # the mode the publisher's round-trip check validates in (strict
            # models accept a datetime's JSON string only in JSON mode).
            try:
                return self._model(payload)
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                if _invalid_json(exc):  # as orjson's JSONDecodeError above
                    raise _Unreadable from None
                raise ConfigValidationError(self.name, validation_problems(exc)) from None
            except Exception as exc:  # a validator of the model that raised something else
                raise ConfigValidationError(
                    self.name, [f"(root): the model raised {type(exc).__name__}"]) from None
        finally:
            if collecting:
                _gc.PAUSING[0] -= 1
                gc.enable()

    def _update_entry(self) -> None:
        """R7's bookkeeping: write this process's entry in the reader table.

        Claims an entry on the first call in a process (and after a fork or
        when the table was made again); a reader that cannot be listed (no
        table, no write access, every entry held) reads on, unlisted.
        """
        if not self._register or self._anchor is None or self._gen < 0:
            return
        try:
            # The request path, the adoption thread and start/stop may all get
            # here: one at a time, or two claims could take two entries.
            with self._entry_lock:
                self._write_entry()
        except (OSError, ValueError) as exc:
            log.debug("config %r: not listed in the reader table: %s", self.name, exc)

    def _write_entry(self) -> None:
        table_block = self._table
        if table_block is not None and (self._pid != os.getpid() or self._table_removed()):
            self._drop_table()
            table_block = None
        if table_block is None:
            self._pid = os.getpid()
            try:
                table_block = open_table(self.name, writable=True,
                                         trusted_uids=self._writer_uid)
            except (FileNotFoundError, PermissionError):
                return
            self._table, self._entry = table_block, None
        flags = ((L.ENTRY_IDLE_ADOPTION if self._adopter is not None else 0)
                 | (L.ENTRY_CHECKING if self._checking else 0))
        refused = max(self._bad_generation, 0)
        health = tuple(self._health)
        if self._entry is None:
            now = time.monotonic()
            if now < self._claim_after:
                return  # the last claim found every entry it tried held
            self._entry = table.claim(table_block, self._pid, self._gen, flags)
            if self._entry is None:
                self._claim_after = now + _CLAIM_RETRY_S
                return
        requests, failures, checks = health
        table.update(table_block, self._entry, self._pid, self._gen, flags=flags,
                     adopted_ns=self._adopted_ns, refused=refused,
                     health=(requests, failures, checks, self._rollout_seen))
        self._flushed = health

    def _relist_if_table_removed(self) -> None:
        """Write this process's entry into a new table if the old one lost its name.

        The adoption thread asks at each wake, so a reader is listed again
        within seconds even when nothing is published.
        """
        if self._table is None and self._gen >= 0 and self._register:
            # Unlisted: the table was gone when this reader last looked.
            if time.monotonic() >= self._table_checked_at:
                self._table_checked_at = time.monotonic() + _TABLE_RECHECK_S
                self._update_entry()
        elif self._table is not None and self._table_removed():
            self._table_checked_at = 0.0
            self._update_entry()

    def _table_removed(self) -> bool:
        """Whether the table's name was removed (the publisher makes a new one).

        Asked at most once a second: an ``fstat`` on every adoption would be
        a quarter of the cost of a small config's new generation.
        """
        now = time.monotonic()
        if now < self._table_checked_at:
            return False
        self._table_checked_at = now + _TABLE_RECHECK_S
        table_block = self._table
        return table_block is not None and not os.fstat(table_block.fileno()).st_nlink

    def _drop_table(self, *, forked: bool = False) -> None:
        """Let go of the reader table, clearing this process's entry.

        In a forked child (``forked``, or a pid that changed unseen) the entry
        and its lock are the parent's (the child's copy of the descriptor
        shares them): the child only closes its copy.
        """
        table_block, entry = self._table, self._entry
        self._table = self._entry = None
        if table_block is None:
            return
        if not forked and self._pid == os.getpid() and entry is not None:
            with contextlib.suppress(OSError, ValueError):
                table.release(table_block, entry)
        table_block.close()

    def _follow_new_anchor(self) -> None:
        """The anchor was unlinked; switch to a new one under the name if there is one."""
        try:
            anchor = open_anchor(self.name, writable=False, trusted_uids=self._trusted_uids)
        except (OSError, AnchorNotReady):
            # Gone, not ready, or not one to trust (another user's, a symlink
            # planted under the free name): keep the last snapshot, look again.
            raise _Retired from None
        old, old_canary_words = self._anchor, self._canary_words
        self._drop_table()
        # The new words first: a thread in get() never loads from a closed mapping.
        self._anchor, self._full, self._words = anchor, anchor.words, anchor.words
        self._canary, self._canary_words, self._rollout_seen = False, None, 0
        self._writer_uid = frozenset({anchor.stat().st_uid})
        if old_canary_words is not None:
            old_canary_words.release()
        if old is not None:
            old.close()
        self._serial = 0
        self._bad_generation = -1

    def _stale_or_recheck(self) -> T:
        """Serve the last good snapshot; now and then, retry an unlinked anchor."""
        if self._full[L.A_FLAGS] & L.FLAG_RETIRED:
            now = time.monotonic()
            if now >= self._retired_check_at:
                self._retired_check_at = now + _RETIRED_RECHECK_S
                self._bad_generation = -1
                return self._refresh()
        return self._snapshot

    def _run_callback(
        self, callback: ChangeCallback, parts: tuple[str, ...] | None, old: Any, new: Any
    ) -> None:
        if parts is not None:
            old, new = value_at(old, parts), value_at(new, parts)
        if old == new:
            return
        try:
            callback(None if old is _MISSING else old, None if new is _MISSING else new)
        except BaseException as exc:
            # SystemExit and the like end a request thread as they should (a
            # server's timeout); on the adoption thread they are the callback's
            # failure, and the thread goes on.
            if not isinstance(exc, Exception) and not getattr(adoption_thread, "active", False):
                raise
            log.exception("config %r: change callback %r failed", self.name, callback)
            self._health[2] += 1  # a failed check of this generation (docs/rollout.md)
            if self._canary:
                self._update_entry()

    # -- lifecycle --------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, its own table entry, its own adoption thread."""
        self._lock = threading.Lock()
        self._entry_lock = threading.Lock()
        self._drop_table(forked=True)
        self._pid = os.getpid()
        adopter, self._adopter = self._adopter, None
        if adopter is not None:
            adopter.forget_after_fork()
        if self._anchor is None:
            return
        self._claim_after = 0.0
        self._pending_since = 0.0
        # A canary's child is no canary: it may take the stable generation
        # below the candidate its parent held (and refuses nothing yet).
        if self._canary:
            self._allow_back, self._bad_generation = True, -1
        self._words, self._canary, self._rollout_seen = self._full, False, 0
        self._health, self._flushed = [0, 0, 0], ()
        if adopter is not None:
            with contextlib.suppress(Exception):
                self._start_adopter()
        self._update_entry()  # one claim, its flag included

    def close(self) -> None:
        """End this process's access. The segment stays for every other reader.

        A closed reader stops being the process's current reader.
        """
        from shmconf import _current

        if _current.process_reader() is self:
            _current.set_reader(None)
        self.stop_idle_adoption()
        # Closed from the first store on: a thread adopting meanwhile (it takes
        # the lock, which close() does not: close() may be called from a signal
        # handler or a finalizer in the middle of an adoption) then fails, and
        # says the reader is closed.
        anchor, self._anchor = self._anchor, None
        self._drop_table()
        self._words = self._full = _CLOSED_WORDS
        self._gen = -1
        canary_words, self._canary_words = self._canary_words, None
        if canary_words is not None:
            canary_words.release()
        for block in (self._data, anchor):
            if block is not None:
                block.close()
        self._data = None
        _live_readers.discard(self)

    @property
    def closed(self) -> bool:
        return self._anchor is None

    def __enter__(self) -> Reader[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"generation {self._gen}"
        return f"<shmconf.Reader {self.name!r} {state}>"


#: Stands in for the anchor after close(): its generation word (0) never equals
#: the -1 a closed reader caches, so get() reaches the "closed" error.
_CLOSED_WORDS: Final = memoryview(bytearray(L.ANCHOR_HEADER_SIZE)).cast("Q")

_live_readers: weakref.WeakSet[Reader[Any]] = weakref.WeakSet()


#: ``active`` is set on the adoption thread (``shmconf.adoption``), which
#: parses a large payload in pieces.
adoption_thread = threading.local()


def _yield() -> None:
    time.sleep(0)


def _after_fork_in_child() -> None:
    for reader in list(_live_readers):
        reader._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _backoff(attempt: int) -> None:
    if attempt < 8:
        os.sched_yield()
    else:
        time.sleep(min(_MAX_BACKOFF_S, 1e-5 * attempt))


def value_at(obj: Any, parts: tuple[str, ...]) -> Any:
    """The value at a dotted path in a mapping or a model; a sentinel when absent."""
    for part in parts:
        obj = obj.get(part, _MISSING) if isinstance(obj, Mapping) else getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _invalid_json(exc: ValueError) -> bool:
    """Whether pydantic refused the payload as JSON rather than the config it holds."""
    errors = getattr(exc, "errors", None)
    return callable(errors) and any(e.get("type") == "json_invalid" for e in errors())


def _model_validator(model: type[Any] | None) -> Callable[[Any], Any] | None:
    """How a worker validates a snapshot: the model's snapshot class (``shmconf.model``).

    Called with the payload's JSON bytes (see ``Reader._parse``).
    """
    if model is None:
        return None
    if not hasattr(model, "model_validate"):
        raise TypeError(f"model must be a pydantic model class, got {model!r}")
    from shmconf.model import snapshot_model, validate

    return functools.partial(validate, snapshot_model(model), by_name=True)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning that a reader would otherwise repeat on every attempt."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _trusted(trusted_owner: int | str | None) -> frozenset[int]:
    """The owners a reader trusts, fixed when it attaches (a later setuid changes nothing)."""
    if trusted_owner is None:
        return frozenset({os.geteuid()})
    if isinstance(trusted_owner, str):
        import pwd

        trusted_owner = pwd.getpwnam(trusted_owner).pw_uid
    return frozenset({os.geteuid(), trusted_owner})


@overload
def attach(
    name: str,
    model: None = None,
    *,
    timeout: float = 5.0,
    trusted_owner: int | str | None = None,
    register: bool = True,
    make_current: bool | None = None,
    idle_adoption: bool = False,
) -> Reader[ConfigMapping]: ...


@overload
def attach(
    name: str,
    model: type[M],
    *,
    timeout: float = 5.0,
    trusted_owner: int | str | None = None,
    register: bool = True,
    make_current: bool | None = None,
    idle_adoption: bool = False,
) -> Reader[M]: ...


def attach(
    name: str,
    model: type[Any] | None = None,
    *,
    timeout: float = 5.0,
    trusted_owner: int | str | None = None,
    register: bool = True,
    make_current: bool | None = None,
    idle_adoption: bool = False,
) -> Reader[Any]:
    """Attach to the config published as ``name``; wait up to ``timeout`` seconds.

    Waits for the segment to exist and for its first generation, then reads
    it, so ``get()`` on the returned reader never waits.

    Args:
        name: the name given to the publisher.
        model: a pydantic model class; ``get()`` returns instances of it.
            Without one, ``get()`` returns a read-only mapping.
        timeout: seconds to wait for the segment and its first generation.
        trusted_owner: a user (uid or name) besides this one whose segments
            may be trusted, for a publisher that runs as another user and
            publishes with ``--group``.
        register: list this process in the reader table (``shmconf status``).
            Tools that only look (the CLI) pass False.
        make_current: make this reader the process's current reader, the one
            ``shmconf.current()`` reads. By default the first reader attached
            in a process becomes it (while none is set); ``True`` replaces
            the one set, ``False`` leaves it alone.
        idle_adoption: adopt each new generation as soon as it is published,
            on a thread that sleeps until then (see
            :meth:`Reader.start_idle_adoption`); on by default in every
            integration. Off, a new generation is adopted by the next ``get()``.

    Raises:
        AttachTimeout: nothing was published in time.
        SegmentError: the segment exists but is not usable (says why).
        ConfigValidationError: the published config does not fit ``model``.
    """
    validate_name(name)
    validate = _model_validator(model)
    trusted = _trusted(trusted_owner)
    deadline = time.monotonic() + timeout
    reason = "no segment"
    pause = 0.002
    reader: Reader[Any] | None = None
    try:
        while True:
            if reader is None:
                reader, reason = _open_reader(name, validate, trusted, register)
            if reader is not None:
                reason = "nothing published yet"
                if reader._words[L.A_GENERATION] > 0:
                    try:
                        reader.get()
                    except SegmentError:
                        if time.monotonic() >= deadline:
                            raise
                    else:
                        if reader.generation > 0:
                            _become_current(reader, make_current)
                            if idle_adoption:
                                reader.start_idle_adoption()
                            return reader
                    reason = "the published generation is unreadable"
            if time.monotonic() >= deadline:
                raise AttachTimeout(name, timeout, reason)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    except BaseException:
        if reader is not None:
            reader.close()
        raise


def _become_current(reader: Reader[Any], make_current: bool | None) -> None:
    from shmconf import _current

    if make_current or (make_current is None and _current.process_reader() is None):
        _current.set_reader(reader)


def _open_reader(
    name: str,
    validate: Callable[[Any], Any] | None,
    trusted: frozenset[int] | None,
    register: bool,
) -> tuple[Reader[Any] | None, str]:
    try:
        anchor = open_anchor(name, writable=False, trusted_uids=trusted)
    except FileNotFoundError:
        return None, f"no segment {anchor_shm_name(name)!r}"
    except AnchorNotReady:
        return None, "segment being created"
    return Reader(name, anchor, validate, trusted, register), ""


class _DeprecatedCallableModule(types.ModuleType):
    """This module, callable as the deprecated ``shmconf.reader()``.

    ``shmconf.reader()`` used to be a function, which shadowed this module:
    after ``import shmconf.reader`` the name meant one or the other. The
    function is now ``shmconf.current_reader()``; calling the module keeps
    old code working for one release, with a DeprecationWarning.
    """

    def __call__(self) -> Reader[Any]:
        warnings.warn("shmconf.reader() is deprecated; use shmconf.current_reader()",
                      DeprecationWarning, stacklevel=2)
        from shmconf._current import current_reader

        return current_reader()


sys.modules[__name__].__class__ = _DeprecatedCallableModule
