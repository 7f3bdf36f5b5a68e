"""What users pick instead of shmconf, each behind the same small adapter.

An adapter has two sides. The **owner** (the benchmark's main process)
calls ``setup(config)``, ``update(config)`` and ``teardown()``; ``spec()``
is a JSON-able description that another process passes to
:func:`open_reader` to get the **reader** side, whose ``read()`` returns the
current config and whose ``read_stmt()`` gives the same read as an inline
statement for the timing loops (``bench._common.compile_loops``).

Every read returns the whole current config (a mapping with a ``version``
key), as ``reader.get()`` does. Third-party packages are imported lazily:
one that is missing or fails makes that alternative fail with the reason,
never disappear from the report.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson

from bench._common import KIB, BenchError, Session, set_parent_death_signal, write_atomic

REDIS_MISSING = "redis: not installed (apt-get install redis-server)"


class Alternative:
    """One way to hand a config to worker processes."""

    #: Short identifier used in specs, tables and plots.
    key: ClassVar[str] = ""
    #: What the report calls it.
    label: ClassVar[str] = ""
    #: Whether update() in one process reaches readers in other processes.
    shared: ClassVar[bool] = True
    #: How the adapter is set up, for the report's notes.
    how: ClassVar[str] = ""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session

    # -- owner side -------------------------------------------------------------------

    def setup(self, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Remove what setup() created; idempotent."""

    # -- reader side --------------------------------------------------------------------

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        """The read as a statement and the names it uses."""
        raise NotImplementedError

    def close(self) -> None:
        """Reader side: end this process's access; idempotent."""

    def reader(self) -> Alternative:
        """A reader in this process (after setup)."""
        return open_reader(self.spec())


# -- the floor ------------------------------------------------------------------------------


class PlainDict(Alternative):
    key = "dict"
    label = "plain dict (in process)"
    shared = False
    how = "`d['config']` on a module-level dict: the floor; nothing is shared"

    def setup(self, config: dict[str, Any]) -> None:
        self.d = {"config": config}

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "config": self.d["config"]}

    def update(self, config: dict[str, Any]) -> None:
        self.d["config"] = config

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        self = cls()
        self.d = {"config": spec["config"]}
        return self

    def read(self) -> Any:
        return self.d["config"]

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return 'd["config"]', {"d": self.d}


# -- shmconf --------------------------------------------------------------------------------


class Shmconf(Alternative):
    key = "shmconf"
    label = "shmconf reader.get()"
    how = "`Publisher(name).publish(config)`; readers `attach(name)` then `reader.get()` (no model)"

    publisher: Any = None
    reader_: Any = None

    def setup(self, config: dict[str, Any]) -> None:
        import shmconf

        assert self.session is not None
        self.name = self.session.name("cfg")
        self.publisher = shmconf.Publisher(self.name)
        self.session.on_exit(f"shmconf {self.name}", self.teardown)
        self.publisher.publish(config)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "name": self.name}

    def update(self, config: dict[str, Any]) -> None:
        self.publisher.publish(config)

    def teardown(self) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.unlink()

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        import shmconf

        self = cls()
        self.name = spec["name"]
        self.reader_ = shmconf.attach(spec["name"], timeout=10.0)
        return self

    def read(self) -> Any:
        return self.reader_.get()

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return "reader.get()", {"reader": self.reader_}

    def close(self) -> None:
        reader, self.reader_ = self.reader_, None
        if reader is not None:
            reader.close()


class GenerationCheck(Shmconf):
    """Reference only: the fast path's load and compare, inline, without the call."""

    key = "gencheck"
    label = "bare generation check (reference)"
    shared = False
    how = "`words[2] == gen` inline: the 8-byte load and compare get() does, without the call"

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        reader = self.reader_
        return "words[2] == gen", {"words": reader._words, "gen": reader._gen}


# -- multiprocessing.Manager ----------------------------------------------------------------------


class ManagerDict(Alternative):
    key = "manager"
    label = "multiprocessing Manager().dict()"
    how = ("a `Manager()` server (spawn context) holding the config as one value; "
           "`proxy['config']` is a round trip over a Unix socket and a pickle load")

    manager: Any = None
    proxy: Any = None

    def setup(self, config: dict[str, Any]) -> None:
        import multiprocessing

        assert self.session is not None
        self.manager = multiprocessing.get_context("spawn").Manager()
        self.session.on_exit("Manager server", self.teardown)
        self.proxy = self.manager.dict()
        self.proxy["config"] = config
        self.authkey = bytes(multiprocessing.current_process().authkey).hex()

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "address": self.manager.address, "id": self.proxy._token.id,
                "authkey": self.authkey}

    def update(self, config: dict[str, Any]) -> None:
        self.proxy["config"] = config

    def teardown(self) -> None:
        manager, self.manager = self.manager, None
        self.proxy = None
        if manager is not None:
            manager.shutdown()

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        from multiprocessing.managers import DictProxy, Token

        self = cls()
        token = Token("dict", spec["address"], spec["id"])
        self.proxy = DictProxy(token, "pickle", authkey=bytes.fromhex(spec["authkey"]),
                               incref=True)
        return self

    def read(self) -> Any:
        return self.proxy["config"]

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return 'proxy["config"]', {"proxy": self.proxy}

    def close(self) -> None:
        self.proxy = None


