"""WSGI: count each request's outcome for rollouts, under any WSGI server.

::

    from shmconf.integrations.wsgi import HealthMiddleware

    app = HealthMiddleware(app)            # the process reader
    app = HealthMiddleware(app, "myapp")   # or the reader of this name

During a rollout (docs/rollout.md) the publisher judges a new version by the
requests its canary workers serve: each worker counts its requests, and the
failures among them, under the version it holds. This middleware counts
them for servers that have no hook of their own for it (uWSGI, mod_wsgi,
waitress, ``wsgiref``). A request fails when the app raises (before or
while the body is produced) or answers a 5xx status; a client that goes
away mid-response is not the app's failure.

Under gunicorn, :class:`~shmconf.integrations.gunicorn.ShmconfHooks`'
``post_request`` hook counts the same: install one of the two. Should both
be installed, the middleware marks each request it counted in the environ
and the hook leaves it alone, so nothing is counted twice.

A request during which the worker adopted another version (its adoption
thread switched while the request ran) counts for neither. Outside the
worker's process reader, or before it attached, the middleware only passes
requests through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shmconf import _current
from shmconf.integrations._worker import COUNTED_KEY, existing_reader
from shmconf.reader import Reader

#: ``start_response(status, headers, exc_info=None)``.
StartResponse = Callable[..., Any]
#: A WSGI application; loose on purpose, as apps annotate their arguments in many ways.
WSGIApp = Callable[..., Iterable[bytes]]


def _failed(status: str | None) -> bool:
    """Whether a status line (``"503 Service Unavailable"``) is a failure; ``None``: never set."""
    return status is None or not status[:1].isdigit() or status[0] >= "5"


class HealthMiddleware:
    """Count every request, and the failed ones, for the version this worker holds.

    Args:
        app: the WSGI application.
        name: the config's name; ``None`` counts for the process reader
            (``shmconf.current_reader()``), whatever its name.

    Costs a closure and two compares per request; a response body that is
    not a list (a generator, a file) is wrapped, so a failure while it is
    produced counts too, except for ``wsgi.file_wrapper`` bodies, which are
    passed through to keep the server's ``sendfile``.
    """

    def __init__(self, app: WSGIApp, name: str | None = None) -> None:
        self.app = app
        self.name = name

    def _reader(self) -> Reader[Any] | None:
        if self.name is not None:
            return existing_reader(self.name)
        reader = _current.process_reader()
        return None if reader is None or reader.closed else reader

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        reader = self._reader()
        if reader is None or environ.get(COUNTED_KEY):
            return self.app(environ, start_response)
        environ[COUNTED_KEY] = True
        generation = reader.generation
        status: list[str | None] = [None]

        def counting_start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = line
            return start_response(line, headers, exc_info)

        try:
            body = self.app(environ, counting_start_response)
        except Exception:
            _count(reader, generation, failed=True)
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(body, (list, tuple)) or (
                isinstance(wrapper, type) and isinstance(body, wrapper)):
            # Produced already (or sent by the server from a file): the status says it all.
            _count(reader, generation, failed=_failed(status[0]))
            return body
        return _CountedBody(body, reader, generation, status)


def _count(reader: Reader[Any], generation: int, *, failed: bool) -> None:
    """Count for ``generation`` unless the worker switched versions during the request."""
    if reader.generation == generation:
        reader.count_request(failed)


class _CountedBody:
    """A response body that counts its request once it is produced, failed or closed.

    ``close()`` is passed on, as WSGI requires; a server that stops iterating
    early (the client went away) and closes counts the request by its status.
    """

    __slots__ = ("_body", "_counted", "_generation", "_reader", "_status")

    def __init__(
        self, body: Iterable[bytes], reader: Reader[Any], generation: int,
        status: list[str | None],
    ) -> None:
        self._body = body
        self._reader = reader
        self._generation = generation
        self._status = status
        self._counted = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception:
            self._count(failed=True)
            raise
        self._count(failed=_failed(self._status[0]))

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._count(failed=_failed(self._status[0]))

    def _count(self, *, failed: bool) -> None:
        if not self._counted:
            self._counted = True
            _count(self._reader, self._generation, failed=failed)
