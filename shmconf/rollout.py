"""Rollouts: a change goes to a few canary workers first, then to all, or back.

A :class:`Rollout` is the policy (how many canaries, how long to bake, the
growth steps, the health thresholds); a :class:`RolloutRun` is one rollout of
one candidate, driven by the publisher's service loop (``Publisher.rollout_tick``)
until it decides. The mechanics live elsewhere: the writer publishes a
candidate that only canaries read and promotes it (``writer.py``), readers
count their requests and failures and find out that they are canaries
(``reader.py``, ``adoption.py``); the anchor lists the canaries and the
reader table carries the counts (``protocol/``). docs/rollout.md tells the
whole story.

The decision, on every tick of a running rollout:

1. ``LOST_CANARIES_LIMIT`` canaries exited soon after they became canaries, a
   canary refused it (its model rejected it), or a health check or change
   callback failed in one: roll back at once;
2. the canaries served at least ``min_requests`` requests (1 when it is 0) and
   their failure ratio exceeds the other workers' by more than
   ``max_failure_increase``: roll back;
3. the step has baked for ``bake_s``, every canary holds the candidate and
   finished its health checks, and the canaries served at least
   ``min_requests``: go to the next step (more canaries), or promote after
   the last. Otherwise the step keeps baking (``status`` says what it waits
   for: canaries, a canary listed again, checks, requests) until it can go
   on or a person decides (``shmconf rollout NAME promote|abort``). Nothing
   is promoted without canaries.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shmconf.protocol import layout as L
from shmconf.protocol.table import ReaderEntry
from shmconf.status import pid_alive

_PERCENT_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")


def _check_size(value: int | str, what: str) -> int | str:
    """A number of workers (>= 1) or a share ``"P%"`` (0 < P <= 100)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of workers or a share like '10%', got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{what} must be at least 1 worker, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return _check_size(int(text), what)
        found = _PERCENT_RE.fullmatch(text)
        if found and 0 < float(found.group(1)) <= 100:
            return text
    raise ValueError(f"{what} must be a number of workers or a share like '10%', got {value!r}")


def _number(value: object) -> bool:
    """An int or a float, and not a bool (``True`` is an int to Python, not a count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def workers_for(size: int | str, eligible: int) -> int:
    """How many of ``eligible`` workers ``size`` (a count or ``"P%"``) means: at least 1."""
    if isinstance(size, int):
        return min(size, eligible)
    share = float(size.rstrip("%")) / 100
    return min(eligible, max(1, math.ceil(share * eligible)))


@dataclass(frozen=True)
class Rollout:
    """How a new version reaches the workers: canaries, bake, steps, health thresholds.

    Args:
        canary: workers that get a new version first: a number, or a share
            of the workers like ``"10%"`` (at least one).
        bake_s: seconds each step runs before it is judged.
        steps: further steps after the canaries, each a number or a share
            (``("25%",)``: the canaries, then a quarter, then all).
        min_requests: requests the canaries must serve before their failure
            ratio is compared and a step may pass (0: time alone decides).
            With fewer, a few failures are noise: at 50, workers that fail
            1 % of requests when healthy roll back about one good change in
            600 (docs/rollout.md).
        max_failure_increase: roll back when the canaries' failure ratio
            exceeds the other workers' by more than this (0.05: five
            percentage points).
    """

    canary: int | str = 1
    bake_s: float = 60.0
    steps: tuple[int | str, ...] = ()
    min_requests: int = 50
    max_failure_increase: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "canary", _check_size(self.canary, "canary"))
        steps: Any = self.steps
        if isinstance(steps, str):  # "25%,50%", as the CLI takes it; not its characters
            steps = [part for part in steps.split(",") if part.strip()]
        object.__setattr__(self, "steps", tuple(_check_size(s, "a rollout step")
                                                for s in steps))
        if not (_number(self.bake_s) and math.isfinite(self.bake_s) and self.bake_s >= 0):
            raise ValueError(f"bake_s must be a finite number of seconds >= 0, got "
                             f"{self.bake_s!r}")
        if not (_number(self.min_requests) and isinstance(self.min_requests, int)
                and self.min_requests >= 0):
            raise ValueError(f"min_requests must be a whole number >= 0, got "
                             f"{self.min_requests!r}")
        if not (_number(self.max_failure_increase) and 0 <= self.max_failure_increase <= 1):
            raise ValueError("max_failure_increase must be between 0 and 1, got "
                             f"{self.max_failure_increase!r}")

    @classmethod
    def of(cls, value: Rollout | Mapping[str, Any] | None) -> Rollout | None:
        """A policy from a :class:`Rollout`, its keywords as a mapping (JSON), or ``None``."""
        if value is None or isinstance(value, Rollout):
            return value
        if isinstance(value, Mapping):
            options = dict(value)
            if "steps" in options and not isinstance(options["steps"], str):
                options["steps"] = tuple(options["steps"])
            try:
                return cls(**options)
            except TypeError as exc:
                raise ValueError(f"rollout: {exc}") from None
        raise TypeError(f"rollout must be a shmconf.Rollout or a mapping, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """The policy as plain values (for a publisher process, and ``status``)."""
        return {"canary": self.canary, "bake_s": self.bake_s, "steps": list(self.steps),
                "min_requests": self.min_requests,
                "max_failure_increase": self.max_failure_increase}

    @property
    def sizes(self) -> tuple[int | str, ...]:
        """Every step's size, the canaries first; all workers come after the last."""
        return (self.canary, *self.steps)


