"""ASGI: attach each worker at lifespan startup, pin one snapshot per request.

::

    from shmconf.integrations.uvicorn import lifespan

    app = lifespan(app, "myapp", model=Settings)

Works wherever the ASGI lifespan runs once per worker process: ``uvicorn
--workers N``, gunicorn with uvicorn workers, hypercorn. At startup the
wrapper attaches the worker (``shmconf.current()`` and ``shmconf.current_reader()``
work from then on) and then runs the wrapped app's own lifespan, if it has
one; at shutdown it closes the reader. Each HTTP request runs inside
``reader.pinned()``: ``shmconf.current()`` returns one snapshot for
the whole request, whatever is published meanwhile.

Each HTTP request is also counted for rollouts (docs/rollout.md): the
publisher judges a new version by the requests its canary workers serve. A
request fails when the app raises (the exception goes on to the server) or
answers 5xx, or returns without starting a response; a request during which
the worker switched versions counts for neither. This works under gunicorn's
uvicorn workers too, which do not run gunicorn's ``pre_request`` and
``post_request`` hooks.

No publisher is started here: ``uvicorn --workers N`` has no master hook
that could own one. Run ``shmconf publish`` next to the server (a systemd
unit, a sidecar), or start a
:class:`~shmconf.integrations.process.PublisherProcess` in the script that
launches uvicorn. Under gunicorn, :class:`~shmconf.integrations.gunicorn.ShmconfHooks`
can own it; the wrapper then reuses the reader ``post_fork`` attached.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from shmconf.integrations._worker import AttachHook, attach_worker, detach_worker, existing_reader

if TYPE_CHECKING:
    from shmconf.reader import Reader

log = logging.getLogger("shmconf.integrations.uvicorn")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Loose on purpose: apps annotate their scope as dict, MutableMapping or a TypedDict.
ASGIApp = Callable[..., Awaitable[None]]


class ShmconfLifespan:
    """The ASGI app that :func:`lifespan` returns; see there."""

    def __init__(
        self,
        app: ASGIApp,
        name: str,
        model: type[Any] | None = None,
        *,
        timeout: float = 5.0,
        idle_adoption: bool = True,
        refresh_interval_s: float | None = None,
        on_attach: AttachHook | None = None,
        pin_requests: bool = True,
        trusted_owner: int | str | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.model = model
        self.timeout = timeout
        self.idle_adoption = idle_adoption
        self.refresh_interval_s = refresh_interval_s
        self.trusted_owner = trusted_owner
        self.on_attach = on_attach
        self.pin_requests = pin_requests
        self._owns_reader = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        # A WebSocket is neither pinned nor counted: it may live for days and
        # should see new versions, and it has no status to judge.
        reader = existing_reader(self.name) if kind == "http" else None
        if reader is None:
            await self.app(scope, receive, send)
            return
        generation = reader.generation
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.pin_requests:
                # The context variable set here belongs to this request's task, so
                # concurrent requests in one worker each keep their own snapshot.
                with reader.pinned():
                    generation = reader.generation  # what get() gave the request
                    await self.app(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        except Exception:
            _count(reader, generation, failed=True)
            raise
        # No response started: the server answers 500 for the app.
        _count(reader, generation, failed=not status or status >= 500)

    def _startup(self) -> None:
        self._owns_reader = existing_reader(self.name) is None
        # Blocking on purpose: the server serves nothing before startup is
        # complete, and on_attach then runs on the event loop's thread.
        attach_worker(
            self.name, self.model, timeout=self.timeout,
            idle_adoption=self.idle_adoption, refresh_interval_s=self.refresh_interval_s,
            on_attach=self.on_attach, trusted_owner=self.trusted_owner,
        )

    def _shutdown(self) -> None:
        if self._owns_reader:
            detach_worker(self.name)
            self._owns_reader = False

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # not a conforming server; pass it on
            await self.app(scope, _replay(message, receive), send)
            return
        try:
            self._startup()
        except Exception as exc:
            log.error("config %r: worker cannot attach: %s", self.name, exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        answered: set[str] = set()

        async def inner_send(reply: Message) -> None:
            answered.add(reply["type"])
            if reply["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self._shutdown()
            await send(reply)

        try:
            await self.app(scope, _replay(message, receive), inner_send)
        except Exception:
            if answered:
                raise
            # ASGI lets an app without lifespan support raise: run ours alone.
            log.debug("config %r: the app has no lifespan support", self.name, exc_info=True)
        finally:
            if answered:
                self._shutdown()
        if not answered:
            # The app ignored the lifespan (or raised on it): answer for it.
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            self._shutdown()
            await send({"type": "lifespan.shutdown.complete"})


def _count(reader: Reader[Any], generation: int, *, failed: bool) -> None:
    """Count a request for rollouts (docs/rollout.md), unless the worker switched
    versions while it ran: its outcome then belongs to neither."""
    if reader.generation == generation:
        reader.count_request(failed)


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` once before the server's messages."""
    pending = [first]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def lifespan(
    app: ASGIApp,
    name: str,
    model: type[Any] | None = None,
    *,
    timeout: float = 5.0,
    idle_adoption: bool = True,
    refresh_interval_s: float | None = None,
    on_attach: AttachHook | None = None,
    pin_requests: bool = True,
    trusted_owner: int | str | None = None,
) -> ShmconfLifespan:
    """Wrap an ASGI app so that each worker attaches to ``name`` at startup.

    Args:
        app: the ASGI application.
        name: the config's name (published by ``shmconf publish`` or another publisher).
        model: the pydantic model class; ``shmconf.current()`` returns instances of it.
        timeout: seconds a worker waits at startup for the segment; a worker
            that cannot attach fails its startup with the reason.
        idle_adoption: adopt each new generation as soon as it is published,
            on a thread that sleeps until then, so idle workers run their
            change callbacks and ``status --wait-for`` converges.
        refresh_interval_s: deprecated; means ``idle_adoption=True``.
        on_attach: ``on_attach(reader)``, called in each worker after it attached.
        pin_requests: run each HTTP request inside ``reader.pinned()``.
        trusted_owner: the user (name or uid) the publisher runs as, when it
            is not the workers' (``shmconf publish --group``).
    """
    return ShmconfLifespan(
        app, name, model, timeout=timeout, idle_adoption=idle_adoption,
        refresh_interval_s=refresh_interval_s,
        on_attach=on_attach, pin_requests=pin_requests, trusted_owner=trusted_owner,
    )
