"""What the integrations count for rollouts: gunicorn's request hooks, the WSGI
middleware and the ASGI wrapper, each in this process against a real reader.

Every count goes through ``Reader.count_request``, recorded here; the real
servers and the publisher's judgement are in test_rollout_gunicorn.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import shmconf
from shmconf import Publisher, Reader, Rollout
from shmconf.integrations.gunicorn import ShmconfHooks
from shmconf.integrations.process import PublisherProcess
from shmconf.integrations.uvicorn import lifespan
from shmconf.integrations.wsgi import HealthMiddleware
from tests.apps.servers import serving
from tests.helpers import process_reader


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each ``count_request(failed)`` of any reader, in order."""
    calls: list[bool] = []

    def count_request(self: Reader[Any], failed: bool = False) -> None:
        calls.append(failed)

    monkeypatch.setattr(Reader, "count_request", count_request)
    return calls


@pytest.fixture
def publisher(name: str) -> Iterator[Publisher]:
    with Publisher(name) as publisher:
        publisher.publish({"v": 1})
        yield publisher
        publisher.unlink()


@pytest.fixture
def reader(name: str, publisher: Publisher) -> Iterator[Reader[Any]]:
    """The process reader of ``name``, as an integration sets it in a worker."""
    with process_reader(name) as reader:
        yield reader


# -- gunicorn's pre_request and post_request hooks -----------------------------------------


def served(status_code: int | None) -> SimpleNamespace:
    """A gunicorn ``Response`` after the app ran; ``None``: start_response never called."""
    return SimpleNamespace() if status_code is None else SimpleNamespace(status_code=status_code)


@pytest.mark.parametrize(("status_code", "failed"), [
    (200, False), (404, False), (500, True), (503, True), (None, True),
])
def test_post_request_counts_5xx_and_a_missing_status_as_failures(
    name: str, reader: Reader[Any], counted: list[bool], status_code: int | None, failed: bool
) -> None:
    hooks = ShmconfHooks(name)
    req = SimpleNamespace()
    hooks.pre_request(None, req)
    hooks.post_request(None, req, {}, served(status_code))
    assert counted == [failed]


def test_post_request_counts_an_exception_on_its_way_out_but_not_a_client_gone(
    name: str, reader: Reader[Any], counted: list[bool]
) -> None:
    hooks = ShmconfHooks(name)

    def handle(exc: BaseException) -> None:
        # As gunicorn's workers call it: in the `finally` of the request.
        try:
            raise exc
        finally:
            hooks.post_request(None, SimpleNamespace(), {}, served(200))

    with pytest.raises(StopIteration):  # the sync worker's: the app raised mid-body
        handle(StopIteration())
    with pytest.raises(BrokenPipeError):
        handle(BrokenPipeError())
    assert counted == [True, False]


def test_post_request_leaves_out_what_it_cannot_attribute(
    name: str, publisher: Publisher, reader: Reader[Any], counted: list[bool]
) -> None:
    hooks = ShmconfHooks(name)
    hooks.post_request(None, SimpleNamespace(), {}, None)  # never reached the app
    hooks.post_request(None, SimpleNamespace(), {"shmconf.counted": True}, served(500))
    # The worker adopted another version while the request ran.
    req = SimpleNamespace()
    hooks.pre_request(None, req)
    publisher.publish({"v": 2})
    assert reader.get()["v"] == 2
    hooks.post_request(None, req, {}, served(500))
    assert counted == []
    # Without pre_request every request counts for the version held at its end.
    hooks.post_request(None, SimpleNamespace(), {}, served(500))
    assert counted == [True]


def test_the_request_hooks_never_raise(
    name: str, reader: Reader[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Reader[Any], failed: bool = False) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Reader, "count_request", broken)
    hooks = ShmconfHooks(name)
    hooks.pre_request(None, object())  # takes no attribute
    hooks.post_request(None, object(), None, served(200))
    ShmconfHooks("another-name").post_request(None, object(), {}, served(500))
    shmconf.set_reader(None)
    hooks.pre_request(None, SimpleNamespace())
    hooks.post_request(None, SimpleNamespace(), {}, served(500))


def test_gunicorn_accepts_the_request_hooks(name: str) -> None:
    from gunicorn.config import Config

    hooks = ShmconfHooks(name)
    cfg = Config()
    cfg.set("pre_request", hooks.pre_request)
    cfg.set("post_request", hooks.post_request)
    assert cfg.pre_request == hooks.pre_request
    assert cfg.post_request == hooks.post_request  # taken as it is: four arguments


def test_a_rollout_policy_travels_to_the_publisher_process_as_its_keywords(
    name: str, tmp_path: Path
) -> None:
    source = tmp_path / "app.yaml"
    source.write_text("v: 1\n")
    policy = Rollout(canary="10%", bake_s=2, steps=("50%",), min_requests=5)
    by_policy = PublisherProcess(name, [source], rollout=policy)
    by_keywords = PublisherProcess(name, [source], rollout={
        "canary": "10%", "bake_s": 2, "steps": ["50%"], "min_requests": 5})
    assert by_policy.spec == by_keywords.spec
    assert by_policy.spec["options"]["rollout"] == policy.to_json()
    assert Rollout.of(by_policy.spec["options"]["rollout"]) == policy
    with pytest.raises(ValueError, match="canary"):
        ShmconfHooks(name, [source], rollout={"canary": 0})
    with pytest.raises(ValueError, match="rollout"):
        ShmconfHooks(name, [source], rollout={"bake": 2})


# -- WSGI: HealthMiddleware --------------------------------------------------------------


def app_answering(status: str, body: Callable[[], Iterable[bytes]] | None = None) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        return body() if body is not None else [b"ok"]

    return app


