"""gunicorn server hooks: a publisher next to the master, a reader in every worker.

In ``gunicorn.conf.py``::

    from shmconf.integrations.gunicorn import ShmconfHooks
    from myapp.settings import Settings

    hooks = ShmconfHooks("myapp", sources=["app.yaml"], model=Settings)
    on_starting, post_fork, on_exit = hooks.on_starting, hooks.post_fork, hooks.on_exit
    on_reload, worker_exit = hooks.on_reload, hooks.worker_exit   # optional
    pre_request, post_request = hooks.pre_request, hooks.post_request  # rollouts

and in the application, ``shmconf.current()``.

With a rollout (``ShmconfHooks(..., rollout={"canary": 1, "bake_s": 60})``,
docs/rollout.md) the publisher judges a new version by the requests its
canary workers serve. ``post_request`` counts them: one request per call, a
failure when the app raised or answered 5xx. ``pre_request`` is optional: it
notes the generation a request started under, so that a request during which
the worker switched versions counts for neither. Both are gunicorn's own
server hooks, run by the sync, gthread, eventlet and gevent workers; uvicorn
workers do not run them, and there the ASGI wrapper of
:mod:`shmconf.integrations.uvicorn` counts instead. Use these hooks or
:class:`shmconf.integrations.wsgi.HealthMiddleware`, not both; should both be
installed, the middleware marks the requests it counted in the environ and
``post_request`` leaves them alone.

Why the publisher is a child process and not a thread of the master:
gunicorn forks its workers from the master, and ``fork`` copies a thread's
memory but not the thread. A publisher thread in the master would leave every
worker with a copy of a writer that nobody drives, holding what the master
held at that instant (the writer lock's descriptor, the watcher's state).
So ``on_starting`` starts a separate interpreter with
:class:`~shmconf.integrations.process.PublisherProcess` (the name, the file
paths and the model's import string travel as JSON; nothing is pickled) and
waits for its first publish: workers forked afterwards can attach at once,
and an invalid initial config stops gunicorn with its message. The master's
child is a small supervisor (:mod:`shmconf.integrations.supervisor`) that
runs the publisher and restarts it with backoff if it dies: gunicorn's
master reaps unknown children itself and has no timer to do it.

``kill -HUP`` of the master re-reads gunicorn's config file, which builds a
new ``ShmconfHooks``; the running publisher is kept in this module, by name,
so the new hooks find it. ``on_reload`` then asks it to reload its sources
(or restarts it when the config file changed its sources or options, or
starts it again if it had died), and the new workers attach as usual.
``on_exit`` stops the publisher and removes the segment and the lock file.

``kill -USR2`` (gunicorn's binary upgrade) starts a second master next to
the first. Its ``on_starting`` finds the old master's publisher running and
starts its own as a standby: it waits for the writer lock while the new
workers attach to the segment the old publisher keeps current. When the old
master exits, its ``on_exit`` stops its publisher but keeps the segment (a
successor master is running), the standby takes over within a second and
continues the generation count. If the upgrade is abandoned instead (the new
master is stopped), its standby just goes away, leaving the segment to the
old master.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from shmconf.errors import ShmconfError
from shmconf.integrations._worker import (
    COUNTED_KEY,
    AttachHook,
    attach_worker,
    detach_worker,
    existing_reader,
    model_spec,
)
from shmconf.integrations.process import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    PublisherProcess,
)
from shmconf.protocol.layout import validate_name

if TYPE_CHECKING:
    from shmconf.reader import Reader

log = logging.getLogger("shmconf.integrations.gunicorn")

#: Seconds a worker waits in ``post_fork`` for the segment.
DEFAULT_ATTACH_TIMEOUT_S: Final = 10.0

#: Running publishers by config name. A module global on purpose: gunicorn's
#: HUP re-executes the config file, and the new hooks must find the publisher
#: that the old ones started (this module is imported once per master).
_publishers: dict[str, PublisherProcess] = {}


class ShmconfHooks:
    """gunicorn hooks that publish ``sources`` as ``name`` and attach every worker.

    Args:
        name: the config's name.
        sources: files (or source URLs) to publish. Empty: the publisher runs
            elsewhere (``shmconf publish``) and the hooks only attach workers.
        model: a pydantic model class importable by its module and name, or
            its import string ``"pkg.mod:Class"``.
        attach_timeout_s: how long ``post_fork`` waits for the segment.
        start_timeout_s: how long ``on_starting`` waits for the initial publish.
        stop_timeout_s: how long ``on_exit`` waits before it kills the publisher.
        idle_adoption: each worker adopts a new generation as soon as it is
            published, on a thread that sleeps until then, so idle workers
            run their change callbacks and ``status --wait-for`` converges.
        refresh_interval_s: deprecated; means ``idle_adoption=True``.
        trusted_owner: the user (name or uid) a publisher that runs elsewhere
            runs as, when it is not the workers' (``shmconf publish --group``).
        on_attach: ``on_attach(reader)``, called in each worker after it
            attached (register change callbacks here).
        metrics_port: serve the publisher's Prometheus metrics on this port.
        unlink_on_exit: remove the segment and the lock file in ``on_exit``.
        **publisher_options: keywords for :class:`~shmconf.Publisher`
            (``debounce``, ``poll``, ``history``, ``runtime_dir``, ...);
            ``rollout`` takes a :class:`~shmconf.Rollout` or its keywords
            (install ``post_request`` too, which counts the requests).

    Building the hooks does nothing else: gunicorn builds them again on every
    HUP, and ``gunicorn --check-config`` builds them without running them.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[str | os.PathLike[str]] = (),
        model: type[Any] | str | None = None,
        *,
        attach_timeout_s: float = DEFAULT_ATTACH_TIMEOUT_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        idle_adoption: bool = True,
        refresh_interval_s: float | None = None,
        trusted_owner: int | str | None = None,
        on_attach: AttachHook | None = None,
        metrics_port: int | None = None,
        unlink_on_exit: bool = True,
        **publisher_options: Any,
    ) -> None:
        self.name = validate_name(name)
        self.model, _ = model_spec(model)
        self.attach_timeout_s = attach_timeout_s
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.idle_adoption = idle_adoption
        self.refresh_interval_s = refresh_interval_s
        self.trusted_owner = trusted_owner
        self.on_attach = on_attach
        # Build (and so check) the publisher's spec now: a typo in an option
        # fails when gunicorn reads its config, not in a hook.
        self._process = (
            PublisherProcess(
                name, sources, model, unlink_on_exit=unlink_on_exit,
                metrics_port=metrics_port, **publisher_options,
            )
            if sources
            else None
        )
        if not sources and (publisher_options or metrics_port is not None):
            options = sorted({*publisher_options, *(["metrics_port"] if metrics_port else [])})
            raise TypeError(
                f"ShmconfHooks({name!r}) got publisher options {', '.join(options)} but no "
                "sources: without sources the hooks start no publisher (it runs elsewhere, "
                "e.g. `shmconf publish`), so pass them there, or give sources="
            )

    @property
    def publisher(self) -> PublisherProcess | None:
        """The publisher process serving this name in the master, if any."""
        return _publishers.get(self.name)

    # -- master ------------------------------------------------------------------

    def on_starting(self, server: Any) -> None:
        """Start the publisher and wait for its first publish (gunicorn ``on_starting``).

        Raises :class:`~shmconf.integrations.process.PublisherStartError` (a
        ``RuntimeError``: gunicorn prints ``Error: <why>`` and exits 1) when the
        initial config is missing or invalid or the name has a publisher already.
        """
        if self._process is None:
            return
        running = _publishers.get(self.name)
        if running is not None and running.alive:
            return
        self._start(server, standby=_old_master_runs(server))

    def _start(
        self, server: Any, process: PublisherProcess | None = None, *, standby: bool = False
    ) -> None:
        assert self._process is not None
        process = (process or self._process).clone()
        generation = process.start(self.start_timeout_s, standby=standby)
        _publishers[self.name] = process
        if standby:
            _log(server).info("shmconf: publisher of %r (pid %s) stands by for the old "
                              "master's", self.name, process.pid)
        else:
            from shmconf.status import collect

            # The child is the supervisor; the publisher is its child (the
            # one to look for in `ps`, and the one `status` names).
            try:
                publisher_pid = collect(self.name, reclaim=False).publisher_pid
            except ShmconfError:
                publisher_pid = None
            _log(server).info("shmconf: publishing %r (generation %d) from pid %s, "
                              "supervised by pid %s", self.name, generation,
                              publisher_pid or "?", process.pid)

    def on_reload(self, server: Any) -> None:
        """On ``kill -HUP`` of the master: reload the sources now (gunicorn ``on_reload``).

        Runs after gunicorn re-read its config file. A publisher whose sources
        or options the file changed is restarted with the new ones; one that
        died is started again. A failure is logged and the workers keep the
        last published config: a bad reload must not take the master down.
        """
        if self._process is None:
            return
        running = _publishers.get(self.name)
        try:
            if running is None or not running.alive:
                _log(server).warning("shmconf: publisher of %r was not running; starting it",
                                     self.name)
                if running is not None:
                    # Reap it and close its socket; keep the segment workers read.
                    running.stop(self.stop_timeout_s, unlink=False)
                    del _publishers[self.name]
                self._start(server, standby=_old_master_runs(server))
            elif running.spec != self._process.spec:
                self._restart(server, running)
            else:
                running.reload()
        except ShmconfError as exc:
            _log(server).error("shmconf: %s; workers keep the last published config", exc)
        except Exception:
            # gunicorn would stop the master on an exception from a hook; a
            # failed reload must leave it (and the workers' config) running.
            _log(server).exception("shmconf: reload of %r failed; workers keep the last "
                                   "published config", self.name)

    def _restart(self, server: Any, running: PublisherProcess) -> None:
        """Replace the publisher with one built from the new config file."""
        _log(server).info("shmconf: publisher options of %r changed; restarting it", self.name)
        # Keep the segment: workers go on reading it while the new one starts,
        # and the new publisher continues its generation count.
        running.stop(self.stop_timeout_s, unlink=False)
        del _publishers[self.name]
        standby = _old_master_runs(server)
        try:
            self._start(server, standby=standby)
        except ShmconfError:
            # Last known good: bring back the publisher that worked.
            self._start(server, running, standby=standby)
            raise

    def on_exit(self, server: Any) -> None:
        """Stop the publisher; remove the segment and lock file (gunicorn ``on_exit``).

        While another master of a USR2 upgrade runs (this one's successor or
        its parent), the segment stays: that master's workers read it and
        its publisher takes over (or keeps) the name.
        """
        process = _publishers.pop(self.name, None)
        if process is None:
            return
        other_master = _old_master_runs(server) or bool(getattr(server, "reexec_pid", 0))
        process.stop(self.stop_timeout_s, unlink=False if other_master else None)
        _log(server).info("shmconf: publisher of %r stopped%s", self.name,
                          "; the segment stays for the other master" if other_master else "")

    # -- workers -----------------------------------------------------------------

    def post_fork(self, server: Any, worker: Any) -> None:
        """Attach this worker and make it the process reader (gunicorn ``post_fork``).

        Afterwards ``shmconf.current()`` and ``shmconf.current_reader()`` work in the
        worker. A worker that cannot attach fails to boot, with the reason.
        """
        reader = attach_worker(
            self.name, self.model, timeout=self.attach_timeout_s,
            idle_adoption=self.idle_adoption, refresh_interval_s=self.refresh_interval_s,
            on_attach=self.on_attach, trusted_owner=self.trusted_owner,
        )
        _log(server).debug("shmconf: worker %s attached to %r at generation %d",
                           os.getpid(), self.name, reader.generation)
        counted = getattr(getattr(worker, "cfg", None), "post_request", None)
        if (self._process is not None and self._process.spec["options"].get("rollout")
                and getattr(counted, "__self__", None) is not self
                and not _uvicorn_worker(worker)):
            # Without it no request is counted: every rollout waits for requests.
            _log(server).warning("shmconf: %r rolls changes out, but this gunicorn config "
                                 "does not set post_request = hooks.post_request: workers "
                                 "count no requests (docs/gunicorn.md, Rollouts)", self.name)

    def worker_exit(self, server: Any, worker: Any) -> None:
        """Close this worker's reader (gunicorn ``worker_exit``; optional).

        Frees the worker's reader-table entry at once; without this hook the
        entry is freed when ``shmconf status`` finds the process gone.
        """
        detach_worker(self.name)

    # -- requests: health for rollouts (docs/rollout.md) ------------------------------

    def pre_request(self, worker: Any, req: Any) -> None:
        """Note the generation the request starts under (gunicorn ``pre_request``; optional).

        With it, :meth:`post_request` leaves out a request during which this
        worker switched versions: its outcome belongs to neither. Never raises.
        """
        try:
            reader = existing_reader(self.name)
            if reader is not None:
                req.shmconf_generation = reader.generation
        except Exception:  # noqa: S110 - a hook must never fail a request
            pass

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        """Count the request for the version this worker holds (gunicorn ``post_request``).

        A failure is a request the app raised on (gunicorn answers 500 itself;
        also after the response started) or answered with a 5xx status. A
        request that never reached the app (gunicorn could not parse it) is
        not counted, nor one that :class:`~shmconf.integrations.wsgi.HealthMiddleware`
        counted already. gunicorn runs this in a ``finally``, after every
        request; it never raises, and costs a few attribute loads.
        """
        try:
            reader = existing_reader(self.name)
            if (reader is None or resp is None
                    or getattr(req, "shmconf_generation", reader.generation) != reader.generation
                    or (environ and environ.get(COUNTED_KEY))):
                return
            status = getattr(resp, "status_code", None)  # set by start_response
            # Inside gunicorn's `finally`: the exception on its way out, if
            # any. A client that went away (OSError) is not the app's failure.
            raised = sys.exc_info()[0]
            reader.count_request(
                failed=status is None or status >= 500
                or (raised is not None and not issubclass(raised, OSError))
            )
        except Exception:  # noqa: S110 - a hook must never fail a request
            pass

    def reader(self) -> Reader[Any]:
        """This worker's reader (the same as ``shmconf.current_reader()``)."""
        from shmconf import _current

        return _current.current_reader()


def _uvicorn_worker(worker: Any) -> bool:
    """An ASGI worker class: the lifespan wrapper counts requests there, not post_request."""
    return "uvicorn" in type(worker).__module__


def _old_master_runs(server: Any) -> bool:
    """Whether this master was started by USR2 and its old master still runs.

    That master's publisher holds the name, so this one's must stand by.
    gunicorn sets ``master_pid`` in the new master and resets it in its main
    loop once the old master is gone; the parent check, which is gunicorn's
    own, does not wait for that loop.
    """
    old_master = getattr(server, "master_pid", 0)
    return bool(old_master) and old_master == os.getppid()


def _log(server: Any) -> Any:
    """gunicorn's error log when there is a server, else this module's logger."""
    return getattr(server, "log", None) or log
