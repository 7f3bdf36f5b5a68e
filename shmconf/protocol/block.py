"""POSIX shared-memory objects: create, attach with owner and mode checks, close, unlink.

A block is a POSIX shared-memory object opened by this process: the anchor
(``anchor.py``) is mapped, the data segments and the reader table
(``slot.py``, ``table.py``) are read and written with ``pread``/``pwrite``
only, so that nobody can kill a process that uses them by truncating them. shmconf
calls ``shm_open`` through ``_posixshmem``, the same primitive
``multiprocessing.shared_memory.SharedMemory`` is built on, rather than that
class, for three reasons:

1. **No resource tracker.** ``SharedMemory`` registers every handle with
   ``multiprocessing.resource_tracker`` before 3.13, and the tracker unlinks
   whatever is still registered when a program exits: a worker that exits
   would destroy the config of every other worker. shmconf never registers,
   in readers or in the publisher (a config must outlive a publisher restart).
2. **No SIGBUS on a full ``/dev/shm``.** ``SharedMemory`` sizes with
   ``ftruncate``, which on tmpfs reserves nothing: the first write to a page
   that cannot be backed kills the writer with SIGBUS. shmconf reserves the
   pages with ``posix_fallocate`` and gets a clean ``ENOSPC`` instead.
3. **Checks before trust.** Attaching checks the owner and the mode with
   ``fstat`` and takes the size from ``fstat`` (never from the caller), so a
   segment that another user planted, or whose header claims more than the
   mapping holds, is refused before a byte of it is used.

``close()`` ends this process's access to a segment; ``unlink()`` removes
its name so that nobody else can attach. Readers only ever close.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import errno
import logging
import mmap
import os
import stat
from typing import Final

from shmconf.errors import SegmentError, SegmentPermissionError
from shmconf.protocol import layout as L

log = logging.getLogger("shmconf.protocol")

#: Where Linux shows POSIX shared memory; used to find a name's data segments.
SHM_DIR: Final = "/dev/shm"  # noqa: S108 - a system directory, not a temp file


class BlockNotSized(SegmentError):
    """The object exists with size 0: its creator has not sized it (yet)."""


class SharedBlock:
    """One POSIX shared-memory object, mapped or not.

    Use :meth:`create` or :meth:`open`. For a mapped block, ``words`` views
    the mapping as unsigned 64-bit integers, which is how the protocol's
    aligned words are read and written. :meth:`pread` and :meth:`pwrite`
    work on every block and never fault: past the end they read short.
    """

    # Class-level defaults make close() safe on an object whose constructor
    # failed half way (as in CPython's SharedMemory).
    _fd: int = -1
    _mmap: mmap.mmap | None = None
    _words: memoryview | None = None

    def __init__(
        self, shm_name: str, fd: int, size: int, *, writable: bool, mapped: bool = True
    ) -> None:
        self.shm_name = shm_name
        self.size = size
        self.writable = writable
        self._fd = fd
        if mapped:
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self._mmap = mmap.mmap(fd, size, access=access)
            self._words = memoryview(self._mmap).cast("Q")

    # -- constructors -------------------------------------------------------

    @classmethod
    def create(
        cls,
        shm_name: str,
        size: int,
        *,
        mode: int = 0o600,
        gid: int | None = None,
        mapped: bool = True,
    ) -> SharedBlock:
        """Create a new object of ``size`` bytes, zero-filled, with exactly ``mode``.

        ``gid`` hands the object to a group (with a mode that lets it in).

        Fails with ``FileExistsError`` when the name exists. When sizing or
        mapping fails, the half-made object is unlinked before the error
        propagates, so that a failed create leaves nothing behind.
        """
        fd = _posixshmem.shm_open("/" + shm_name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=mode)
        try:
            # shm_open applied the umask; set the mode we were asked for.
            os.fchmod(fd, mode)
            if gid is not None:
                os.fchown(fd, -1, gid)
            reserve(fd, size, shm_name)
            return cls(shm_name, fd, size, writable=True, mapped=mapped)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                _posixshmem.shm_unlink("/" + shm_name)
            raise

    @classmethod
    def open(
        cls,
        shm_name: str,
        *,
        writable: bool,
        min_size: int,
        trusted_uids: frozenset[int] | None = None,
        mapped: bool = True,
    ) -> SharedBlock:
        """Attach an existing object after checking who owns it and how big it is.

        Raises ``FileNotFoundError`` when the name does not exist,
        :class:`SegmentPermissionError` when another user owns it (and is not
        in ``trusted_uids``) or anyone outside the owner and group may access
        it, and :class:`SegmentError` when it is smaller than ``min_size``
        (:class:`BlockNotSized` when it is empty and ``min_size`` is not 0).
        """
        flags = os.O_RDWR if writable else os.O_RDONLY
        # O_NOFOLLOW: on Linux shm names are files in /dev/shm, where any user
        # may plant a symlink to a file of the victim's.
        fd = _posixshmem.shm_open("/" + shm_name, flags | os.O_NOFOLLOW, mode=0o600)
        try:
            st = os.fstat(fd)
            check_owner_and_mode(shm_name, st, trusted_uids)
            size = st.st_size
            if size == 0 and min_size:
                raise BlockNotSized(
                    shm_name, "size 0: being created, or left half-made by a killed publisher"
                )
            if size < min_size or size % 8:
                raise SegmentError(
                    shm_name,
                    f"size {size} does not fit the layout (at least {min_size}, a multiple "
                    "of 8); it was not made by this shmconf version: `shmconf unlink` it",
                )
            return cls(shm_name, fd, size, writable=writable, mapped=mapped)
        except BaseException:
            os.close(fd)
            raise

    # -- access -------------------------------------------------------------

    @property
    def words(self) -> memoryview:
        """The mapping as u64 words; index ``offset // 8``."""
        if self._words is None:
            raise ValueError(f"segment {self.shm_name!r} is closed or not mapped")
        return self._words

    def read(self, start: int, stop: int) -> bytes:
        """Copy bytes ``[start, stop)`` out of the mapping."""
        if self._mmap is None:
            raise ValueError(f"segment {self.shm_name!r} is closed or not mapped")
        return self._mmap[start:stop]

    def write(self, start: int, data: bytes) -> None:
        """Copy ``data`` into the mapping at ``start``."""
        if self._mmap is None:
            raise ValueError(f"segment {self.shm_name!r} is closed or not mapped")
        self._mmap[start : start + len(data)] = data

    def pread(self, start: int, length: int) -> bytes:
        """Copy up to ``length`` bytes from ``start`` with ``pread``: short past the end."""
        return os.pread(self.fileno(), length, start)

    def pwrite(self, start: int, data: bytes) -> None:
        """Write ``data`` at ``start`` with ``pwrite`` (a short write raises ``OSError``)."""
        written = os.pwrite(self.fileno(), data, start)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {self.shm_name!r}")

    def fileno(self) -> int:
        """The shared-memory file descriptor (for ``fstat`` and byte-range locks)."""
        if self._fd < 0:
            raise ValueError(f"segment {self.shm_name!r} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def stat(self) -> os.stat_result:
        return os.fstat(self._fd)

    def close(self) -> None:
        """End this process's access. The segment itself stays (see :meth:`unlink`)."""
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        """Remove the name. Processes that have it mapped keep their mapping."""
        unlink_shm(self.shm_name)

    def __enter__(self) -> SharedBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"{type(self).__name__}({self.shm_name!r}, {state})"


def check_owner_and_mode(
    shm_name: str, st: os.stat_result, trusted_uids: frozenset[int] | None = None
) -> None:
    """Refuse a segment another user owns, or one that others may open."""
    uids = trusted_uids if trusted_uids is not None else frozenset({os.geteuid()})
    if st.st_uid not in uids:
        raise SegmentPermissionError(
            shm_name,
            f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); refusing to "
            "trust it. Run the publisher as this user, or trust that one: "
            f"trusted_owner={st.st_uid} (attach(), ShmconfHooks, lifespan, initializer) or "
            f"`shmconf --trusted-owner {st.st_uid} ...`",
        )
    if not stat.S_ISREG(st.st_mode):
        raise SegmentPermissionError(shm_name, "is not a regular shared-memory object")
    if st.st_mode & 0o007:
        raise SegmentPermissionError(
            shm_name,
            f"mode {stat.S_IMODE(st.st_mode):04o} lets every user on the host access it; "
            "`shmconf unlink` it and publish again (segments are 0600; with --group the "
            "anchor and data segments are 0640 and the reader table 0660)",
        )