def streamed(fail: bool) -> Iterator[bytes]:
    yield b"one"
    if fail:
        raise RuntimeError("the body failed half way")
    yield b"two"


@pytest.mark.parametrize(("app", "failed"), [
    (app_answering("200 OK"), False),
    (app_answering("404 Not Found"), False),
    (app_answering("503 Service Unavailable"), True),
    (app_answering("200 OK", lambda: streamed(False)), False),
    (app_answering("200 OK", lambda: streamed(True)), True),
])
def test_the_middleware_counts_5xx_and_exceptions_as_failures(
    reader: Reader[Any], counted: list[bool], app: Any, failed: bool
) -> None:
    # A body that fails half way cuts the answer short.
    with serving(HealthMiddleware(app)) as client, contextlib.suppress(httpx.HTTPError):
        client.get("/")
    assert counted == [failed]


def test_the_middleware_counts_an_app_that_raises_and_passes_the_exception_on(
    reader: Reader[Any], counted: list[bool]
) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("the app failed")

    with pytest.raises(RuntimeError, match="the app failed"):
        HealthMiddleware(app)({}, lambda *args: None)
    assert counted == [True]


def test_the_middleware_counts_once_and_names_its_reader(
    name: str, reader: Reader[Any], counted: list[bool]
) -> None:
    environ: dict[str, Any] = {}
    twice = HealthMiddleware(HealthMiddleware(app_answering("500 Oops")), name)
    assert list(twice(environ, lambda *args: None)) == [b"ok"]
    assert counted == [True]
    # gunicorn's post_request, installed too, leaves the request to the middleware.
    ShmconfHooks(name).post_request(None, SimpleNamespace(), environ, served(500))
    assert counted == [True]
    # A middleware for another name, or before the worker attached, only passes requests on.
    ignore = lambda *args: None  # noqa: E731 - a start_response that does nothing
    assert list(HealthMiddleware(app_answering("500 Oops"), "other")({}, ignore)) == [b"ok"]
    shmconf.set_reader(None)
    assert list(HealthMiddleware(app_answering("500 Oops"))({}, ignore)) == [b"ok"]
    assert counted == [True]


def test_the_middleware_passes_file_bodies_through(
    reader: Reader[Any], counted: list[bool], tmp_path: Path
) -> None:
    class FileWrapper:
        def __init__(self, path: Path) -> None:
            self.path = path

        def __iter__(self) -> Iterator[bytes]:
            yield self.path.read_bytes()

    path = tmp_path / "body"
    path.write_bytes(b"from a file")
    body = FileWrapper(path)
    app = app_answering("200 OK", lambda: body)
    environ = {"wsgi.file_wrapper": FileWrapper}
    assert HealthMiddleware(app)(environ, lambda *args: None) is body
    assert counted == [False]


def test_the_middleware_leaves_out_a_request_that_straddled_a_new_version(
    publisher: Publisher, reader: Reader[Any], counted: list[bool]
) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        publisher.publish({"v": 2})
        reader.get()  # adopts it: this reader has no adoption thread
        start_response("500 Oops", [])
        return [b""]

    HealthMiddleware(app)({}, lambda *args: None)
    assert counted == []


# -- ASGI: the lifespan wrapper ---------------------------------------------------------


def asgi_app(status: int | None, *, raises: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if status is not None:
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        if raises:
            raise RuntimeError("the app failed")

    return app


def call(app: Any, scope_type: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": scope_type}, receive, send))
    return sent


@pytest.mark.parametrize(("app", "failed"), [
    (asgi_app(200), False),
    (asgi_app(404), False),
    (asgi_app(500), True),
    (asgi_app(None), True),  # returned without a response: the server answers 500
])
def test_the_asgi_wrapper_counts_5xx_and_no_response_as_failures(
    name: str, reader: Reader[Any], counted: list[bool], app: Any, failed: bool
) -> None:
    for pin in (True, False):
        call(lifespan(app, name, pin_requests=pin))
    assert counted == [failed, failed]


def test_the_asgi_wrapper_counts_an_exception_and_passes_it_on(
    name: str, reader: Reader[Any], counted: list[bool]
) -> None:
    for app in (asgi_app(None, raises=True), asgi_app(200, raises=True)):
        with pytest.raises(RuntimeError, match="the app failed"):
            call(lifespan(app, name))
    assert counted == [True, True]
    # A WebSocket is not counted, nor a request before the worker attached.
    call(lifespan(asgi_app(None), name), "websocket")
    shmconf.set_reader(None)
    call(lifespan(asgi_app(500), name))
    assert counted == [True, True]


def test_the_asgi_wrapper_leaves_out_a_request_that_straddled_a_new_version(
    name: str, publisher: Publisher, reader: Reader[Any], counted: list[bool]
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        publisher.publish({"v": 2})
        reader.get()
        await send({"type": "http.response.start", "status": 500, "headers": []})

    call(lifespan(app, name, pin_requests=False))
    assert counted == []


@pytest.mark.parametrize("wired", [True, False])
def test_hooks_that_roll_out_warn_a_worker_whose_config_counts_no_request(
        name: str, publisher: Publisher, tmp_path: Path, wired: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "app.json"
    source.write_text("{}")
    hooks = ShmconfHooks(name, [source], rollout={"canary": 1})
    post_request = hooks.post_request if wired else (lambda *args: None)
    worker = SimpleNamespace(cfg=SimpleNamespace(post_request=post_request))
    hooks.post_fork(None, worker)
    try:
        warned = [r for r in caplog.records if "does not set post_request" in r.getMessage()]
        assert bool(warned) is not wired
    finally:
        hooks.worker_exit(None, worker)
