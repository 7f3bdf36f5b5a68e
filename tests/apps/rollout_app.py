"""The rollout tests' app: who served a request, with which version, and whether it failed.

Every answer, a 500 included, is JSON naming the worker's pid, the generation
and version it served, and whether the worker is a canary, so a test can
check that only canaries ever served a candidate. The config says whether
to fail (``fail: true``: every request answers 500); ``/raise`` makes the app
raise instead. ``wsgi`` is for gunicorn's sync workers (counted by the
``post_request`` hook), ``asgi`` for uvicorn (counted by the lifespan wrapper).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

import shmconf
from shmconf.integrations.uvicorn import lifespan


class Release(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: int
    fail: bool = False


def release_yaml(version: int, *, fail: bool = False) -> str:
    return f"version: {version}\nfail: {'true' if fail else 'false'}\n"


def _answer(path: str) -> tuple[int, bytes]:
    if path == "/raise":
        raise RuntimeError("the app raised, as asked")
    reader = shmconf.current_reader()
    with reader.pinned() as cfg:
        body = orjson.dumps({
            "pid": os.getpid(),
            "generation": reader.generation,
            "version": cfg.version,
            "fail": cfg.fail,
            "canary": reader.canary,
        })
    return (500 if cfg.fail else 200), body


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    status, body = _answer(environ.get("PATH_INFO", "/"))
    start_response(f"{status} {'OK' if status == 200 else 'Internal Server Error'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    status, body = _answer(scope["path"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


asgi = lifespan(_asgi, os.environ.get("SHMCONF_TEST_NAME", "unset"), model=Release)
