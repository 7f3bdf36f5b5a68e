"""A debug view: what this worker holds, as JSON at ``/debug/config``.

Plain WSGI and ASGI callables, no framework::

    from shmconf.integrations.debug import wsgi_app, asgi_app

    application = wsgi_app(application)          # WSGI: serve /debug/config, pass the rest
    app = asgi_app(app)                          # ASGI: the same
    debug = wsgi_app(show_config=True)           # standalone, with the config body

The answer describes the snapshot that this worker serves: its generation,
digest, publish time, sources and changed paths, and the worker's pid and
generation (every request may land on another worker; the pid says which).
The config itself is left out unless ``show_config=True``, and then its
secrets are redacted twice over: a model's ``SecretStr`` fields dump as
``**********``, and every path the publisher recorded as secret, or whose key
looks secret (``password``, ``token``, ...), is replaced as well.

The view shows internals; mount it where only operators reach it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime, timezone
from typing import Any, Final, Generic, TypeVar

import orjson

from shmconf import _current, content
from shmconf.errors import NotAttachedError
from shmconf.reader import Reader

#: Where the view answers by default.
DEFAULT_PATH: Final = "/debug/config"

_JSON_HEADERS: Final = [
    ("Content-Type", "application/json"),
    # A config view must never be served from a cache to someone else.
    ("Cache-Control", "no-store"),
]

StartResponse = Callable[..., Any]
#: Loose on purpose: applications annotate environ and scope in many ways.
WSGIApp = Callable[..., Iterable[bytes]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]
ASGIApp = Callable[..., Any]


def plain(snapshot: Any) -> Any:
    """A snapshot as plain JSON data; a model's secrets come out masked.

    ``model_dump(mode="json")`` turns ``SecretStr`` into ``**********``; a
    model-less snapshot (FrozenDict, FrozenList) becomes plain dicts and lists.
    """
    dump = getattr(snapshot, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    if isinstance(snapshot, Mapping):
        return {str(k): plain(v) for k, v in snapshot.items()}
    if isinstance(snapshot, (list, tuple)):
        return [plain(v) for v in snapshot]
    return snapshot


def debug_info(reader: Reader[Any] | None = None, *, show_config: bool = False) -> dict[str, Any]:
    """What the view answers, as a dict (see the module docstring).

    Args:
        reader: the reader to describe; default: this process's reader.
        show_config: include the config, with its secrets redacted.

    Raises:
        NotAttachedError: no reader was given and none is attached.
    """
    reader = reader if reader is not None else _current.current_reader()
    snapshot = reader.get()
    meta = reader.meta
    published_at = reader.published_at
    info: dict[str, Any] = {
        "name": reader.name,
        "generation": reader.generation,
        "digest": meta.get("digest"),
        "published_at": datetime.fromtimestamp(published_at, tz=timezone.utc).isoformat()
        if published_at
        else None,
        "published_at_unix": published_at,
        "sources": list(meta.get("sources", [])),
        "changed": list(meta.get("changed", [])),
        "origin": meta.get("origin"),
        "worker": {"pid": os.getpid(), "generation": reader.generation},
    }
    if show_config:
        info["config"] = content.redact(plain(snapshot), meta.get("secrets", ()))
    return info


def _render(reader: Reader[Any] | None, show_config: bool) -> tuple[str, bytes]:
    try:
        body = debug_info(reader, show_config=show_config)
    except NotAttachedError as exc:
        return "503 Service Unavailable", orjson.dumps({"error": str(exc)})
    return "200 OK", orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str)


#: The wrapped application: a WSGI or an ASGI callable.
AppT = TypeVar("AppT")


class _DebugView(Generic[AppT]):
    """What the WSGI and the ASGI view share: the wrapped app and the options."""

    def __init__(
        self,
        app: AppT | None = None,
        *,
        reader: Reader[Any] | None = None,
        show_config: bool = False,
        path: str = DEFAULT_PATH,
    ) -> None:
        self.app = app
        self.reader = reader
        self.show_config = show_config
        self.path = path


class DebugWSGI(_DebugView[WSGIApp]):
    """The WSGI view that :func:`wsgi_app` returns."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") != self.path:
            if self.app is not None:
                return self.app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        status, body = _render(self.reader, self.show_config)
        start_response(status, [*_JSON_HEADERS, ("Content-Length", str(len(body)))])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


class DebugASGI(_DebugView[ASGIApp]):
    """The ASGI view that :func:`asgi_app` returns."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            if self.app is not None:
                await self.app(scope, receive, send)
            elif scope["type"] == "lifespan":
                await _bare_lifespan(receive, send)
            elif scope["type"] == "http":
                await _respond(send, 404, [(b"content-type", b"text/plain")], b"not found\n")
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD")], b"")
            return
        status, body = _render(self.reader, self.show_config)
        headers = [(k.lower().encode(), v.encode()) for k, v in _JSON_HEADERS]
        headers.append((b"content-length", str(len(body)).encode()))
        await _respond(send, int(status.split()[0]), headers, b"" if method == "HEAD" else body)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _bare_lifespan(receive: Receive, send: Send) -> None:
    """Lifespan for the view on its own: nothing to start, nothing to stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def wsgi_app(
    app: WSGIApp | None = None,
    *,
    reader: Reader[Any] | None = None,
    show_config: bool = False,
    path: str = DEFAULT_PATH,
) -> DebugWSGI:
    """A WSGI app serving the view at ``path``; other paths go to ``app`` (or 404).

    Args:
        app: the application to pass every other request to.
        reader: the reader to describe; default: this process's reader,
            looked up per request (so the view can be built before a worker attaches).
        show_config: include the config body, secrets redacted. Off by default.
        path: where the view answers.
    """
    return DebugWSGI(app, reader=reader, show_config=show_config, path=path)


def asgi_app(
    app: ASGIApp | None = None,
    *,
    reader: Reader[Any] | None = None,
    show_config: bool = False,
    path: str = DEFAULT_PATH,
) -> DebugASGI:
    """An ASGI app serving the view at ``path``; everything else goes to ``app`` (or 404).

    Arguments as for :func:`wsgi_app`.
    """
    return DebugASGI(app, reader=reader, show_config=show_config, path=path)
