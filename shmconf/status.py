"""What is live for a name: the segment, its publisher and its readers.

Used by ``shmconf status``/``show``, the debug view and the metrics. Status
reads the anchor, the published slot's header and its meta directly, opening
each object once; it never copies or parses the config, and never makes this
process a reader.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson

from shmconf import _paths
from shmconf.errors import AnchorNotReady, SegmentError, SegmentNotFoundError, ShmconfError
from shmconf.protocol import control, table
from shmconf.protocol import layout as L
from shmconf.protocol.anchor import canaries, open_anchor
from shmconf.protocol.block import SHM_DIR, SharedBlock
from shmconf.protocol.layout import anchor_shm_name, validate_name
from shmconf.protocol.slot import open_data, read_slot_meta

#: A publisher whose heartbeat is older than this is reported dead, even if
#: its pid exists (a stopped or hung process, or a reused pid).
HEARTBEAT_STALE_S: Final = 5.0
#: In the state directory: what the supervisor of an integration's publisher
#: did (restarts, the last exit, its state), written by
#: :mod:`shmconf.integrations.supervisor`.
SUPERVISOR_FILE: Final = "supervisor.json"


@dataclass(frozen=True)
class ReaderStatus:
    pid: int
    generation: int
    alive: bool
    #: A thread adopts new generations while the process is idle: behind
    #: only for the moment a publish takes to reach it.
    idle_adoption: bool = False
    #: The newest generation it could not adopt (did not fit its model, or
    #: unreadable), 0 when none.
    refused: int = 0
    #: ``time.time_ns()`` when it adopted the generation it holds.
    adopted_ns: int = 0
    #: The publisher made it a canary of the running rollout: it follows the
    #: candidate, not the stable generation (docs/rollout.md).
    canary: bool = False


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
    #: The reader table reached its largest size: readers past it read unlisted.
    readers_table_full: bool = False
    #: Why readers are not listed at all (no table, no access), or None.
    readers_unlisted: str | None = None
    #: Entries left out of ``readers`` because no reader could have written
    #: them (a pid past the system's largest, a generation never published):
    #: damage, or a group member imitating readers.
    readers_ignored: int = 0
    #: When the publisher that the anchor names stopped heartbeating, if it is
    #: dead without having stopped cleanly (a clean stop clears its pid).
    publisher_dead_since_ns: int | None = None
    #: The supervisor of an integration's publisher (restarts, last exit),
    #: with ``alive``; empty when the publisher runs unsupervised.
    supervisor: dict[str, Any] = field(default_factory=dict)
    #: The publisher's last heartbeat (ns since the epoch; 0 before the first).
    heartbeat_ns: int = 0
    #: The running rollout (docs/rollout.md), or None: the anchor's rollout id,
    #: candidate and stable generation, the live canaries from the reader
    #: table, and the running publisher's view of it (step, health, bake
    #: time left, what it waits for) from its status file.
    rollout: dict[str, Any] | None = None
    #: How the last rollout ended, as the running (or last) publisher recorded
    #: it: outcome, candidate, stable, generation, reason, health.
    last_rollout: dict[str, Any] | None = None

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

    @property
    def candidate(self) -> int | None:
        """The running rollout's candidate generation, or None when no rollout runs."""
        return None if self.rollout is None else int(self.rollout["candidate"])

    def laggards(self, generation: int) -> list[ReaderStatus]:
        """Live readers that hold a generation older than ``generation``."""
        return [r for r in self.readers if r.alive and r.generation < generation]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (owned by anyone).

    A pid outside 1 .. 2**31 - 1 can only come from a damaged word: no
    process has it, and ``os.kill`` would refuse it (or, for 0, signal a
    whole process group).
    """
    if not 0 < pid < 1 << 31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Killed but not reaped (a parent that never waits, PID 1 in a container): dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) S ...": comm may hold spaces and parentheses.
            return stat.read().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return False


def publisher_alive(pid: int, heartbeat_ns: int) -> bool:
    """Alive: the pid exists and its heartbeat is recent."""
    if not pid or not pid_alive(pid):
        return False
    return (time.time_ns() - heartbeat_ns) / 1e9 < HEARTBEAT_STALE_S


def running_publisher(name: str) -> int | None:
    """The pid of the live publisher of ``name``, whoever owns it; ``None`` when none runs.

    For ``unlink``, which must not remove a name under a live publisher even
    when another user's publisher owns it (root cleaning up a service's
    name): the anchor is read trusting its owner, for two words only.
    """
    try:
        owner = os.lstat(os.path.join(SHM_DIR, anchor_shm_name(name))).st_uid
        anchor = open_anchor(name, writable=False, trusted_uids=frozenset({owner}))
    except (OSError, AnchorNotReady):
        return None
    try:
        pid = int(anchor.words[L.A_PUBLISHER_PID])
        alive = publisher_alive(pid, int(anchor.words[L.A_HEARTBEAT_NS]))
    finally:
        anchor.close()
    return pid if alive else None


def read_service_status(name: str) -> dict[str, Any]:
    """The running (or last) publisher's ``status.json``; empty when there is none."""
    # Not _paths.state_dir(): looking must not create the directory.
    state_dir = _paths.existing_state_dir(name)
    return control.read_status(state_dir) if state_dir is not None else {}