def unlink_shm(shm_name: str) -> bool:
    """Remove a shared-memory name; ``False`` when it was already gone."""
    try:
        _posixshmem.shm_unlink("/" + shm_name)
    except FileNotFoundError:
        return False
    return True


def list_shm_names(name: str) -> list[str]:
    """The anchor and data segment names of ``name`` that exist (Linux only).

    Other systems have no directory of shared-memory names; there this
    returns an empty list and leftovers of a crash must be removed by serial.
    """
    prefix = L.anchor_shm_name(name)
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(e for e in entries if e == prefix or e.startswith(prefix + "@"))


def other_layout_names(name: str) -> list[str]:
    """The objects of ``name`` made by other layout versions (see layout.py's policy)."""
    L.validate_name(name)
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    found = []
    for entry in entries:
        match = L.SHM_NAME_RE.fullmatch(entry)
        if match and match[2] == name and not entry.startswith(L.SHM_PREFIX):
            found.append(entry)
    return sorted(found)


def mapped_names(candidates: list[str]) -> set[str]:
    """Which of ``candidates`` (shared-memory names) a live process has mapped.

    Reads ``/proc/*/maps``: a reader keeps its objects mapped until it closes
    or exits, whatever layout version it runs. The maps of another user's
    process, or of a non-dumpable one (a server that dropped privileges),
    cannot be read unless this one is root; their mappings are not seen.
    Removing the name of an object such a process maps does not disturb it:
    a mapping outlives its name. It only keeps a new process of the old
    version from attaching, and no publisher of the old version runs by then
    (the caller holds the name's writer lock).
    """
    wanted = {f"{SHM_DIR}/{shm_name}": shm_name for shm_name in candidates}
    found: set[str] = set()
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return set(candidates)  # cannot tell: assume in use
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    path = line.rstrip("\n").partition("/")[2]
                    shm_name = wanted.get("/" + path.removesuffix(" (deleted)"))
                    if shm_name is not None:
                        found.add(shm_name)
        except OSError:
            continue  # exited meanwhile, or another user's
    return found


