"""Layering: precedence, lists, nulls, environment overrides, and who set what."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from shmconf import SourceError
from shmconf.errors import validation_problems
from shmconf.sources import LoadedConfig, Source, deep_merge, load_sources


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


class StaticSource(Source):
    """A non-file source returning fixed data (as an etcd source would)."""

    def __init__(self, name: str, data: Any, revision: int | None = None) -> None:
        self.name = name
        self.data = data
        self.revision = revision

    def load(self) -> Any:
        return self.data


# -- deep_merge ---------------------------------------------------------------------


def test_mappings_merge_recursively_and_later_wins() -> None:
    base = {"db": {"host": "a", "port": 1, "opts": {"x": 1, "y": 2}}, "keep": True}
    over = {"db": {"host": "b", "opts": {"y": 3}}, "new": {"k": "v"}}
    assert deep_merge(base, over) == {
        "db": {"host": "b", "port": 1, "opts": {"x": 1, "y": 3}}, "keep": True,
        "new": {"k": "v"},
    }


def test_lists_are_replaced_whole() -> None:
    assert deep_merge({"servers": [1, 2, 3]}, {"servers": [4]}) == {"servers": [4]}
    assert deep_merge({"servers": [1, 2]}, {"servers": []}) == {"servers": []}


def test_explicit_null_sets_none_and_keeps_the_key() -> None:
    merged = deep_merge({"a": 1, "b": {"c": 2}}, {"a": None, "b": None})
    assert merged == {"a": None, "b": None}


def test_mapping_and_scalar_replace_each_other() -> None:
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": 1}) == {"a": 1}
    assert deep_merge({"a": [1]}, {"a": {"b": 2}}) == {"a": {"b": 2}}


def test_inputs_are_untouched_and_share_nothing_with_the_result() -> None:
    base = {"db": {"host": "a", "tags": ["x"]}, "only_base": {"k": [1]}}
    over = {"db": {"port": 2}, "only_over": {"k": [2]}}
    merged = deep_merge(base, over)
    merged["db"]["tags"].append("y")
    merged["only_base"]["k"].append(9)
    merged["only_over"]["k"].append(9)
    assert base == {"db": {"host": "a", "tags": ["x"]}, "only_base": {"k": [1]}}
    assert over == {"db": {"port": 2}, "only_over": {"k": [2]}}


# -- load_sources: precedence and origins ---------------------------------------------


def test_later_sources_win_across_formats(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "db:\n  host: a\n  port: 1\nname: svc\nservers: [a, b]\n")
    prod = write(tmp_path, "prod.toml", "servers = ['c']\n[db]\nhost = 'b'\n")
    local = write(tmp_path, "local.env", "DB__PORT=2\n")
    loaded = load_sources([base, prod, Path(local)])
    assert loaded.data == {"db": {"host": "b", "port": "2"}, "name": "svc", "servers": ["c"]}
    assert loaded.sources == (base, prod, local)


def test_origins_record_every_key_a_source_set(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "db:\n  host: a\n  port: 1\nname: svc\n")
    prod = write(tmp_path, "prod.json", '{"db": {"host": "b"}}')
    loaded = load_sources([base, prod])
    assert loaded.origins == {
        ("db",): prod,  # the last source that set anything in it
        ("db", "host"): prod,
        ("db", "port"): base,
        ("name",): base,
    }


def test_origins_below_a_replaced_value_are_dropped(tmp_path: Path) -> None:
    base = write(tmp_path, "base.json", '{"db": {"host": "a", "port": 1}, "x": 1}')
    flat = write(tmp_path, "flat.json", '{"db": "sqlite://", "x": {"y": 2}}')
    loaded = load_sources([base, flat])
    assert loaded.data == {"db": "sqlite://", "x": {"y": 2}}
    assert loaded.origins == {("db",): flat, ("x",): flat, ("x", "y"): flat}
    assert loaded.origin_of(("db", "host")) == flat


def test_origin_of_stops_at_lists_and_falls_back_to_prefixes(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "servers: [{port: 1}]\ndb: {host: a}\n")
    prod = write(tmp_path, "prod.yaml", "db: {port: 2}\n")
    loaded = load_sources([base, prod])
    assert loaded.origin_of(("servers", 0, "port")) == base
    assert loaded.origin_of(["db", "port"]) == prod
    assert loaded.origin_of(("db", "host", "[key]")) == base
    assert loaded.origin_of(("db", "missing")) == prod
    assert loaded.origin_of(("missing",)) is None
    assert loaded.origin_of(()) is None


def test_origin_of_does_not_take_a_list_index_for_a_key() -> None:
    loaded = LoadedConfig({"m": {"0": "x"}}, {("m",): "a.yaml", ("m", "0"): "b.yaml"})
    assert loaded.origin_of(("m", "0")) == "b.yaml"
    assert loaded.origin_of(("m", 0)) == "a.yaml"


def test_model_errors_name_the_source_that_set_the_field(tmp_path: Path) -> None:
    class Server(BaseModel):
        port: int

    class Settings(BaseModel):
        workers: int
        servers: list[Server]

    base = write(tmp_path, "base.yaml", "workers: 4\nservers: [{port: 1}, {port: x}]\n")
    prod = write(tmp_path, "prod.toml", "workers = 'many'\n")
    loaded = load_sources([base, prod])
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(loaded.data)
    problems = validation_problems(info.value, loaded.origin_of)
    assert len(problems) == 2
    assert problems[0].startswith("workers: ")
    assert problems[0].endswith(f"(set in {prod})")
    assert problems[1].startswith("servers.1.port: ")
    assert problems[1].endswith(f"(set in {base})")
    assert "many" not in "".join(problems)


def test_a_failing_source_stops_the_load_with_its_error(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", "a: 1\n")
    bad = write(tmp_path, "bad.json", '{"a": }')
    with pytest.raises(SourceError, match=rf"^{re.escape(bad)}:1:7: "):
        load_sources([good, bad])
    with pytest.raises(SourceError, match=r"unknown file type '\.ini'"):
        load_sources([good, str(tmp_path / "x.ini")])


def test_no_sources_is_an_empty_config() -> None:
    assert load_sources([]) == LoadedConfig({}, {}, ())


# -- non-file sources -----------------------------------------------------------------


def test_non_file_sources_are_held_to_the_same_contract(tmp_path: Path) -> None:
    when = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    source = StaticSource("etcd://h/app/", {"at": when, "pair": (1, 2)}, revision=7)
    loaded = load_sources([write(tmp_path, "a.json", '{"x": 1}'), source])
    assert loaded.data == {"x": 1, "at": "2026-11-22T10:00:00+00:00", "pair": [1, 2]}
    assert loaded.origin_of(("at",)) == "etcd://h/app/"
    assert loaded.revisions == {"etcd://h/app/": 7}


@pytest.mark.parametrize(("data", "reason"), [
    ([1, 2], r"\(root\): top level must be a mapping, found list"),
    ({"a": {"b": float("nan")}}, r"a\.b: NaN and Infinity"),
    ({"a": [2**64]}, r"a\.0: integer outside the 64-bit range"),
    ({1: "x"}, r"1: found a key of type integer; keys must be strings"),
    ({"a": object()}, r"a: found a value of type object; config values are strings"),
])
def test_bad_data_from_a_non_file_source_names_it_and_the_key(data: Any, reason: str) -> None:
    with pytest.raises(SourceError, match=rf"^etcd://h/app/: {reason}"):
        load_sources([StaticSource("etcd://h/app/", data)])


def test_a_shared_object_counts_once_per_place(tmp_path: Path) -> None:
    row = list(range(1_000))
    table = [row] * 1_001  # a million values once expanded, a kilobyte in memory
    with pytest.raises(SourceError, match=r"^s: t: expands to 1002002 values"):
        load_sources([StaticSource("s", {"t": table})])


# -- environment overrides ------------------------------------------------------------


@pytest.fixture
def base_file(tmp_path: Path) -> str:
    return write(tmp_path, "base.json", '{"db": {"host": "a", "port": 1}, "debug": false}')


def test_environment_is_ignored_without_a_prefix(base_file: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DB__HOST", "env-host")
    environ = {"APP_DB__HOST": "env-host"}
    assert load_sources([base_file], environ=environ).data["db"]["host"] == "a"
    assert load_sources([base_file]).data["db"]["host"] == "a"


def test_prefixed_variables_override_after_all_sources(tmp_path: Path, base_file: str) -> None:
    later = write(tmp_path, "later.yaml", "db: {host: later}\n")
    environ = {"APP_DB__HOST": "env-host", "APP_DEBUG": "true", "OTHER_DB__HOST": "no"}
    loaded = load_sources([base_file, later], env_prefix="APP_", environ=environ)
    assert loaded.data == {"db": {"host": "env-host", "port": 1}, "debug": "true"}
    assert loaded.origin_of(("db", "host")) == "env:APP_DB__HOST"
    assert loaded.origin_of(("db", "port")) == base_file
    assert loaded.sources == (base_file, later)  # files only; env origins say env:


def test_prefix_and_keys_match_case_insensitively_new_keys_stay_as_written(base_file: str
                                                                          ) -> None:
    environ = {"app_Db__Host": "h", "App_NEW": "n"}
    loaded = load_sources([base_file], env_prefix="APP_", environ=environ)
    assert loaded.data["db"]["host"] == "h"  # the existing keys' spelling
    assert loaded.data["NEW"] == "n"  # nothing matched: as written
    assert loaded.origin_of(("NEW",)) == "env:App_NEW"
    assert loaded.unmatched == ()  # without a model, nothing is reported


def test_json_objects_and_arrays_are_parsed_everything_else_is_a_string(base_file: str
                                                                        ) -> None:
    environ = {"APP_DB__OPTS": '{"ssl": true, "n": 5}', "APP_HOSTS": ' ["a", "b"]',
               "APP_PORT": "5432", "APP_BROKEN": "[not json", "APP_NAN": "[NaN]",
               "APP_DUP": '{"a": 1, "a": 2}', "APP_QUOTED": '"x"', "APP_EMPTY": ""}
    data = load_sources([base_file], env_prefix="APP_", environ=environ).data
    assert data["db"]["OPTS"] == {"ssl": True, "n": 5}
    assert data["HOSTS"] == ["a", "b"]
    assert data["PORT"] == "5432"
    assert data["BROKEN"] == "[not json"
    assert data["NAN"] == "[NaN]"
    assert data["DUP"] == '{"a": 1, "a": 2}'
    assert data["QUOTED"] == '"x"'
    assert data["EMPTY"] == ""


def test_a_json_object_from_the_environment_merges_into_the_mapping(base_file: str) -> None:
    environ = {"APP_DB": '{"port": 2}'}
    loaded = load_sources([base_file], env_prefix="APP_", environ=environ)
    assert loaded.data["db"] == {"host": "a", "port": 2}
    assert loaded.origin_of(("db", "port")) == "env:APP_DB"
    assert loaded.origin_of(("db", "host")) == base_file


def test_variables_apply_in_name_order(base_file: str) -> None:
    # APP_DB (a scalar) sorts before APP_DB__HOST, which then replaces it by a mapping.
    environ = {"APP_DB__HOST": "h", "APP_DB": "flat"}
    data = load_sources([base_file], env_prefix="APP_", environ=environ).data
    assert data["db"] == {"HOST": "h"}


def test_the_prefix_alone_is_not_a_key(base_file: str) -> None:
    data = load_sources([base_file], env_prefix="APP_", environ={"APP_": "x"}).data
    assert "" not in data


def test_os_environ_is_read_by_default(base_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHMCONF_TEST_DB__HOST", "from-env")
    loaded = load_sources([base_file], env_prefix="SHMCONF_TEST_")
    assert loaded.data["db"]["host"] == "from-env"


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("APP_DB____HOST", "x", r"key 'DB____HOST' has an empty part between '__'"),
    ("APP_LIMITS", '{"max": 18446744073709551616}',
     r"LIMITS\.max: integer outside the 64-bit range"),
    ("APP_DEEP", "[" * 70 + "]" * 70, r"DEEP\.0\.0.*nested deeper than 64 levels"),
])
def test_bad_variables_name_the_variable_and_the_key(base_file: str, variable: str, value: str,
                                                     reason: str) -> None:
    with pytest.raises(SourceError, match=rf"^env:{variable}: {reason}") as info:
        load_sources([base_file], env_prefix="APP_", environ={variable: value})
    assert "18446744073709551616" not in str(info.value)


class Upstream(BaseModel):
    base_url: str = Field("http://default", alias="baseURL")


class Client(BaseModel):
    apiKey: str = "none"
    timeout: float = 1.0
    upstream: Upstream = Upstream()


def test_overrides_match_model_fields_and_aliases_case_insensitively(tmp_path: Path) -> None:
    base = write(tmp_path, "base.json", '{"timeout": 2}')
    environ = {"MYAPP_APIKEY": "k", "MYAPP_UPSTREAM__BASEURL": "http://u",
               "MYAPP_TIMEOUT": "3"}
    loaded = load_sources([base], env_prefix="MYAPP_", environ=environ, model=Client)
    assert loaded.data == {"timeout": "3", "apiKey": "k", "upstream": {"baseURL": "http://u"}}
    assert loaded.unmatched == ()
    assert Client.model_validate(loaded.data) == Client(apiKey="k", timeout=3,
                                                        upstream=Upstream(baseURL="http://u"))


def test_overrides_that_match_no_field_are_reported(tmp_path: Path) -> None:
    base = write(tmp_path, "base.json", "{}")
    environ = {"MYAPP_APIKEY": "k", "MYAPP_TYPO": "x", "MYAPP_UPSTREAM__NOPE": "y"}
    loaded = load_sources([base], env_prefix="MYAPP_", environ=environ, model=Client)
    assert loaded.unmatched == ("MYAPP_TYPO", "MYAPP_UPSTREAM__NOPE")
    assert loaded.data["TYPO"] == "x"
