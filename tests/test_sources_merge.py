"""Layering: precedence, lists, nulls, environment overrides, and who set what."""

from __future__ import annotations

from pathlib import Path

from shmconf.sources import deep_merge, load_sources


def test_deep_merge_rules() -> None:
    base = {"db": {"host": "a", "port": 1, "opts": {"x": 1}}, "servers": [1, 2], "keep": True}
    over = {"db": {"host": "b", "opts": None}, "servers": [3], "new": {"k": "v"}}
    assert deep_merge(base, over) == {
        "db": {"host": "b", "port": 1, "opts": None},  # null sets None, does not delete
        "servers": [3],  # lists are replaced whole
        "keep": True,
        "new": {"k": "v"},
    }
    assert base["db"]["host"] == "a"  # inputs untouched
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": 1}) == {"a": 1}


def test_later_sources_win_and_origins_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("db:\n  host: a\n  port: 1\nname: svc\n")
    (tmp_path / "prod.toml").write_text("[db]\nhost = 'b'\n")
    loaded = load_sources([tmp_path / "base.yaml", tmp_path / "prod.toml"])
    assert loaded.data == {"db": {"host": "b", "port": 1}, "name": "svc"}
    assert loaded.origin_of(("db", "host")) == str(tmp_path / "prod.toml")
    assert loaded.origin_of(("db", "port")) == str(tmp_path / "base.yaml")
    assert loaded.origin_of(("db", "port", 0)) == str(tmp_path / "base.yaml")
    assert loaded.origin_of(("missing",)) is None
    assert loaded.sources == (str(tmp_path / "base.yaml"), str(tmp_path / "prod.toml"))


def test_env_overrides_are_off_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"db": {"host": "a"}}')
    environ = {"APP_DB__HOST": "env-host", "app_db__pool": '{"size": 5}', "APP_LIST": "[1, 2]",
               "OTHER": "x", "APP_BAD_JSON": "[not json"}
    assert load_sources([tmp_path / "a.json"], environ=environ).data == {"db": {"host": "a"}}
    loaded = load_sources([tmp_path / "a.json"], env_prefix="APP_", environ=environ)
    assert loaded.data == {"db": {"host": "env-host", "pool": {"size": 5}}, "list": [1, 2],
                           "bad_json": "[not json"}
    assert loaded.origin_of(("db", "host")) == "env:APP_DB__HOST"


def test_same_content_in_another_order_merges_equal(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("b: 2\na: 1\n")
    (tmp_path / "b.json").write_text('{"a": 1, "b": 2}')
    assert load_sources([tmp_path / "a.yaml"]).data == load_sources([tmp_path / "b.json"]).data