def unused_other_layouts(name: str) -> list[str]:
    """Unlink the objects of ``name`` left by other layout versions that no process uses.

    A layout's objects are in use while a process maps its anchor: every
    reader of every version maps its anchor for as long as it reads (versions
    1 and 2 also mapped their data segments, never without the anchor).
    Called by the publisher that holds ``name``, so no writer of those
    objects is running. Returns the names removed.
    """
    others = other_layout_names(name)
    if not others:
        return []
    in_use = mapped_names(others)
    versions_in_use = {_version_of(shm_name) for shm_name in in_use}
    removed = []
    for shm_name in others:
        if _version_of(shm_name) in versions_in_use:
            continue
        try:
            unlink_shm(shm_name)
        except OSError as exc:  # another user's object under this name
            log.warning("cannot remove %s, an older layout of %r: %s", shm_name, name,
                        exc.strerror)
            continue
        removed.append(shm_name)
    return removed


def _version_of(shm_name: str) -> str:
    match = L.SHM_NAME_RE.fullmatch(shm_name)
    return match[1] or "" if match else ""


def reserve(fd: int, size: int, shm_name: str) -> None:
    """Give the object ``size`` bytes of real pages, or fail with a clear ENOSPC."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
            # Not every shm file system can preallocate; size it the plain way.
            os.ftruncate(fd, size)
            return
        if exc.errno == errno.ENOSPC:
            raise SegmentError(
                shm_name,
                f"no space for {size} bytes in shared memory ({SHM_DIR} is full or too "
                "small); free space or enlarge it (mount -o remount,size=... /dev/shm)",
            ) from exc
        raise


