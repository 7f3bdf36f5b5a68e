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
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import pytest
from pydantic import AliasChoices, BaseModel, Field, SecretBytes, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

import shmconf
from shmconf.model import apply_environment, published_data, snapshot_model
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
    assert repr(back) == repr(published)
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
