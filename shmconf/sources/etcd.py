"""etcd sources: a whole prefix as a nested mapping, or one key holding a document.

URLs::

    etcd://HOST:PORT[,HOST:PORT...]/prefix/          every key under /prefix/
    etcd://HOST:PORT/path/config.yaml                one key, parsed by its suffix

Options go in the query string: ``ca=``, ``cert=``, ``key=`` (TLS; ``etcds://``
turns TLS on with the system CAs), ``user=``; the password comes from
``password_file=`` or the ``SHMCONF_ETCD_PASSWORD`` environment variable,
never from the URL, so that it cannot leak through a process listing or a log
line that prints the source.

A prefix maps keys to nested mappings by path segment: ``/app/db/host`` under
``etcd://h:2379/app/`` is ``{"db": {"host": ...}}``. Values that parse as
JSON are parsed (``5432`` is an int, ``{"a": 1}`` a mapping), anything else
is a string. A key that is both a value and a parent (``/app/db`` and
``/app/db/host``) is an error naming both keys.

Watching: one etcd watch per source, from the revision of the last read. A
response (one per transaction, however many keys it changed) asks the
publisher to reload; the reload reads the whole range at one revision, so a
transaction is published as one generation. A dropped connection or a
restarted etcd is retried with backoff from the last revision seen; a
compacted revision triggers a full re-read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from shmconf.errors import SourceError
from shmconf.sources.base import Source
from shmconf.sources.etcd_client import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    TLSOptions,
    prefix_end,
)
from shmconf.sources.registry import parse_document

log = logging.getLogger("shmconf.sources.etcd")

#: Backoff between reconnects of a lost watch, from first to longest.
_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Environment variable holding the etcd password.
PASSWORD_ENV: Final = "SHMCONF_ETCD_PASSWORD"  # noqa: S105 - a variable's name, not a password


class EtcdSource(Source):
    """A config kept in etcd; see the module docstring for the URL forms."""

    #: The etcd revision of the last read (0 before the first).
    revision: int

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("etcd", "etcds") or not parsed.netloc:
            raise SourceError(url, "an etcd source looks like etcd://HOST:PORT/prefix/")
        if parsed.password:
            raise SourceError(
                _public(url), f"put the password in {PASSWORD_ENV} or password_file=, "
                "not in the URL",
            )
        options = dict(urllib.parse.parse_qsl(parsed.query))
        hosts = parsed.netloc.rpartition("@")[2]
        endpoints = [h if ":" in h else f"{h}:2379" for h in hosts.split(",") if h]
        self.name = _public(url)
        self.path = urllib.parse.unquote(parsed.path) or "/"
        self.is_prefix = self.path.endswith("/")
        user = parsed.username or options.get("user")
        password = os.environ.get(PASSWORD_ENV)
        if "password_file" in options:
            password = Path(options["password_file"]).read_text().strip()
        tls = None
        if parsed.scheme == "etcds" or {"ca", "cert", "key"} & options.keys():
            tls = TLSOptions(options.get("ca"), options.get("cert"), options.get("key"))
        self.client = EtcdClient(endpoints, tls=tls, user=user, password=password)
        self.revision = 0
        # The health that status shows; written by the watch thread and by
        # reloads, read by the service's heartbeat, hence the lock.
        self._health_lock = threading.Lock()
        self._state = "not read yet"
        self._error: str | None = None
        self._since_ns = time.time_ns()
        self._failures = 0
        self._next_retry_ns: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"EtcdSource({self.name!r})"

    def watch_paths(self) -> list[Path]:
        return []

    def origin(self, path: tuple[str, ...]) -> str:
        if not self.is_prefix:
            return f"{self.name}"
        return f"{self.name} key {self.path}{'/'.join(path)}"

    def _key_range(self) -> tuple[bytes, bytes | None]:
        key = self.path.encode()
        return (key, prefix_end(key)) if self.is_prefix else (key, None)

    def load(self) -> dict[str, Any]:
        key, end = self._key_range()
        try:
            result = self.client.range(key, end)
        except EtcdError as exc:
            self._set_health("unreachable", str(exc))
            raise SourceError(self.name, f"cannot read from etcd: {exc}") from None
        self.revision = result.revision
        self._set_health("ok")
        if not self.is_prefix:
            if not result.kvs:
                raise SourceError(self.name, f"key {self.path!r} does not exist in etcd")
            return _parse_document(self.name, self.path, result.kvs[0].value)
        return _nest(self.name, self.path, [(kv.key, kv.value) for kv in result.kvs])

    # -- watching ------------------------------------------------------------

    def start_watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Watch from the last read revision; returns the function that stops it."""
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._watch_loop, args=(on_change,), name=f"shmconf-etcd-{self.path}",
            daemon=True,
        )
        self._thread.start()
        return self.stop_watch

    def stop_watch(self) -> None:
        self._stopping.set()
        self.client.interrupt_watch()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def health(self) -> dict[str, Any]:
        """State of the source for ``status``: ok, retrying or unreachable.

        With the time the state began (``since_ns``), the failures in a row,
        the last error and, while retrying, when the next attempt is due
        (``next_retry_ns``; nanoseconds since the epoch).
        """
        with self._health_lock:
            return {"source": self.name, "state": self._state, "revision": self.revision,
                    "error": self._error, "since_ns": self._since_ns,
                    "failures": self._failures, "next_retry_ns": self._next_retry_ns}

    def _set_health(self, state: str, error: str | None = None,
                    retry_in_s: float | None = None) -> None:
        """Note an outcome: ``ok``, or a failure (``error``) and when the next try is due."""
        with self._health_lock:
            now = time.time_ns()
            if state != self._state:
                self._since_ns = now
            self._state, self._error = state, error
            self._failures = 0 if error is None else self._failures + 1
            self._next_retry_ns = None if retry_in_s is None else now + int(retry_in_s * 1e9)

    def _connected(self) -> None:
        """The watch is established: etcd answers again."""
        if self._state != "ok":
            self._set_health("ok")

    def _watch_loop(self, on_change: Callable[[], None]) -> None:
        key, end = self._key_range()
        failures = 0
        while not self._stopping.is_set():
            if self.revision == 0 and not self._resync(on_change):
                # Never read (etcd was down at start): no revision to watch from.
                pause = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                self._set_health("retrying", self._error, pause)
                if self._stopping.wait(pause):
                    return
                failures += 1
                continue
            try:
                for revision in self.client.watch(key, end, self.revision + 1, self._stopping,
                                                  on_created=self._connected):
                    failures = 0
                    self._connected()
                    log.debug("etcd %s: change at revision %d", self.name, revision)
                    on_change()
            except EtcdCompacted as exc:
                log.warning("etcd %s: %s; reading everything again", self.name, exc)
                self._resync(on_change)
                continue
            except EtcdError as exc:
                if self._stopping.is_set():
                    return
                pause = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                failures += 1
                self._set_health("retrying", str(exc), pause)
                log.warning("etcd %s: %s; retrying in %.1fs from revision %d",
                            self.name, exc, pause, self.revision)
                if self._stopping.wait(pause):
                    return
                if failures > 1:
                    # The range read also tells whether changes were missed
                    # while the watch was down (a reload compares digests).
                    self._resync(on_change)
                continue
            return

    def _resync(self, on_change: Callable[[], None]) -> bool:
        """Read the current revision and ask for a reload (the digest dedups)."""
        key, end = self._key_range()
        try:
            result = self.client.range(key, end)
        except EtcdError as exc:
            with self._health_lock:
                self._error = str(exc)
            return False
        self.revision = max(self.revision, result.revision)
        self._set_health("ok")
        on_change()
        return True


