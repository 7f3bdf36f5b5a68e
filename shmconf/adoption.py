"""Idle adoption: a thread that adopts each new generation as soon as it is published.

Without it a worker adopts a new generation on its next ``get()``: a worker
that serves no request keeps the old one, runs no change callback and shows
as behind in ``shmconf status``. The adoption thread sleeps on the anchor's
wake word (``protocol/wake.py``), a ``futex`` the publisher wakes after every
publish: while nothing is published it costs no CPU at all, and one publish
wakes every worker of the host at once. It wakes on its own only every
:data:`BACKSTOP_S` seconds, which bounds the delay if a wake-up were ever
missed (a publisher of an older version, say).

The thread does what a ``get()`` would do: the copy, the checks, the parse,
the callbacks, all off the request path. It holds the GIL only while it
parses (as a request would) and never while it sleeps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from shmconf.protocol import layout as L
from shmconf.protocol import wake

if TYPE_CHECKING:
    from shmconf.protocol.block import SharedBlock
    from shmconf.reader import Reader

log = logging.getLogger("shmconf.reader")

#: Longest sleep without a wake-up, in seconds. Every publisher of this layout
#: wakes its readers, so this only bounds what nothing else would (a wake
#: lost to a bug); each wake-up of 32 idle workers costs about 0.01 % of a
#: core at this period (docs/bench.md).
BACKSTOP_S: Final = 30.0
#: How often to look while the anchor is retired (its name was unlinked) or
#: where there is no futex (not Linux), in seconds.
POLL_S: Final = 0.5
#: A wake with no news (the count unchanged) comes from a reader closing, or
#: from anyone who can open the anchor calling FUTEX_WAKE in a loop (waking
#: needs no write access). After one, the thread rests this long before it
#: sleeps on the word again, so such a loop costs each reader at most 20
#: wake-ups a second.
SPURIOUS_REST_S: Final = 0.05
#: While a rollout runs, how often the thread writes this process's health
#: counts into the reader table, for the publisher to judge the candidate.
ROLLOUT_FLUSH_S: Final = 0.25


class IdleAdopter:
    """The adoption thread of one reader. Use :meth:`Reader.start_idle_adoption`."""

    def __init__(self, reader: Reader[Any]) -> None:
        self._reader = reader
        self._stop = threading.Event()
        self._word: wake.WakeWord | None = None
        self._mapped_for: SharedBlock | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"shmconf-adopt-{reader.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (never from the thread itself).

        The wake is repeated until the thread has gone: one sent between its
        last check of the stop flag and its sleep would otherwise be lost,
        and the thread would sleep until its backstop.
        """
        self._stop.set()
        if self._thread is threading.current_thread():
            return
        deadline = time.monotonic() + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            word = self._word
            if word is not None:
                # Wakes every sleeper of this anchor on the host: each finds no
                # news and sleeps again. A ValueError: unmapped by the thread
                # meanwhile, on its way out.
                with contextlib.suppress(ValueError):
                    word.wake_all()
            self._thread.join(timeout=0.01)

    def forget_after_fork(self) -> None:
        """In a forked child: the thread is gone; release the child's copy of the page."""
        self._stop.set()
        if self._word is not None:
            self._word.close()
            self._word = None

    def _run(self) -> None:
        from shmconf.reader import adoption_thread

        adoption_thread.active = True  # a large payload is parsed in pieces here
        try:
            while not self._stop.is_set():
                if not self._sleep_until_news():
                    return
                if self._stop.is_set():
                    return
        finally:
            if self._word is not None:
                self._word.close()
                self._word = None

    def _sleep_until_news(self) -> bool:
        """Adopt what is published, then sleep until the next publish; False: reader closed."""
        reader = self._reader
        anchor = reader._anchor
        if anchor is None:
            return False
        try:
            words = anchor.words
            if anchor is not self._mapped_for:
                self._remap(anchor)
            seen = words[L.A_WAKE] & 0xFFFFFFFF
            retired = bool(words[L.A_FLAGS] & L.FLAG_RETIRED)
            rollout = bool(words[L.A_ROLLOUT])
        except ValueError:
            return False  # closed by another thread meanwhile
        try:
            reader._check_role()  # a canary of a rollout, or not (any more)
            reader.get()  # the fast path when nothing changed
            reader._relist_if_table_removed()
            if rollout:
                reader._flush_health()
        except ValueError:
            return not reader.closed
        except BaseException:
            # get() keeps the last good snapshot; this thread must never die of it
            # (a callback's SystemExit included: it would leave a canary behind).
            log.exception("config %r: adopting a new generation failed", reader.name)
        word = self._word
        if word is None or retired:
            self._stop.wait(ROLLOUT_FLUSH_S if rollout else POLL_S)
        else:
            started = time.monotonic()
            timeout = ROLLOUT_FLUSH_S if rollout else BACKSTOP_S
            word.wait(seen, timeout)
            if (word.value() == seen and time.monotonic() - started < timeout
                    and not self._stop.is_set()):
                self._stop.wait(SPURIOUS_REST_S)  # woken with no news: see SPURIOUS_REST_S
        return True

    def _remap(self, anchor: SharedBlock) -> None:
        if self._word is not None:
            self._word.close()
            self._word = None
        if wake.available():
            try:
                self._word = wake.WakeWord(anchor.fileno())
            except OSError as exc:  # no memory for one more mapping: poll instead
                log.warning("config %r: cannot map the wake word (%s); adopting by polling "
                            "every %gs", self._reader.name, exc, POLL_S)
        self._mapped_for = anchor
