"""Where shmconf keeps files besides shared memory: the writer lock and the state.

The runtime directory holds ``NAME.lock`` (the writer lock) and ``NAME/``
(the state: history of published versions). It is, in order of precedence:

1. the ``runtime_dir`` argument (``--runtime-dir``),
2. the ``SHMCONF_RUNTIME_DIR`` environment variable,
3. ``$XDG_RUNTIME_DIR/shmconf`` when ``XDG_RUNTIME_DIR`` is set,
4. ``/tmp/shmconf-UID``.

Every directory shmconf creates there is mode 0700 from its creation, and an
existing one is used only when it is a real directory (not a symlink) owned
by this user that no other user may write in, because another local user
could otherwise plant a symlink or swap the history. An existing directory is
never chmod'ed: one that is unsafe is refused, with a private subdirectory to
use instead. Read-only commands create nothing (``existing_state_dir``).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from shmconf.errors import RuntimeDirError


def runtime_path(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the runtime directory is (see the module docstring); nothing is created."""
    if override is not None:
        return Path(override)
    if env := os.environ.get("SHMCONF_RUNTIME_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "shmconf"
    return Path(tempfile.gettempdir()) / f"shmconf-{os.geteuid()}"


def runtime_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The runtime directory, created 0700 if needed (see the module docstring)."""
    return private_dir(runtime_path(override))


def existing_state_dir(name: str) -> Path | None:
    """The state directory of ``name`` if it exists; read-only commands create nothing."""
    path = runtime_path() / name
    return path if path.is_dir() else None


def private_dir(path: Path) -> Path:
    """Create ``path`` mode 0700 (parents too), or check that an existing one is safe.

    An existing directory is never changed (no chmod, no chown): a shared
    one such as ``/tmp`` must not be closed to everyone else by a mistaken
    ``--runtime-dir``. It is refused, with a private subdirectory to use
    instead, when another user owns it, when other users may write in it, or
    when its parent lets every user replace it (writable, not sticky).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(path):
            os.mkdir(path, 0o700)  # the mode at creation: never wider, whatever the umask
    except OSError as exc:
        raise RuntimeDirError(
            f"cannot create the directory {path}: {exc.strerror}; set SHMCONF_RUNTIME_DIR "
            "or --runtime-dir to a writable place"
        ) from exc
    try:
        # O_NOFOLLOW: a symlink planted in place of the directory is refused.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise RuntimeDirError(f"{path} is not a directory (a symlink?); refusing to use it"
                              ) from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    instead = f"use a private directory of your own instead, e.g. --runtime-dir {_mine(path)}"
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(
            f"{path} is owned by uid {st.st_uid}, not this user; refusing to use it: {instead}"
        )
    if st.st_mode & 0o022:
        raise RuntimeDirError(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to use it, and leaving its mode alone: {instead}"
        )
    parent = os.stat(path.parent)
    if parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX:
        raise RuntimeDirError(
            f"{path.parent} is writable by every user and not sticky, so anyone could "
            f"replace {path}; refusing to use it: {instead}"
        )
    return path


def _mine(path: Path) -> Path:
    """A private subdirectory to suggest in place of an unsafe ``path``."""
    return path / f"shmconf-{os.geteuid()}"


def lock_path(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The writer lock of ``name``."""
    return runtime_dir(override) / f"{name}.lock"


def state_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The state directory of ``name`` (history), created 0700."""
    return private_dir(runtime_dir(override) / name)
