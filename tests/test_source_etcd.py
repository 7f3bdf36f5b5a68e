"""The etcd source against a real etcd server (Debian's etcd-server)."""

from __future__ import annotations

import base64
import http.client
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

import shmconf
from shmconf import status
from shmconf.errors import SegmentNotFoundError
from shmconf.integrations.process import remove_leftovers
from shmconf.sources.etcd import PASSWORD_ENV, EtcdSource
from shmconf.sources.etcd_client import EtcdClient, prefix_end
from tests.etcd_server import EtcdServer
from tests.helpers import DumpReader, python, wait_until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (apt-get install etcd-server)")


class Service(BaseModel):
    greeting: str
    port: int = 80


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    yield server
    server.close()


def call(server: EtcdServer, path: str, body: dict[str, object]) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", path, orjson.dumps(body))
        return dict(orjson.loads(conn.getresponse().read()))
    finally:
        conn.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(server: EtcdServer, key: str, value: str) -> None:
    call(server, "/v3/kv/put", {"key": b64(key), "value": b64(value)})


def delete(server: EtcdServer, key: str) -> None:
    call(server, "/v3/kv/deleterange", {"key": b64(key)})


def txn(server: EtcdServer, pairs: dict[str, str]) -> None:
    call(server, "/v3/kv/txn", {"success": [
        {"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in pairs.items()]})


@pytest.fixture
def prefix(name: str) -> str:
    return f"/{name}/"


def test_put_delete_and_transaction_reach_reader_processes(etcd: EtcdServer, name: str,
                                                           prefix: str) -> None:
    put(etcd, prefix + "greeting", "hello")
    put(etcd, prefix + "db/port", "5432")
    publisher = shmconf.Publisher(name, sources=[f"etcd://{etcd.endpoint}{prefix}"],
                                  debounce=0.02)
    publisher.start()
    reader = DumpReader(name)
    try:
        assert reader.read()[1] == {"greeting": "hello", "db": {"port": 5432}}
        put(etcd, prefix + "greeting", "bonjour")
        wait_until(lambda: reader.read()[1].get("greeting") == "bonjour", message="put")
        delete(etcd, prefix + "db/port")
        wait_until(lambda: "db" not in reader.read()[1], message="delete")
        before = publisher.generation
        txn(etcd, {prefix + "a": "1", prefix + "b": "2"})
        wait_until(lambda: reader.read()[1].get("b") == 2, message="transaction")
        generation, data = reader.read()
        assert data["a"] == 1
        assert generation == before + 1  # one transaction, one generation
        assert publisher.writer.current() is not None
        meta = orjson.loads(publisher.writer.current()[0])  # type: ignore[index]
        assert meta["revisions"][f"etcd://{etcd.endpoint}{prefix}"] > 0
    finally:
        reader.close()
        publisher.stop()
        publisher.unlink()


def test_invalid_value_is_rejected_naming_the_key(etcd: EtcdServer, name: str,
                                                  prefix: str) -> None:
    put(etcd, prefix + "greeting", "hello")
    publisher = shmconf.Publisher(name, sources=[f"etcd://{etcd.endpoint}{prefix}"],
                                  model=Service, debounce=0.02)
    publisher.start()
    try:
        put(etcd, prefix + "port", "not-a-port")
        wait_until(lambda: publisher.stats.rejections["validation"] >= 1, message="rejection")
        assert "port: Input should be a valid integer" in str(publisher.stats.last_error)
        assert f"{prefix}port" in str(publisher.stats.last_error)
        assert publisher.generation == 1
        put(etcd, prefix + "port", "8080")
        wait_until(lambda: publisher.generation == 2, message="fixed value published")
    finally:
        publisher.stop()
        publisher.unlink()


def test_single_key_document(etcd: EtcdServer, name: str, prefix: str) -> None:
    put(etcd, prefix + "config.yaml", "greeting: hi\nport: 81\n")
    with shmconf.Publisher(name, sources=[f"etcd://{etcd.endpoint}{prefix}config.yaml"],
                           model=Service) as publisher:
        publisher.publish_now()
        reader = shmconf.attach(name, model=Service)
        assert reader.get() == Service(greeting="hi", port=81)
        reader.close()
        put(etcd, prefix + "config.yaml", "greeting: [unclosed\n")
        with pytest.raises(shmconf.SourceError, match=r"config.yaml:\d+"):
            publisher.publish_now()
        publisher.unlink()


def test_compacted_revision_forces_full_reread(etcd: EtcdServer, prefix: str) -> None:
    put(etcd, prefix + "v", "1")
    source = EtcdSource(f"etcd://{etcd.endpoint}{prefix}")
    assert source.load() == {"v": 1}
    put(etcd, prefix + "v", "2")
    put(etcd, prefix + "v", "3")
    latest = int(call(etcd, "/v3/kv/range", {"key": b64(prefix + "v")})["header"]["revision"])  # type: ignore[index]
    call(etcd, "/v3/kv/compaction", {"revision": str(latest)})
    changed = threading.Event()
    stop = source.start_watch(changed.set)
    try:
        assert changed.wait(10)
        assert source.revision >= latest
        assert source.load() == {"v": 3}
    finally:
        stop()


def test_restart_mid_watch_resumes_and_down_etcd_keeps_last_good(name: str) -> None:
    server = EtcdServer()
    server.start()
    prefix = f"/{name}/"
    publisher = None
    try:
        put(server, prefix + "greeting", "one")
        publisher = shmconf.Publisher(name, sources=[f"etcd://{server.endpoint}{prefix}"],
                                      debounce=0.02)
        publisher.start()
        reader = shmconf.attach(name)
        server.stop()
        source = publisher.sources[0]
        assert isinstance(source, EtcdSource)
        wait_until(lambda: source.health()["state"] == "retrying", message="retrying")
        assert reader.get()["greeting"] == "one"  # last good keeps serving
        server.start()
        put(server, prefix + "greeting", "two")  # written right after the restart
        wait_until(lambda: reader.get()["greeting"] == "two", timeout=20, message="resume")
        assert source.health()["state"] == "ok"
        reader.close()
    finally:
        if publisher is not None:
            publisher.stop()
            publisher.unlink()
        server.close()


def test_etcd_down_at_start_is_a_clear_error(name: str) -> None:
    server = EtcdServer()  # never started: nothing listens on its port
    try:
        with shmconf.Publisher(name, sources=[f"etcd://{server.endpoint}/x/"]) as publisher:
            with pytest.raises(shmconf.SourceError, match="cannot read from etcd"):
                publisher.publish_now()
            publisher.unlink()
    finally:
        server.close()


def test_password_never_in_urls_or_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(shmconf.SourceError, match="not in the URL") as info:
        EtcdSource("etcd://user:hunter2@127.0.0.1:1/x/")
    assert "hunter2" not in str(info.value)
    monkeypatch.setenv("SHMCONF_ETCD_PASSWORD", "hunter2")
    source = EtcdSource("etcd://user@127.0.0.1:1/x/?user=other")
    assert "hunter2" not in repr(source)
    assert source.name == "etcd://127.0.0.1:1/x/"


def test_start_without_source_serves_history_then_follows(name: str) -> None:
    server = EtcdServer()
    server.start()
    prefix = f"/{name}/"
    url = f"etcd://{server.endpoint}{prefix}"
    try:
        put(server, prefix + "greeting", "kept")
        with shmconf.Publisher(name, sources=[url]) as first:
            first.publish_now()
            first.unlink()  # the segment is gone (a reboot); the history stays
        server.stop()
        publisher = shmconf.Publisher(name, sources=[url], start_without_source=True,
                                      debounce=0.02)
        publisher.start()
        try:
            reader = shmconf.attach(name)
            assert reader.get()["greeting"] == "kept"
            assert reader.meta["origin"] == "history"
            server.start()
            put(server, prefix + "greeting", "fresh")
            wait_until(lambda: reader.get()["greeting"] == "fresh", timeout=20,
                       message="source back")
            reader.close()
        finally:
            publisher.stop()
            publisher.unlink()
    finally:
        server.close()


def test_start_without_source_needs_a_last_good_version(name: str) -> None:
    server = EtcdServer()
    try:
        with shmconf.Publisher(name, sources=[f"etcd://{server.endpoint}/x/"],
                               start_without_source=True) as publisher:
            with pytest.raises(shmconf.SourceError, match="no last good version"):
                publisher.start()
            publisher.unlink()
    finally:
        server.close()


# -- TLS and password auth ------------------------------------------------------------

ROOT_PASSWORD = "root-pw-not-secret"
APP_PASSWORD = "app-pw-s3cret"


@pytest.fixture(scope="module")
def secure_etcd() -> Iterator[EtcdServer]:
    """etcd that wants TLS with a client certificate, and a user with a password.

    The user ``app`` may read ``/secure/`` only; ``root`` writes.
    """
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificates")
    server = EtcdServer(tls=True)
    server.start()
    admin = EtcdClient([server.endpoint], tls=server.tls)
    reader_role = {"permType": "READ", "key": b64("/secure/"),
                   "range_end": base64.b64encode(prefix_end(b"/secure/")).decode()}
    for path, body in (
        ("/v3/auth/user/add", {"name": "root", "password": ROOT_PASSWORD}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/role/add", {"name": "config-reader"}),
        ("/v3/auth/role/grant", {"name": "config-reader", "perm": reader_role}),
        ("/v3/auth/user/add", {"name": "app", "password": APP_PASSWORD}),
        ("/v3/auth/user/grant", {"user": "app", "role": "config-reader"}),
        ("/v3/auth/enable", {}),
    ):
        admin._post(path, body)
    server.auth = ("root", ROOT_PASSWORD)
    yield server
    server.close()


def secure_url(server: EtcdServer, path: str, **extra: str) -> str:
    assert server.tls is not None
    options = {"ca": server.tls.ca, "cert": server.tls.cert, "key": server.tls.key,
               "user": "app", **extra}
    query = "&".join(f"{k}={v}" for k, v in options.items() if v)
    return f"etcd://{server.endpoint}{path}?{query}"


def test_tls_and_password_auth_publish_watch_and_survive_a_restart(
    secure_etcd: EtcdServer, name: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = EtcdClient([secure_etcd.endpoint], tls=secure_etcd.tls, user="root",
                      password=ROOT_PASSWORD)
    prefix = f"/secure/{name}/"
    root.put(f"{prefix}greeting".encode(), b"hello")
    monkeypatch.setenv(PASSWORD_ENV, APP_PASSWORD)
    caplog.set_level(logging.DEBUG)
    publisher = shmconf.Publisher(name, sources=[secure_url(secure_etcd, prefix)], model=Service)
    try:
        publisher.start()
        reader = shmconf.attach(name, model=Service)
        try:
            assert reader.get().greeting == "hello"
            root.put(f"{prefix}greeting".encode(), b"bonjour")
            wait_until(lambda: reader.get().greeting == "bonjour", 10, 0.01, "the watched put")
            # A restarted etcd forgets every auth token: the watch reconnects,
            # logs in again and resumes from its revision.
            secure_etcd.stop()
            secure_etcd.start()
            root.put(f"{prefix}greeting".encode(), b"hola")
            wait_until(lambda: reader.get().greeting == "hola", 20, 0.01,
                       "the put after the restart")
        finally:
            reader.close()
    finally:
        publisher.stop()
        publisher.unlink()
    assert APP_PASSWORD not in caplog.text


@pytest.mark.parametrize(("change", "expected"), [
    ({"password": "wrong"}, "authentication failed"),
    ({"cert": "", "key": ""}, "cannot reach etcd"),
    ({"ca": ""}, "CERTIFICATE_VERIFY_FAILED"),
    ({"cert": "client-cn.crt", "key": "client-cn.key"}, "without a CommonName"),
])
def test_tls_and_auth_failures_are_clear_errors(
    secure_etcd: EtcdServer, name: str, monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str], expected: str,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, change.get("password", APP_PASSWORD))
    assert secure_etcd.tls is not None
    certs = Path(secure_etcd.tls.ca or "").parent
    url = secure_url(secure_etcd, f"/secure/{name}/", **{
        k: str(certs / v) if v else v for k, v in change.items() if k != "password"})
    publisher = shmconf.Publisher(name, sources=[url])
    try:
        with pytest.raises(shmconf.SourceError, match=expected) as caught:
            publisher.publish_now()
        assert APP_PASSWORD not in str(caught.value)
        assert "wrong" not in str(caught.value)
    finally:
        publisher.unlink()


def _etcd_health(name: str) -> dict[str, object]:
    """The etcd source's health as ``shmconf status`` reads it (from the publisher's file)."""
    try:
        found = status.collect(name, reclaim=False)
    except SegmentNotFoundError:
        return {}
    health = found.service.get("source_health") or []
    return next((dict(h) for h in health if str(h.get("source", "")).startswith("etcd")), {})


def test_status_shows_etcd_down_within_seconds_and_ok_after_it_returns(name: str) -> None:
    server = EtcdServer()
    server.start()
    prefix = f"/{name}/"
    publisher = None
    try:
        put(server, prefix + "greeting", "one")
        # A real `shmconf publish`: status reads what that process wrote.
        publisher = python("-m", "shmconf", "publish", name, "-c",
                           f"etcd://{server.endpoint}{prefix}")
        wait_until(lambda: _etcd_health(name).get("state") == "ok", 20, 0.05, "the publisher")
        server.stop()
        wait_until(lambda: _etcd_health(name).get("state") == "retrying", 5, 0.05,
                   "status to show the source retrying")
        health = _etcd_health(name)
        assert health["error"]
        assert int(str(health["failures"])) >= 1
        assert int(str(health["since_ns"])) > 0
        assert int(str(health["next_retry_ns"])) > 0
        text = subprocess.run([sys.executable, "-m", "shmconf", "status", name],
                              capture_output=True, text=True, check=True, timeout=30).stdout
        assert "retrying since" in text
        assert str(health["error"]) in text
        server.start()
        wait_until(lambda: _etcd_health(name).get("state") == "ok", 20, 0.05,
                   "status to show the source ok again")
        assert _etcd_health(name)["error"] is None
    finally:
        if publisher is not None:
            publisher.terminate()
            try:
                publisher.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                publisher.kill()
                publisher.communicate()
        remove_leftovers(name)
        server.close()
