"""The debug view over real HTTP: WSGI under wsgiref, ASGI through httpx."""

from __future__ import annotations

import asyncio
import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import shmconf
from shmconf.integrations.debug import asgi_app, debug_info, wsgi_app
from tests.apps.servers import serving, write_doc_files
from tests.helpers import REPO, process_reader
from tests.models import Settings

SECRET = "hunter2-s3cret"
CONFIG = {
    "greeting": "hello",
    "database": {"host": "db1", "password": SECRET},
    "api_token": "tok-s3cret",
}


@pytest.fixture
def publisher(name: str) -> Iterator[shmconf.Publisher]:
    pub = shmconf.Publisher(name, model=Settings)
    pub.publish(CONFIG)
    try:
        yield pub
    finally:
        pub.unlink()


@pytest.fixture
def worker(name: str, publisher: shmconf.Publisher) -> Iterator[shmconf.Reader[Any]]:
    """This process as a wired worker: its reader is the process reader."""
    with process_reader(name, Settings) as reader:
        yield reader


def test_view_describes_the_snapshot_and_the_worker_without_the_config(
    name: str, publisher: shmconf.Publisher, worker: shmconf.Reader[Any]
) -> None:
    with serving(wsgi_app()) as client:
        response = client.get("/debug/config")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        view = response.json()
        assert view["name"] == name
        assert view["generation"] == 1
        assert view["digest"] == publisher.digest
        assert view["published_at"].endswith("+00:00")
        assert view["published_at_unix"] == pytest.approx(worker.published_at)
        assert view["origin"] == "publish"
        assert view["worker"] == {"pid": os.getpid(), "generation": 1}
        assert "config" not in view
        assert SECRET not in response.text

        publisher.publish({**CONFIG, "greeting": "bonjour"})
        view = client.get("/debug/config").json()
        assert view["generation"] == 2
        assert view["changed"] == ["greeting"]


def test_show_config_redacts_model_secrets_recorded_secrets_and_secret_keys(
    name: str, publisher: shmconf.Publisher, worker: shmconf.Reader[Any]
) -> None:
    with serving(wsgi_app(show_config=True)) as client:
        response = client.get("/debug/config")
    config = response.json()["config"]
    assert config["greeting"] == "hello"
    assert config["database"] == {"host": "db1", "port": 5432, "password": "**********"}
    assert SECRET not in response.text
    assert "s3cret" not in response.text
    # A reader without the model still redacts what the publisher recorded as secret.
    bare = shmconf.attach(name)
    try:
        assert bare.meta["secrets"] == ["database.password"]
        config = debug_info(bare, show_config=True)["config"]
        assert config["database"]["password"] == "**********"
        # Not a field of the model: validation dropped it, so it is not published.
        assert "api_token" not in config
        assert config["database"]["host"] == "db1"
    finally:
        bare.close()


def test_recorded_secret_paths_are_redacted_whatever_their_key(name: str) -> None:
    from pydantic import BaseModel, SecretStr

    class Api(BaseModel):
        dsn: SecretStr
        region: str

    with shmconf.Publisher(name, model=Api) as pub:
        pub.publish({"dsn": "postgres://u:pw-s3cret@db/app", "region": "eu"})
        reader = shmconf.attach(name)  # no model: a plain mapping
        try:
            config = debug_info(reader, show_config=True)["config"]
            assert config == {"dsn": "**********", "region": "eu"}
        finally:
            reader.close()
        pub.unlink()


def test_routing_methods_and_a_worker_that_is_not_attached(
    publisher: shmconf.Publisher, worker: shmconf.Reader[Any]
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the app\n"]

    with serving(wsgi_app(app, path="/_shmconf")) as client:
        assert client.get("/").text == "the app\n"
        assert client.get("/debug/config").text == "the app\n"
        assert client.get("/_shmconf").json()["generation"] == 1
        head = client.head("/_shmconf")
        assert head.status_code == 200
        assert head.content == b""
        assert client.post("/_shmconf").status_code == 405
    with serving(wsgi_app()) as client:
        assert client.get("/other").status_code == 404
        shmconf.set_reader(None)
        response = client.get("/debug/config")
        assert response.status_code == 503
        assert "no shmconf reader is attached" in response.json()["error"]


def test_asgi_view(publisher: shmconf.Publisher, worker: shmconf.Reader[Any]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the app"})

    async def run() -> None:
        transport = httpx.ASGITransport(app=asgi_app(app, show_config=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/")).text == "the app"
            response = await client.get("/debug/config")
            assert response.status_code == 200
            view = response.json()
            assert view["worker"]["pid"] == os.getpid()
            assert view["config"]["database"]["password"] == "**********"
            assert (await client.post("/debug/config")).status_code == 405
        transport = httpx.ASGITransport(app=asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/")).status_code == 404
            assert "config" not in (await client.get("/debug/config")).json()

    asyncio.run(run())


def test_documented_example_runs_as_written(
    tmp_path: Path, name: str, publisher: shmconf.Publisher
) -> None:
    files = write_doc_files(REPO / "docs" / "debug.md", tmp_path)
    module = runpy.run_path(str(files["debug_app.py"]))
    reader = shmconf.attach(name)  # the example reads a plain mapping
    shmconf.set_reader(reader)
    try:
        check_documented_example(module)
    finally:
        shmconf.set_reader(None)
        reader.close()


def check_documented_example(module: dict[str, Any]) -> None:
    with serving(module["application"]) as client:
        assert client.get("/").text == "hello\n"
        assert "config" not in client.get("/debug/config").json()
    with serving(module["internal"]) as client:
        config = client.get("/debug/config").json()["config"]
        assert config["database"]["password"] == "**********"

    async def asgi() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=module["asgi_internal"])
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return dict((await client.get("/debug/config")).json())

    assert asyncio.run(asgi())["config"]["greeting"] == "hello"