def _public(url: str) -> str:
    """The URL as messages may show it: no password, no query string."""
    parsed = urllib.parse.urlsplit(url)
    hosts = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parsed.scheme, hosts, parsed.path, "", ""))


def _parse_value(raw: bytes) -> Any:
    """JSON where the value parses as JSON, else the text.

    The standard library parses it, not orjson: orjson turns integers beyond
    64 bits into floats silently, and the source checks must see them.
    """
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _nest(name: str, prefix: str, items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    for raw_key, raw_value in sorted(items):
        key = raw_key.decode("utf-8", "replace")
        parts = tuple(p for p in key[len(prefix):].split("/") if p)
        if not parts:
            continue
        try:
            value = _parse_value(raw_value)
        except UnicodeDecodeError:
            raise SourceError(name, f"key {key!r}: value is not UTF-8 text") from None
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                other = owners[parts[: depth + 1]]
                raise SourceError(name, f"key {key!r} is below {other!r}, which holds a value")
            node = child
        if parts[-1] in node:
            raise SourceError(name, f"key {key!r} holds a value but also has keys below it")
        node[parts[-1]] = value
        owners[parts] = key
    return root


def _parse_document(name: str, key: str, raw: bytes) -> dict[str, Any]:
    """Parse one key's value by the suffix of the key, like a file of that name."""
    return parse_document(raw, name=f"{name}", suffix=Path(key).suffix)