def read_supervisor_status(name: str) -> dict[str, Any]:
    """The publisher's supervisor's ``supervisor.json`` plus ``alive``; empty when none."""
    state_dir = _paths.existing_state_dir(name)
    if state_dir is None:
        return {}
    try:
        data = orjson.loads(control.read_private(state_dir / SUPERVISOR_FILE))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # A supervisor removes its file when it stops; one still there with a
    # dead pid was killed, and says so.
    data["alive"] = bool(data.get("pid")) and pid_alive(int(data["pid"]))
    return data


def collect(
    name: str, *, reclaim: bool = True, trusted_uids: frozenset[int] | None = None
) -> Status:
    """Read the state of ``name``; raises :class:`SegmentNotFoundError` if nothing is published.

    With ``reclaim``, reader-table entries of dead processes are freed after
    they were reported (so they show once as dead, then disappear).
    ``trusted_uids``: owners to trust besides this user (``--trusted-owner``).
    """
    validate_name(name)
    try:
        anchor = open_anchor(name, writable=False, trusted_uids=trusted_uids)
    except FileNotFoundError:
        raise SegmentNotFoundError(name, anchor_shm_name(name)) from None
    except AnchorNotReady:
        raise SegmentError(
            anchor_shm_name(name),
            "exists but is not finished: a publisher is creating it right now, or one was "
            "killed while creating it; starting the publisher replaces it, or `shmconf unlink` it",
        ) from None
    try:
        words = anchor.words
        pid = int(words[L.A_PUBLISHER_PID])
        heartbeat_ns = int(words[L.A_HEARTBEAT_NS])
        rollout_id = int(words[L.A_ROLLOUT])
        # The data segment and the table are the anchor's writer's.
        writer = frozenset({anchor.stat().st_uid})
        listed, full, unlisted = read_readers(name, reclaim=reclaim, trusted_uids=writer,
                                              rollout=rollout_id, canaries=canaries(words))
        generation, meta, published_ns, used = _published_meta(name, words, writer)
        # Canaries hold the candidate, above the stable generation.
        candidate = int(words[L.A_CANARY_GENERATION]) if rollout_id else generation
        readers = plausible_readers(listed, max(generation, candidate))
        alive = publisher_alive(pid, heartbeat_ns)
        service = read_service_status(name)
        return Status(
            name=name,
            generation=generation,
            published_ns=published_ns,
            digest=meta.get("digest"),
            sources=list(meta.get("sources", [])),
            changed=list(meta.get("changed", [])),
            origin=meta.get("origin"),
            publisher_pid=pid or None,
            publisher_alive=alive,
            heartbeat_age_s=(time.time_ns() - heartbeat_ns) / 1e9 if heartbeat_ns else None,
            slot_capacity=int(words[L.A_SLOT_CAPACITY]),
            slot_used=used,
            data_serial=int(words[L.A_DATA_SERIAL]),
            readers=readers,
            service=service,
            readers_table_full=full,
            readers_unlisted=unlisted,
            readers_ignored=len(listed) - len(readers),
            publisher_dead_since_ns=heartbeat_ns if pid and heartbeat_ns and not alive else None,
            supervisor=read_supervisor_status(name),
            heartbeat_ns=heartbeat_ns,
            rollout=running_rollout(rollout_id, candidate, generation, service,
                                    None if unlisted else readers),
            last_rollout=_dict_or_none(service.get("last_rollout")),
        )
    finally:
        anchor.close()


def _dict_or_none(value: object) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


#: The keys of ``Status.rollout``: ``RolloutRun.to_json()``'s; those the
#: running publisher has not reported are None.
ROLLOUT_KEYS: Final = ("id", "candidate", "stable", "started_ns", "step", "steps", "step_size",
                       "bake_left_s", "canaries", "canary_health", "stable_health", "waiting",
                       "policy")