@dataclass
class Health:
    """Requests and failures summed over a group of workers."""

    workers: int = 0
    requests: int = 0
    failures: int = 0
    checks_failed: int = 0

    @property
    def ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def add(self, entry: ReaderEntry, rollout: int) -> None:
        requests, failures, checks = entry.counts_in(rollout)
        self.workers += 1
        self.requests += requests
        self.failures += failures
        self.checks_failed += checks

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "requests": self.requests, "failures": self.failures,
                "checks_failed": self.checks_failed, "failure_ratio": round(self.ratio, 4)}


@dataclass
class Verdict:
    """What a tick decided: ``wait``, ``grow`` (assign ``assign``), ``step``, ``promote``
    or ``rollback``."""

    action: str
    reason: str = ""
    #: ``grow``: the workers to pick ``count`` new canaries from, best first.
    assign: list[ReaderEntry] = field(default_factory=list)
    count: int = 0


#: Canaries that exit soon after they became canaries (within LOST_WINDOW_S)
#: before that alone rolls the candidate back: a candidate that kills the
#: workers that adopt it does that at once, where a worker recycled now and
#: then (gunicorn's max_requests) exits at any time, and is then replaced.
LOST_CANARIES_LIMIT: Final = 2
#: See LOST_CANARIES_LIMIT, in seconds.
LOST_WINDOW_S: Final = 10.0


#: How long a listed canary may be missing from the reader table (truncated,
#: or made again) before the rollout stops waiting for it, in seconds: its
#: reader writes its entry every 0.25 s and checks for a new table every 1 s.
MISSING_CANARY_S: Final = 3.0


