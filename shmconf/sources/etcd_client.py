"""A small etcd v3 client over etcd's own JSON gateway (``/v3/kv/range``, ``/v3/watch``).

Why the gateway and not gRPC: the gateway ships inside every etcd since 3.3
(Debian's 3.4 included), speaks plain HTTP/1.1 with JSON, and needs nothing
beyond the standard library, while the Python gRPC clients for etcd either
went unmaintained (python-etcd3, pinned to an old protobuf) or pull in
grpcio, a large native dependency, into every publisher. shmconf needs three
calls (range, watch, authenticate); their JSON forms are stable across etcd
3.3-3.5.

Several endpoints of one cluster are tried in turn: a request that cannot
connect moves on to the next one. Credentials are sent in a header and never
logged or put into messages.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

log = logging.getLogger("shmconf.etcd")

#: Seconds a range or authenticate request may take.
DEFAULT_TIMEOUT_S: Final = 5.0
#: What etcd's gateway answers (HTTP 400) to a client certificate with a
#: CommonName when client-cert-auth and auth are both on.
_CN_REFUSED: Final = b"CommonName of client sending a request against gateway"


class EtcdError(Exception):
    """etcd answered with an error, or could not be reached."""


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached (or the connection dropped)."""


class EtcdCompacted(EtcdError):
    """The revision to watch from was compacted away; re-read everything."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class RangeResult:
    revision: int
    kvs: list[KeyValue]


@dataclass(frozen=True)
class TLSOptions:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # every key


class EtcdClient:
    """Range and watch over the JSON gateway of one etcd cluster."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSOptions | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint (host:port) is needed")
        self.endpoints = list(endpoints)
        self._tls = tls
        self._ssl = tls.context() if tls is not None else None
        self._user = user
        self._password = password
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._current = 0
        self._lock = threading.Lock()

    # -- transport -------------------------------------------------------------

    def _connect(self, endpoint: str, timeout: float | None) -> http.client.HTTPConnection:
        host, _, port = endpoint.rpartition(":")
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, int(port), timeout=timeout,
                                               context=self._ssl)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = self._token
        return headers

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers; raise EtcdUnavailable if none does."""
        errors = []
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            conn = self._connect(endpoint, self._timeout_s)
            try:
                conn.request("POST", path, orjson.dumps(body), self._headers())
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            finally:
                conn.close()
            self._current = index
            if response.status == 401 and self._user and path != "/v3/auth/authenticate":
                self._authenticate()
                return self._post(path, body)
            if response.status == 400 and _CN_REFUSED in raw:
                raise EtcdError(
                    f"{endpoint}: etcd refuses this client certificate: with client-cert-auth "
                    "and auth both on, its JSON gateway takes only certificates without a "
                    "CommonName (CVE-2018-16886); use one without a CommonName together with "
                    "user= and a password"
                )
            if response.status != 200:
                raise EtcdError(f"{endpoint}{path}: HTTP {response.status}: {_message(raw)}")
            return dict(orjson.loads(raw))
        raise EtcdUnavailable("cannot reach etcd (" + "; ".join(errors) + ")")

    def _authenticate(self) -> None:
        with self._lock:
            self._token = None
            reply = self._post("/v3/auth/authenticate",
                               {"name": self._user, "password": self._password or ""})
            self._token = str(reply.get("token", "")) or None

    def ensure_auth(self) -> None:
        """Get a token first when a user is configured."""
        if self._user and self._token is None:
            self._authenticate()

    # -- calls -------------------------------------------------------------------

    def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult:
        """Every key in ``[key, range_end)`` (or just ``key``), at one revision."""
        self.ensure_auth()
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        reply = self._post("/v3/kv/range", body)
        kvs = [
            KeyValue(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")),
                     int(kv.get("mod_revision", 0)))
            for kv in reply.get("kvs", [])
        ]
        return RangeResult(int(reply["header"]["revision"]), kvs)

    def put(self, key: bytes, value: bytes) -> int:
        """Store one key (tools and tests); returns the new revision."""
        self.ensure_auth()
        reply = self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(reply["header"]["revision"])

    def watch(self, key: bytes, range_end: bytes | None, start_revision: int,
              stopping: threading.Event,
              on_created: Callable[[], None] = lambda: None) -> Iterator[int]:
        """Yield the revision of every change from ``start_revision`` on.

        One value per etcd watch response: a transaction that changes several
        keys yields once. Raises :class:`EtcdCompacted` when the start revision
        is gone, :class:`EtcdUnavailable` when the stream ends (etcd restarted,
        connection lost); the caller reconnects from the last revision it saw.
        ``stopping`` set from another thread ends the iteration promptly.
        ``on_created()`` is called when etcd confirms the watch: etcd is
        reachable again, even if nothing changes for hours.
        """
        self.ensure_auth()
        request: dict[str, Any] = {"key": _b64(key), "start_revision": str(start_revision)}
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        endpoint = self.endpoints[self._current]
        # No read timeout: a quiet config sends nothing for hours. TCP keepalive
        # finds a dead peer; stop() shuts the socket down to wake the read.
        conn = self._connect(endpoint, None)
        try:
            try:
                conn.connect()
                assert conn.sock is not None
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                self._watch_socket = conn.sock
                if stopping.is_set():
                    return
                conn.request("POST", "/v3/watch", orjson.dumps({"create_request": request}),
                             self._headers())
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._current = (self._current + 1) % len(self.endpoints)
                raise EtcdUnavailable(f"cannot watch at {endpoint}: {exc}") from None
            if response.status != 200:
                raise EtcdError(f"{endpoint}/v3/watch: HTTP {response.status}")
            while not stopping.is_set():
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise EtcdUnavailable(f"watch at {endpoint} lost: {exc}") from None
                if not line:
                    raise EtcdUnavailable(f"watch at {endpoint} ended (etcd restarted?)")
                result = orjson.loads(line).get("result", {})
                if result.get("canceled"):
                    raise self._canceled(endpoint, result)
                if "error" in orjson.loads(line):
                    raise EtcdUnavailable(f"watch at {endpoint}: {_message(line)}")
                if result.get("created"):
                    on_created()
                if result.get("events"):
                    yield int(result["header"]["revision"])
        finally:
            self._watch_socket = None
            conn.close()

    def _canceled(self, endpoint: str, result: dict[str, Any]) -> EtcdError:
        """The error to raise for a watch that etcd canceled."""
        if result.get("compact_revision"):
            return EtcdCompacted(int(result["compact_revision"]))
        # A restarted etcd forgot the token it is given: log in again on the
        # next attempt.
        self._token = None
        reason = result.get("cancel_reason") or "no reason given"
        return EtcdUnavailable(f"watch at {endpoint} canceled by etcd: {reason}")

    _watch_socket: socket.socket | None = None

    def interrupt_watch(self) -> None:
        """Wake a watch blocked on its socket (called by the thread that stops it)."""
        sock = self._watch_socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _message(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(obj, dict):
        return str(obj.get("message") or obj.get("error") or obj)[:200]
    return str(obj)[:200]
