"""Where shmconf keeps files besides shared memory: the writer lock and the state.

The runtime directory holds ``NAME.lock`` (the writer lock) and ``NAME/``
(the state: history of published versions). It is, in order of precedence:

1. the ``runtime_dir`` argument (``--runtime-dir``),
2. the ``SHMCONF_RUNTIME_DIR`` environment variable,
3. ``$XDG_RUNTIME_DIR/shmconf`` when ``XDG_RUNTIME_DIR`` is set,
4. ``/tmp/shmconf-UID``.

Every directory shmconf creates there is mode 0700, and an existing one is
used only when it is a real directory (not a symlink) owned by this user and
closed to others, because another local user could otherwise plant a symlink
or read the history (which may hold secrets).
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
    """Create ``path`` mode 0700 (parents too), or check that an existing one is safe."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirError(
            f"cannot create the directory {path}: {exc.strerror}; set SHMCONF_RUNTIME_DIR "
            "or --runtime-dir to a writable place"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"{path} is not a directory (a symlink?); refusing to use it")
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(
            f"{path} is owned by uid {st.st_uid}, not this user; refusing to use it"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def lock_path(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The writer lock of ``name``."""
    return runtime_dir(override) / f"{name}.lock"


def state_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The state directory of ``name`` (history), created 0700."""
    return private_dir(runtime_dir(override) / name)