@dataclass
class RolloutRun:
    """One rollout of one candidate; the publisher keeps it and calls :meth:`judge`."""

    policy: Rollout
    id: int
    candidate: int
    stable: int
    digest: str
    data: dict[str, Any]
    started_ns: int = field(default_factory=time.time_ns)
    step: int = 0
    step_started: float = field(default_factory=time.monotonic)
    #: The canaries this publisher listed in the anchor, by its own record
    #: (table entry -> pid): a group member can write the table, not this.
    canaries: dict[int, int] = field(default_factory=dict)
    canary_health: Health = field(default_factory=Health)
    stable_health: Health = field(default_factory=Health)
    waiting: str = ""
    #: Listed canaries whose process exited within LOST_WINDOW_S of their listing.
    lost: int = 0
    #: Workers that could become canaries, from the last full look at the table.
    eligible: list[ReaderEntry] = field(default_factory=list)
    #: The current step got its canaries (its bake counts from then).
    _staffed: bool = False
    #: Listed canaries not found in the table, since when (table entry -> time).
    _missing_since: dict[int, float] = field(default_factory=dict)
    #: When each canary was listed (or, carried over, got this candidate).
    _listed_at: dict[int, float] = field(default_factory=dict)
    #: The anchor's list names a canary this record dropped: write it again.
    relist: bool = False

    def __post_init__(self) -> None:
        for slot in self.canaries:  # a replaced candidate's: this one reaches them now
            self._listed_at[slot] = self.step_started

    def listed(self, slot: int, pid: int) -> None:
        """Record a canary this publisher just listed in the anchor."""
        self.canaries[slot] = pid
        self._listed_at[slot] = time.monotonic()

    def judge(
        self, entries: Sequence[ReaderEntry], now: float | None = None, *, full: bool = True
    ) -> Verdict:
        """Decide from the reader table's ``entries`` what happens now.

        ``entries`` must hold the listed canaries' entries with their locks
        asked (``alive``); ``full``: they are the whole table, so the other
        workers' health and the eligible workers are counted again (the
        publisher does that once a second, the canaries every tick).
        """
        now = time.monotonic() if now is None else now
        canaries, missing = self._find_canaries(entries, now)
        canary = Health()
        for entry in canaries:
            if entry.refused == self.candidate:
                return Verdict("rollback", f"worker {entry.pid} refused it (its model rejects "
                                           "the candidate)")
            if entry.generation == self.candidate:
                canary.add(entry, self.id)
        self.canary_health = canary
        if full:
            stable = Health()
            for entry in entries:
                if entry.slot not in self.canaries and entry.generation == self.stable:
                    stable.add(entry, self.id)  # no lock asked: a dead one's counts count
            self.stable_health = stable
            self.eligible = [e for e in entries if e.idle_adoption and e.pid
                             and e.slot not in self.canaries]
        if self.lost >= LOST_CANARIES_LIMIT:
            return Verdict("rollback", f"{self.lost} canaries exited within "
                           f"{LOST_WINDOW_S:g} s of becoming canaries")
        verdict = self._judge_health(canaries)
        if verdict is not None:
            return verdict
        if missing:
            self.waiting = ("waiting for canary " + ", ".join(map(str, missing)) + " to be "
                            "listed in the reader table again")
            return Verdict("wait", self.waiting)
        return self._progress(canaries, now)

    def _find_canaries(
        self, entries: Sequence[ReaderEntry], now: float
    ) -> tuple[list[ReaderEntry], list[int]]:
        """The listed canaries' live entries, and the pids of those not in the table now.

        A listed canary whose process exited leaves the record and counts
        as lost. One whose process lives but whose entry is gone (the table
        was made again, and it took another entry, which is not listed: it is
        no canary any more) leaves the record after MISSING_CANARY_S; until
        then it may be a truncated table that its reader writes again.
        """
        by_slot = {e.slot: e for e in entries}
        canaries, missing = [], []
        for slot, pid in list(self.canaries.items()):
            entry = by_slot.get(slot)
            if entry is not None and entry.pid == pid and entry.alive:
                canaries.append(entry)
                self._missing_since.pop(slot, None)
            elif not pid_alive(pid):  # it exited (a zombie too), whatever it held
                del self.canaries[slot]
                self._missing_since.pop(slot, None)
                self.lost += now - self._listed_at.pop(slot, now) < LOST_WINDOW_S
            elif now - self._missing_since.setdefault(slot, now) >= MISSING_CANARY_S:
                del self.canaries[slot]  # moved to an entry that is not listed
                del self._missing_since[slot]
                self.relist = True  # and its old entry must not make it one again
            else:
                missing.append(pid)
        return canaries, missing

    def _judge_health(self, canaries: list[ReaderEntry]) -> Verdict | None:
        """A rollback verdict when the canaries are unhealthy, else None."""
        canary, stable = self.canary_health, self.stable_health
        if canary.checks_failed:
            failing = [e.pid for e in canaries if e.counts_in(self.id)[2]]
            return Verdict("rollback", "a health check or change callback failed in worker "
                           + ", ".join(map(str, failing)))
        judged = canary.requests >= max(self.policy.min_requests, 1)
        if judged and canary.ratio - stable.ratio > self.policy.max_failure_increase:
            return Verdict("rollback", f"the canaries failed {canary.failures} of "
                           f"{canary.requests} requests ({canary.ratio:.1%}), the other workers "
                           f"{stable.failures} of {stable.requests} ({stable.ratio:.1%})")
        return None

    def _progress(self, canaries: list[ReaderEntry], now: float) -> Verdict:
        """Healthy so far: more canaries, more baking, the next step, or promote."""
        eligible = [e for e in self.eligible if e.slot not in self.canaries]
        wanted = min(workers_for(self.policy.sizes[self.step], len(eligible) + len(canaries)),
                     L.CANARY_LIST_MAX)
        if len(canaries) < wanted:
            # Each step's canaries (and a canary that exited) are made up
            # from the workers that still hold the stable version.
            others = list(eligible)
            random.shuffle(others)
            others.sort(key=lambda e: e.generation != self.stable)
            return Verdict("grow", assign=others, count=wanted - len(canaries))
        if not canaries:
            self.waiting = ("no worker can be a canary (none is attached with idle adoption): "
                            "the rollout waits for one, or for `shmconf rollout NAME promote`")
            return Verdict("wait", self.waiting)
        self.staffed(now)  # enough canaries: if they just came, the bake starts now
        self.waiting = self._unready(canaries, now)
        if self.waiting or now - self.step_started < self.policy.bake_s:
            return Verdict("wait", self.waiting)
        if self.step + 1 < len(self.policy.sizes):
            return Verdict("step")
        canary = self.canary_health
        return Verdict("promote", f"healthy after {len(self.policy.sizes)} step(s): the "
                       f"canaries failed {canary.failures} of {canary.requests} requests")

    def _unready(self, canaries: list[ReaderEntry], now: float) -> str:
        """What a baked step still waits for, or "" (nothing, or the bake itself)."""
        if now - self.step_started < self.policy.bake_s:
            return ""
        unsettled = [e.pid for e in canaries if e.generation != self.candidate or e.checking]
        if unsettled:
            return ("waiting for canary " + ", ".join(map(str, unsettled)) + " to adopt the "
                    "candidate and finish its health checks")
        served = self.canary_health.requests
        if served >= self.policy.min_requests:
            return ""
        waiting = (f"waiting for requests: the canaries served {served} of "
                   f"{self.policy.min_requests}")
        if not served and not self.stable_health.requests:
            waiting += (" (no worker counted any: are the request-counting hooks or "
                        "middleware installed? docs/rollout.md)")
        return waiting

    def next_step(self) -> None:
        self.step += 1
        self.step_started = time.monotonic()
        self._staffed = False

    def staffed(self, now: float | None = None) -> None:
        """Canaries were just assigned: the step's bake starts now, the first time."""
        if not self._staffed:
            self._staffed = True
            self.step_started = time.monotonic() if now is None else now

    def to_json(self) -> dict[str, Any]:
        """The rollout as ``status`` shows it."""
        ends = self.step_started + self.policy.bake_s
        return {
            "id": self.id, "candidate": self.candidate, "stable": self.stable,
            "started_ns": self.started_ns, "step": self.step + 1,
            "steps": len(self.policy.sizes), "step_size": self.policy.sizes[self.step],
            "bake_left_s": round(max(0.0, ends - time.monotonic()), 2),
            "canaries": sorted(self.canaries.values()),
            "canary_health": self.canary_health.to_json(),
            "stable_health": self.stable_health.to_json(),
            "waiting": self.waiting, "policy": self.policy.to_json(),
        }
