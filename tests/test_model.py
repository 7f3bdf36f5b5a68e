"""What is published for a model, and what a worker validates it back into.

The publisher publishes the model's validated data (defaults included), by
field name, secrets included; every worker validates it into an instance
equal to the publisher's, frozen, without reading its own environment.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import pytest
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

import shmconf
from shmconf.model import apply_environment, published_data, snapshot_model, validate
from tests import models as suite_models
from tests.apps import models as app_models
from tests.helpers import REPO

# -- every model the suite uses, and some hard ones ------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Endpoint(BaseModel):  # not frozen: its snapshot model is
    url: str
    token: SecretStr = Field(alias="apiToken")


class Tricky(BaseModel):
    plain: int = 1
    aliased: str = Field("a", alias="aliasedKey")
    serialized: str = Field("s", serialization_alias="servedAs")
    choices: str = Field("c", validation_alias=AliasChoices("oneWay", "otherWay"))
    secret: SecretStr = Field(SecretStr("top"), alias="apiAuth")
    raw_secret: SecretBytes = SecretBytes(b"bytes")
    when: datetime.datetime = datetime.datetime(2026, 1, 2, 3, 4, 5)
    color: Color = Color.RED
    endpoints: list[Endpoint] = []
    by_name: dict[str, Endpoint] = {}
    maybe: Optional[Endpoint] = None  # noqa: UP045 - typing.Optional on purpose
    either: Union[int, Endpoint] = 0  # noqa: UP007 - typing.Union on purpose
    annotated: Annotated[Endpoint | None, Field(description="an endpoint")] = None
    tags: set[str] = set()


class Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHMCONF_TEST_APP_",
                                      env_nested_delimiter="__")
    port: int = 80
    greeting: str = "hello"
    database: Endpoint = Endpoint(url="db://default", apiToken="t0")


ENDPOINT = {"url": "https://x", "apiToken": "sekret-1"}

#: (model, source data): every model of the suite with data it accepts.
CASES: list[tuple[type[Any], dict[str, Any]]] = [
    (suite_models.Settings, {"greeting": "hi",
                             "database": {"host": "db", "password": "pw-1"}}),
    (suite_models.Database, {"host": "db", "password": "pw-2"}),
    (app_models.Seq, {"seq": 1, "check": app_models.check_of(1), "token": "pw-1"}),
    (Endpoint, ENDPOINT),
    (Tricky, {}),
    (Tricky, {"plain": 2, "aliasedKey": "b", "servedAs": "ignored", "serialized": "t",
              "otherWay": "d", "apiAuth": "s3cret", "raw_secret": "b2",
              "when": "2026-11-22T10:00:00+01:00", "color": "blue",
              "endpoints": [ENDPOINT], "by_name": {"one": ENDPOINT}, "maybe": ENDPOINT,
              "either": ENDPOINT, "annotated": ENDPOINT, "tags": ["a", "b"]}),
    (Env, {"port": 81, "database": ENDPOINT}),
]


@pytest.mark.parametrize(("model", "data"), CASES)
def test_published_data_validates_back_into_an_equal_instance(model: type[Any],
                                                               data: dict[str, Any]) -> None:
    snapshot = snapshot_model(model)
    with apply_environment():
        published = snapshot.model_validate(data)
    form = published_data(published)
    json.dumps(form)  # plain JSON data
    back = snapshot.model_validate(json.loads(json.dumps(form)))
    assert back == published
    # As a worker reads it: the published JSON bytes, validated by field name.
    assert validate(snapshot, json.dumps(form).encode(), by_name=True) == published
    for secret in ("sekret-1", "s3cret", "pw-1", "pw-2"):
        if secret in json.dumps(data):
            assert secret in json.dumps(form)  # secrets are published, not masked
    assert isinstance(back, model)
    assert type(back).__name__ == model.__name__


def test_snapshots_refuse_assignment_nested_models_included() -> None:
    snapshot = snapshot_model(Tricky)
    cfg = snapshot.model_validate({"endpoints": [ENDPOINT], "maybe": ENDPOINT})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.plain = 3
    with pytest.raises(ValidationError, match="frozen"):
        cfg.endpoints[0].url = "https://evil"
    with pytest.raises(ValidationError, match="frozen"):
        cfg.maybe.url = "https://evil"  # type: ignore[union-attr]


# -- BaseSettings: the environment is the publisher's, once --------------------

WORKER = """
import json, sys
import shmconf
from tests.test_model import Env
reader = shmconf.attach(sys.argv[1], model=Env, timeout=10)
cfg = reader.get()
print(json.dumps({"port": cfg.port, "greeting": cfg.greeting,
                  "token": cfg.database.token.get_secret_value()}))
