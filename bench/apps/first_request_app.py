"""A WSGI app that reads the config on every request, as a real one does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import shmconf


def app(environ: dict[str, Any],
        start_response: Callable[[str, list[tuple[str, str]]], Any]) -> Iterable[bytes]:
    version = shmconf.current()["version"]
    body = b"%d" % version
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