# -- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, session: Session) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise BenchError(REDIS_MISSING)
        self.port = free_port()
        log_path = session.path("redis", "redis.log")
        self.proc = session.popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(log_path.parent),
             "--logfile", str(log_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM),
        )
        session.on_exit("redis-server", self.stop)
        self.log_path = log_path
        try:
            import redis
        except ImportError as exc:
            raise BenchError(f"redis-py: import failed ({exc}); pip install redis") from None
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
                    raise BenchError(f"redis-server did not start: {tail.strip()}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    _shared: ClassVar[dict[int, RedisServer]] = {}

    @classmethod
    def for_session(cls, session: Session) -> RedisServer:
        server = cls._shared.get(id(session))
        if server is None or server.proc.poll() is not None:
            server = cls._shared[id(session)] = cls(session)
            session.on_exit("redis registry", lambda: cls._shared.pop(id(session), None))
        return server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_version() -> str | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or None


class Redis(Alternative):
    key = "redis"
    label = "Redis GET + orjson.loads"
    how = ("a local redis-server over TCP loopback (no persistence); the config is one JSON "
           "string: `orjson.loads(r.get(key))`")

    client: Any = None

    def setup(self, config: dict[str, Any]) -> None:
        assert self.session is not None
        server = RedisServer.for_session(self.session)
        import redis

        self.port = server.port
        self.redis_key = self.session.name("redis")
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        self.client.set(self.redis_key, orjson.dumps(config))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "port": self.port, "key": self.redis_key}

    def update(self, config: dict[str, Any]) -> None:
        self.client.set(self.redis_key, orjson.dumps(config))

    def teardown(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete(self.redis_key)
            client.close()

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        import redis

        self = cls()
        self.redis_key = spec["key"]
        self.client = redis.Redis(host="127.0.0.1", port=spec["port"])
        return self

    def read(self) -> Any:
        return orjson.loads(self.client.get(self.redis_key))

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return "loads(r.get(key))", {"r": self.client, "key": self.redis_key,
                                     "loads": orjson.loads}

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()


# -- shared-memory-dict and UltraDict ------------------------------------------------------------


def _untrack(shm: Any) -> None:
    """Take a SharedMemory out of the resource tracker, which would unlink it at exit.

    Python < 3.13 registers every attach (bpo-38119). UltraDict patches the
    tracker on import; either way register and unregister stay paired.
    """
    from multiprocessing import resource_tracker

    with contextlib.suppress(Exception):
        resource_tracker.unregister(shm._name, "shared_memory")


def _pickled_size(config: dict[str, Any]) -> int:
    return len(pickle.dumps({"config": config}, protocol=pickle.HIGHEST_PROTOCOL))


class SharedMemoryDictAlt(Alternative):
    key = "smd"
    label = "shared-memory-dict"
    how = ("`SharedMemoryDict(name, size)` sized at 4x the pickled config (min 16 KB); every "
           "read copies the whole segment and unpickles the whole dict; no lock")

    smd: Any = None

    def setup(self, config: dict[str, Any]) -> None:
        try:
            from shared_memory_dict import SharedMemoryDict
        except Exception as exc:
            raise BenchError(f"shared-memory-dict: import failed ({exc})") from None
        assert self.session is not None
        self.name = self.session.name("smd")
        self.size = max(16 * KIB, 4 * _pickled_size(config))
        self.smd = SharedMemoryDict(name=self.name, size=self.size)
        _untrack(self.smd.shm)
        self.session.on_exit(f"shared-memory-dict {self.name}", self.teardown)
        self.smd["config"] = config

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "name": self.name, "size": self.size}

    def update(self, config: dict[str, Any]) -> None:
        self.smd["config"] = config

    def teardown(self) -> None:
        smd, self.smd = self.smd, None
        if smd is not None:
            import _posixshmem

            shm = smd.shm
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                _posixshmem.shm_unlink(shm._name)

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        from shared_memory_dict import SharedMemoryDict

        self = cls()
        self.smd = SharedMemoryDict(name=spec["name"], size=spec["size"])
        _untrack(self.smd.shm)
        return self

    def read(self) -> Any:
        return self.smd["config"]

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return 'smd["config"]', {"smd": self.smd}

    def close(self) -> None:
        smd, self.smd = self.smd, None
        if smd is not None:
            smd.shm.close()