def running_rollout(
    rollout_id: int, candidate: int, stable: int, service: dict[str, Any],
    readers: list[ReaderStatus] | None,
) -> dict[str, Any] | None:
    """The running rollout: the anchor's words, the table's canaries, the publisher's view.

    The anchor decides whether one runs (``status.json`` may lag by a second
    or come from a publisher that died); the publisher's view is used only
    when it is of this rollout. ``bake_left_s`` is counted down from when
    the publisher wrote it. ``readers``: the listed readers, None when the
    table cannot be read (then the publisher's list of canaries is shown).
    """
    if not rollout_id:
        return None
    found = dict.fromkeys(ROLLOUT_KEYS)
    reported = service.get("rollout")
    if isinstance(reported, dict) and reported.get("id") == rollout_id:
        found.update((k, v) for k, v in reported.items() if k in found)
        if isinstance(found["bake_left_s"], (int, float)) and service.get("updated_ns"):
            written_ago = max(0.0, (time.time_ns() - int(service["updated_ns"])) / 1e9)
            found["bake_left_s"] = round(max(0.0, found["bake_left_s"] - written_ago), 2)
    found.update(id=rollout_id, candidate=candidate, stable=stable)
    if readers is not None:
        found["canaries"] = sorted(r.pid for r in readers if r.alive and r.canary)
    elif found["canaries"] is None:
        found["canaries"] = []
    return found


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22  # Linux's largest


def plausible_readers(readers: list[ReaderStatus], published: int) -> list[ReaderStatus]:
    """The entries a reader could have written: a real pid, a generation that was published.

    ``published``: the newest generation any reader may hold: the running
    rollout's candidate, else the published generation.

    Readers write the table, so a group member can write entries too; those
    that no reader could have written are left out of listings, waits and
    metrics (``Status.readers_ignored`` counts them).
    """
    largest = _pid_max()
    return [r for r in readers
            if 0 < r.pid <= largest and r.generation <= published and r.refused <= published]


def read_readers(
    name: str, *, reclaim: bool = False, trusted_uids: frozenset[int] | None = None,
    rollout: int = 0, canaries: frozenset[int] = frozenset(),
) -> tuple[list[ReaderStatus], bool, str | None]:
    """The reader table of ``name``: ``(readers, table full, why unlisted)``.

    With ``reclaim`` (and write access), entries of processes that are gone
    are cleared after they were read, so each shows once as dead. ``rollout``
    and ``canaries``: the running rollout's id and the anchor's canary list
    (``protocol.anchor.canaries``), to mark its canaries.
    """
    block: SharedBlock
    try:
        try:
            block = table.open_table(name, writable=reclaim, trusted_uids=trusted_uids)
        except PermissionError as exc:
            if isinstance(exc, SegmentError):
                raise
            block = table.open_table(name, writable=False, trusted_uids=trusted_uids)
    except FileNotFoundError:
        return [], False, "the reader table is missing (the publisher makes it again)"
    except (PermissionError, SegmentError) as exc:
        return [], False, f"the reader table cannot be read: {exc}"
    with block:
        if not table.SUPPORTED:
            return [], False, "reader listing needs Linux (open file description locks)"
        readers = [
            ReaderStatus(e.pid, e.generation, e.alive, e.idle_adoption, e.refused, e.adopted_ns,
                         e.canary_in(rollout))
            for e in table.entries(block, rollout, canaries)
        ]
        full = table.is_full(block)
        if reclaim:
            table.reclaim_dead(block)
    return readers, full, None


#: Attempts to read a slot's meta while a publish rewrites it.
_META_ATTEMPTS: Final = 50


def _published_meta(
    name: str, words: memoryview, trusted_uids: frozenset[int]
) -> tuple[int, dict[str, Any], int, int]:
    """``(generation, meta, published_ns, used bytes)`` of the published slot.

    Reads the data segment's header and the slot's header and meta only;
    ``({}, 0, 0)`` with the anchor's generation when there is none or it
    cannot be read (status must still show the rest).
    """
    generation = int(words[L.A_GENERATION])
    serial = int(words[L.A_DATA_SERIAL])
    if not generation or not serial:
        return generation, {}, 0, 0
    try:
        block, capacity, stride = open_data(name, serial, writable=False,
                                            trusted_uids=trusted_uids)
    except (OSError, ShmconfError):
        return generation, {}, 0, 0
    try:
        for _ in range(_META_ATTEMPTS):
            generation = int(words[L.A_GENERATION])
            found = read_slot_meta(block, generation, stride, capacity)
            if found is None:
                time.sleep(0.001)
                continue
            raw, published_ns, used = found
            try:
                meta = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                continue  # torn while copied: read again
            if isinstance(meta, dict):
                return generation, meta, published_ns, used
        return generation, {}, 0, 0
    finally:
        block.close()
