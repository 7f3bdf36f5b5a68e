"""What is live for a name: the segment, its publisher and its readers.

Used by ``shmconf status``/``show``, the debug view and the metrics. Reading
status never makes this process a reader: the segment is opened without a
reader-table entry.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson

from shmconf import _layout as L
from shmconf import _paths, _table, segment
from shmconf._errors import SegmentError, SegmentNotFoundError
from shmconf.history import read_private

#: A publisher whose heartbeat is older than this is reported dead, even if
#: its pid exists (a stopped or hung process, or a reused pid).
HEARTBEAT_STALE_S: Final = 5.0


@dataclass(frozen=True)
class ReaderStatus:
    pid: int
    generation: int
    alive: bool


@dataclass(frozen=True)
class Status:
    """A snapshot of a name's state, as ``shmconf status --json`` prints it."""

    name: str
    generation: int
    published_ns: int
    digest: str | None
    sources: list[str]
    changed: list[str]
    origin: str | None
    publisher_pid: int | None
    publisher_alive: bool
    heartbeat_age_s: float | None
    slot_capacity: int
    slot_used: int
    data_serial: int
    readers: list[ReaderStatus] = field(default_factory=list)
    #: From the running publisher's status file: rejections, last error.
    service: dict[str, Any] = field(default_factory=dict)

    @property
    def age_s(self) -> float | None:
        if not self.published_ns:
            return None
        return max(0.0, (time.time_ns() - self.published_ns) / 1e9)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["age_s"] = self.age_s
        out["slot_use"] = self.slot_used / self.slot_capacity if self.slot_capacity else 0.0
        return out

    def laggards(self, generation: int) -> list[ReaderStatus]:
        """Live readers that hold a generation older than ``generation``."""
        return [r for r in self.readers if r.alive and r.generation < generation]


def publisher_alive(pid: int, heartbeat_ns: int) -> bool:
    """Alive: the pid exists and its heartbeat is recent."""
    if not pid or not _table.pid_alive(pid):
        return False
    return (time.time_ns() - heartbeat_ns) / 1e9 < HEARTBEAT_STALE_S


def read_service_status(name: str) -> dict[str, Any]:
    """The running (or last) publisher's ``status.json``; empty when there is none."""
    from shmconf.publisher import STATUS_FILE

    try:
        path = _paths.runtime_dir() / name / STATUS_FILE
        return dict(orjson.loads(read_private(path)))
    except (OSError, ValueError):
        return {}


def collect(name: str, *, reclaim: bool = True) -> Status:
    """Read the state of ``name``; raises :class:`SegmentNotFoundError` if nothing is published.

    With ``reclaim``, reader-table entries of dead processes are freed after
    they were reported (so they show once as dead, then disappear).
    """
    from shmconf.reader import attach

    segment.validate_name(name)
    try:
        try:
            anchor = segment.open_anchor(name, writable=reclaim)
        except PermissionError:
            anchor = segment.open_anchor(name, writable=False)
    except FileNotFoundError:
        raise SegmentNotFoundError(name, segment.anchor_shm_name(name)) from None
    except segment.AnchorNotReady:
        raise SegmentError(
            segment.anchor_shm_name(name),
            "exists but is not finished: a publisher is creating it right now, or one was "
            "killed while creating it; starting the publisher replaces it, or `shmconf unlink` it",
        ) from None
    try:
        words = anchor.words
        pid = int(words[L.A_PUBLISHER_PID])
        heartbeat_ns = int(words[L.A_HEARTBEAT_NS])
        entries = _table.entries(anchor)
        readers = [ReaderStatus(e.pid, e.generation, _table.pid_alive(e.pid)) for e in entries]
        if reclaim:
            _table.reclaim_dead(anchor)
        meta: dict[str, Any] = {}
        published_ns = 0
        used = 0
        generation = int(words[L.A_GENERATION])
        if generation:
            with contextlib.suppress(Exception):
                reader = attach(name, timeout=0, register=False)
                try:
                    meta = dict(reader.meta)
                    published_ns = int(reader.published_at * 1e9)
                    generation = reader.generation
                    used = len(orjson.dumps(meta)) + int(meta.get("size", 0))
                finally:
                    reader.close()
        return Status(
            name=name,
            generation=generation,
            published_ns=published_ns,
            digest=meta.get("digest"),
            sources=list(meta.get("sources", [])),
            changed=list(meta.get("changed", [])),
            origin=meta.get("origin"),
            publisher_pid=pid or None,
            publisher_alive=publisher_alive(pid, heartbeat_ns),
            heartbeat_age_s=(time.time_ns() - heartbeat_ns) / 1e9 if heartbeat_ns else None,
            slot_capacity=int(words[L.A_SLOT_CAPACITY]),
            slot_used=used,
            data_serial=int(words[L.A_DATA_SERIAL]),
            readers=readers,
            service=read_service_status(name),
        )
    finally:
        anchor.close()

