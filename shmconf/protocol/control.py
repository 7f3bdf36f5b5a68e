"""The publisher's control files: how the CLI and a running publisher talk.

Both live in the name's state directory (``_paths.state_dir``), mode 0600 in
a 0700 directory, written atomically and never through a symlink:

* ``status.json``: the running publisher's view of itself (reloads,
  rejections, last error, source health, the outcome of the last request),
  rewritten by the service on every change and read by ``shmconf status``.
* ``request.json``: a request from the CLI (a rollback), left for the
  publisher, which takes it (removes it, then carries it out) on its next
  SIGHUP.

The history's version files use the same private-file helpers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Final

import orjson

#: In the state directory: the service's view of itself, rewritten on every change.
STATUS_FILE: Final = "status.json"
#: In the state directory: a request from the CLI, carried out on the next SIGHUP.
REQUEST_FILE: Final = "request.json"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600, never through a symlink."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            # No fsync: a history file lost to a power cut only loses a
            # rollback target, and fsync would cost every publish milliseconds.
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_private(path: Path) -> bytes:
    """Read a state file, refusing to follow a symlink planted in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Rewrite ``status.json`` (the publisher side)."""
    write_private(state_dir / STATUS_FILE, orjson.dumps(status))


def read_status(state_dir: Path) -> dict[str, Any]:
    """The running (or last) publisher's ``status.json``; empty when there is none."""
    try:
        return dict(orjson.loads(read_private(state_dir / STATUS_FILE)))
    except (OSError, ValueError, TypeError):
        return {}


def send_request(state_dir: Path, request: dict[str, Any]) -> None:
    """Leave ``request`` for the publisher (the CLI side); a SIGHUP makes it act."""
    write_private(state_dir / REQUEST_FILE, orjson.dumps(request))


def take_request(state_dir: Path) -> bytes | None:
    """The pending request, removed before it runs so that a crash cannot repeat it."""
    path = state_dir / REQUEST_FILE
    try:
        raw = read_private(path)
        path.unlink()
    except FileNotFoundError:
        return None
    return raw