reader.close()
"""


def read_in_worker(name: str, **environment: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, name], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **environment}, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_base_settings_workers_see_the_publishers_values(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.json").write_text(
        '{"greeting": "from the file", "database": {"url": "db://file", "apiToken": "t1"}}',
        encoding="utf-8")
    # The publisher's environment overrides the files, with the model's own rules.
    monkeypatch.setenv("SHMCONF_TEST_APP_PORT", "8080")
    monkeypatch.setenv("SHMCONF_TEST_APP_DATABASE__APITOKEN", "token-from-env")
    with shmconf.Publisher(name, sources=[tmp_path / "app.json"], model=Env) as publisher:
        publisher.publish_now()
        monkeypatch.delenv("SHMCONF_TEST_APP_PORT")
        # A worker's own environment changes nothing, nor breaks anything.
        for worker_env in ({}, {"SHMCONF_TEST_APP_PORT": "222"},
                           {"SHMCONF_TEST_APP_PORT": "notint",
                            "SHMCONF_TEST_APP_GREETING": "worker"}):
            assert read_in_worker(name, **worker_env) == {
                "port": 8080, "greeting": "from the file", "token": "token-from-env"}
        publisher.unlink()


def test_base_settings_refuse_env_prefix(name: str) -> None:
    with pytest.raises(ValueError, match="Env reads its own environment"):
        shmconf.Publisher(name, model=Env, env_prefix="APP_")


# -- models that validate in their own ways --------------------------------------


def publish_and_read(name: str, model: type[Any], data: dict[str, Any]) -> Any:
    with shmconf.Publisher(name, model=model) as publisher:
        publisher.publish(data)
        with shmconf.attach(name, model=model) as reader:
            cfg = reader.get()
        publisher.unlink()
    return cfg


class Derived(BaseModel):
    a: int = 1
    b: int = 0

    @model_validator(mode="after")
    def fill(self) -> Derived:
        if self.b == 0:
            self.b = self.a * 10
        return self


def test_an_after_validator_may_assign_fields(name: str) -> None:
    cfg = publish_and_read(name, Derived, {"a": 2})
    assert (cfg.a, cfg.b) == (2, 20)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.b = 3


class Node(BaseModel):
    value: int = 0
    children: list[Node] = []


def test_a_recursive_model_is_published_and_read(name: str) -> None:
    cfg = publish_and_read(name, Node, {"value": 1, "children": [{"value": 2}]})
    assert cfg == Node(value=1, children=[Node(value=2)])


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    when: datetime.datetime
    key: uuid.UUID
    pair: tuple[int, int]


def test_a_strict_model_reads_back_what_json_has_no_type_for(name: str) -> None:
    # A datetime, a UUID and a tuple are strings and a list in JSON: strict
    # validation accepts them from JSON, as the publisher's check validates,
    # and would refuse them from parsed Python data.
    data = {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "key": uuid.UUID(int=5),
            "pair": (1, 2)}
    cfg = publish_and_read(name, Strict, data)
    assert cfg == Strict(**data)


class Scaled(BaseModel):
    size: Annotated[int, AfterValidator(lambda v: v * 1024)] = 1


class Infinite(BaseModel):
    timeout: float = float("inf")


class Hidden(BaseModel):
    kept: str = Field("default", exclude=True)


@pytest.mark.parametrize(("model", "data", "problem"), [
    (Scaled, {"size": 4}, "size: a worker would read another value"),
    (Infinite, {}, "timeout: Input should be a valid number"),
    (Hidden, {"kept": "from-file"}, "kept: a worker would read another value"),
])
def test_a_version_workers_would_read_otherwise_is_refused(
        name: str, model: type[Any], data: dict[str, Any], problem: str) -> None:
    with shmconf.Publisher(name, model=model) as publisher:
        with pytest.raises(shmconf.ConfigValidationError, match=re.escape(problem)):
            publisher.publish(data)
        assert publisher.generation == 0
        publisher.unlink()


class Swapped(BaseModel):
    x: int = Field(0, alias="y")
    y: int = Field(0, alias="x")


def test_a_name_that_is_another_fields_alias_keeps_its_value(name: str) -> None:
    cfg = publish_and_read(name, Swapped, {"y": 1, "x": 2})
    assert (cfg.x, cfg.y) == (1, 2)


class One(BaseModel):
    model_config = ConfigDict(frozen=True)
    a: int = 1


def test_a_snapshot_hashes_as_the_applications_instance() -> None:
    snapshot = snapshot_model(One).model_validate({})
    assert snapshot == One()
    assert hash(snapshot) == hash(One())
    assert len({snapshot, One()}) == 1


def test_base_settings_workers_read_no_dotenv_file(tmp_path: Path, name: str) -> None:
    with shmconf.Publisher(name, model=Env) as publisher:
        publisher.publish({"port": 70})
        (tmp_path / ".env").write_bytes(b"SHMCONF_TEST_APP_PORT=\xff\xfe\n")
        result = subprocess.run(
            [sys.executable, "-c", WORKER, name], cwd=tmp_path, capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["port"] == 70
        publisher.unlink()


class DotenvEnv(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHMCONF_TEST_APP_", env_file=".env")
    port: int = 80