class UltraDictAlt(Alternative):
    key = "ultradict"
    label = "UltraDict"
    how = ("`UltraDict(name=..., buffer_size=8x, full_dump_size=4x the pickled config)`; a "
           "read checks the update stream, then returns the local copy; no shared lock")

    ud: Any = None
    owner = False

    def setup(self, config: dict[str, Any]) -> None:
        try:
            from UltraDict import UltraDict
        except Exception as exc:
            raise BenchError(f"UltraDict: import failed ({exc})") from None
        assert self.session is not None
        self.name = self.session.name("ud")
        size = _pickled_size(config)
        self.ud = UltraDict(name=self.name, create=True, buffer_size=max(64 * KIB, 8 * size),
                            full_dump_size=max(64 * KIB, 4 * size), auto_unlink=False)
        self.owner = True
        self.session.on_exit(f"UltraDict {self.name}", self.teardown)
        self.ud["config"] = config

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "name": self.name}

    def update(self, config: dict[str, Any]) -> None:
        self.ud["config"] = config

    def teardown(self) -> None:
        ud, self.ud = self.ud, None
        if ud is not None:
            ud.unlink()

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        from UltraDict import UltraDict

        self = cls()
        self.ud = UltraDict(name=spec["name"], create=False)
        return self

    def read(self) -> Any:
        return self.ud["config"]

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return 'ud["config"]', {"ud": self.ud}

    def close(self) -> None:
        ud, self.ud = self.ud, None
        if ud is not None:
            ud.close()


# -- files ------------------------------------------------------------------------------------


class _FileAlternative(Alternative):
    """A JSON file replaced atomically (write a temporary file, rename) on update."""

    path: Path

    def setup(self, config: dict[str, Any]) -> None:
        assert self.session is not None
        self.path = self.session.path(self.session.name(self.key), "config.json")
        write_atomic(self.path, orjson.dumps(config))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.key, "path": str(self.path)}

    def update(self, config: dict[str, Any]) -> None:
        write_atomic(self.path, orjson.dumps(config))

    def teardown(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.path.parent)


class StatCache:
    """stat() the file on every read; parse it again when inode, mtime or size changed."""

    __slots__ = ("key", "path", "value")

    def __init__(self, path: str) -> None:
        self.path = path
        self.key: tuple[int, int, int] | None = None
        self.value: Any = None

    def get(self) -> Any:
        st = os.stat(self.path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self.key:
            with open(self.path, "rb") as f:
                self.value = orjson.loads(f.read())
            self.key = key
        return self.value


class StatPolling(_FileAlternative):
    key = "statpoll"
    label = "os.stat polling + cached parse"
    how = ("`os.stat()` on every read, re-read and `orjson.loads` when inode, mtime or size "
           "changed; updates replace the JSON file atomically")

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        self = cls()
        self.cache = StatCache(spec["path"])
        return self

    def read(self) -> Any:
        return self.cache.get()

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return "cache.get()", {"cache": self.cache}


class Reread(_FileAlternative):
    key = "reread"
    label = "re-read + parse file every read"
    how = "`open()`, `read()` and `orjson.loads` of the JSON file on every read"

    @classmethod
    def attach(cls, spec: dict[str, Any]) -> Alternative:
        self = cls()
        path = spec["path"]

        def load() -> Any:
            with open(path, "rb") as f:
                return orjson.loads(f.read())

        self.load = load
        return self

    def read(self) -> Any:
        return self.load()

    def read_stmt(self) -> tuple[str, dict[str, Any]]:
        return "load()", {"load": self.load}


#: Every alternative, in report order. GenerationCheck is a reference row only.
ALTERNATIVES: list[type[Alternative]] = [
    PlainDict, Shmconf, ManagerDict, Redis, SharedMemoryDictAlt, UltraDictAlt, StatPolling,
    Reread,
]
BY_KEY: dict[str, type[Alternative]] = {
    cls.key: cls for cls in [*ALTERNATIVES, GenerationCheck]
}
LABELS: dict[str, str] = {key: cls.label for key, cls in BY_KEY.items()}


def open_reader(spec: dict[str, Any]) -> Alternative:
    """The reader side of the alternative ``spec`` describes, in this process."""
    return BY_KEY[spec["kind"]].attach(spec)


def library_versions() -> dict[str, str]:
    """Versions of the packages compared (those that are installed)."""
    from importlib import metadata

    found = {}
    for dist in ("shmconf", "orjson", "pydantic", "PyYAML", "watchdog", "redis",
                 "shared-memory-dict", "UltraDict", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    server = redis_version()
    if server:
        found["redis-server"] = server
    return found
