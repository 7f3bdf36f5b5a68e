"""The app the load tests serve: the config a request read, and who read it.

``wsgi`` is for gunicorn's sync workers (wired by ``ShmconfHooks``), ``asgi``
for uvicorn and uvicorn workers (wired by the lifespan wrapper, which reuses
the reader of ``post_fork`` under gunicorn). Both also serve the debug view.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import orjson

import shmconf
from shmconf.integrations import debug
from shmconf.integrations.uvicorn import lifespan
from tests.apps.models import Seq


def _body() -> bytes:
    cfg = shmconf.current()
    return orjson.dumps({
        "pid": os.getpid(),
        "seq": cfg.seq,
        "check": cfg.check,
        "generation": shmconf.current_reader().generation,
    })


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with shmconf.current_reader().pinned():
        body = _body()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        # No lifespan support: the shmconf wrapper completes the lifespan alone.
        raise RuntimeError(f"unsupported scope {scope['type']}")
    body = _body()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


wsgi = debug.wsgi_app(_wsgi, show_config=True)
asgi = lifespan(debug.asgi_app(_asgi, show_config=True),
                os.environ.get("SHMCONF_TEST_NAME", "unset"), model=Seq)
