"""Model-less snapshots: deeply read-only, and plain data to json and orjson.

Every test runs on both freezes: the C one (shmconf._speedups, in place) and
the Python one it stands in for where the extension is not built.
"""

from __future__ import annotations

import copy
import json

import orjson
import pytest

import shmconf
from shmconf import frozen
from shmconf._fastpath import speedups
from shmconf.frozen import FrozenDict, FrozenList, freeze, loads


@pytest.fixture(autouse=True, params=["c", "python"])
def freeze_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which freeze the test runs on (the C one is skipped where it is not built)."""
    if request.param == "python":
        monkeypatch.setattr(frozen, "speedups", None)
        monkeypatch.setattr(frozen, "_freeze", frozen._freeze_owned)
    elif speedups is None:
        pytest.skip("C speedups off or not built")
    return str(request.param)


DATA = {"a": 1, "nested": {"list": [1, {"deep": "x"}], "empty": {}}, "s": "t"}


def test_freeze_keeps_equality_and_serializes_as_is() -> None:
    snapshot = freeze(DATA)
    assert snapshot == DATA
    assert isinstance(snapshot, dict)
    assert isinstance(snapshot["nested"]["list"], list)
    assert json.loads(json.dumps(snapshot)) == DATA
    assert orjson.loads(orjson.dumps(snapshot)) == DATA


@pytest.mark.parametrize("change", [
    lambda s: s.__setitem__("a", 2), lambda s: s.__delitem__("a"), lambda s: s.clear(),
    lambda s: s.pop("a"), lambda s: s.popitem(), lambda s: s.setdefault("z", 1),
    lambda s: s.update(z=1), lambda s: s["nested"].__setitem__("x", 1),
    lambda s: s["nested"]["list"].append(2), lambda s: s["nested"]["list"].__setitem__(0, 9),
    lambda s: s["nested"]["list"][1].__setitem__("deep", "y"),
    lambda s: s["nested"]["list"].extend([1]), lambda s: s["nested"]["list"].sort(),
    lambda s: s["nested"]["list"].reverse(), lambda s: s["nested"]["list"].remove(1),
    lambda s: s["nested"]["list"].insert(0, 1), lambda s: s["nested"]["list"].pop(),
])
def test_every_change_is_refused_at_every_depth(change: object) -> None:
    snapshot = freeze(DATA)
    with pytest.raises(TypeError, match="read-only"):
        change(snapshot)  # type: ignore[operator]
    assert snapshot == DATA


def test_in_place_operators_are_refused() -> None:
    snapshot = freeze(DATA)
    with pytest.raises(TypeError, match="read-only"):
        snapshot |= {"z": 1}
    items = snapshot["nested"]["list"]
    with pytest.raises(TypeError, match="read-only"):
        items += [3]


def test_a_copy_is_plain_mutable_data() -> None:
    snapshot = freeze(DATA)
    deep = copy.deepcopy(snapshot)
    assert type(deep) is dict
    assert type(deep["nested"]["list"]) is list
    deep["nested"]["list"].append(3)
    assert snapshot == DATA
    assert type(copy.copy(snapshot)) is dict


def test_get_returns_frozen_containers(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish(DATA)
        with shmconf.attach(name) as reader:
            cfg = reader.get()
            assert isinstance(cfg, FrozenDict)
            assert isinstance(cfg["nested"]["list"], FrozenList)
            with pytest.raises(TypeError):
                cfg["a"] = 2  # type: ignore[index]
            assert json.loads(json.dumps(cfg)) == DATA
        publisher.unlink()


def test_init_cannot_refill_a_snapshot() -> None:
    snapshot = freeze(DATA)
    with pytest.raises(TypeError, match="read-only"):
        snapshot.__init__({"q": 1})  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        snapshot["nested"]["list"].__init__([7])  # type: ignore[misc]
    assert snapshot == DATA


NESTED = b'[{"a": [[1, {"b": []}], {}]}, [[["x"]]], 3, null]'


def _containers(value: object) -> list[object]:
    found = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            found.append(node)
            stack.extend(node)
    return found


@pytest.mark.parametrize("build", [lambda: loads(NESTED), lambda: freeze(json.loads(NESTED))])
def test_every_container_is_read_only_lists_of_lists_too(build: object) -> None:
    snapshot = build()  # type: ignore[operator]
    assert snapshot == json.loads(NESTED)
    assert {type(c) for c in _containers(snapshot)} == {FrozenDict, FrozenList}
    assert len(_containers(snapshot)) == len(_containers(json.loads(NESTED)))


def test_freeze_leaves_its_argument_alone() -> None:
    data = json.loads(NESTED)
    leaf = data[0]
    freeze(data)
    assert {type(c) for c in _containers(data)} == {dict, list}
    assert data[0] is leaf


def test_loads_refuses_what_is_not_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads(b"{not json")


def test_a_large_payload_parsed_in_sections_is_the_same_snapshot() -> None:
    from shmconf import content
    from shmconf.frozen import loads_in_sections

    data = {
        "version": 7,
        "big": [{"name": f"n{i}", "tags": ["a", "b"], "w": i / 3} for i in range(6000)],
        "other": {"nested": {"x": [1, 2, [3, {"y": None}]]}, "flag": True},
        "small": [1, 2],
        "zeta": "z" * 100_000,
    }
    payload = content.canonical(data)
    cuts = content.sections(data, payload)
    assert cuts is not None
    assert sum(kind == "items" for _, _, _, kind in cuts) > 3  # the big list is cut
    pauses = []
    got = loads_in_sections(payload, cuts, lambda: pauses.append(1))
    assert got == loads(payload) == data
    assert len(pauses) == len(cuts)
    assert type(got) is FrozenDict
    assert type(got["big"]) is FrozenList
    assert type(got["big"][5]) is FrozenDict
    assert list(got) == sorted(data)  # the payload's key order
    assert content.sections({"a": 1}, content.canonical({"a": 1})) is None  # small: none


def test_a_new_snapshot_shares_the_sections_that_did_not_change(freeze_in: str) -> None:
    if freeze_in == "c":
        pytest.skip("the C freeze is cheaper than the comparison: it shares nothing")
    old = loads(b'{"a": {"x": [1, 2]}, "b": [{"y": 1}, {"z": 2}], "v": 1}')
    new = loads(b'{"a": {"x": [1, 2]}, "b": [{"y": 1}, {"z": 3}], "v": 2}', old)
    assert new == {"a": {"x": [1, 2]}, "b": [{"y": 1}, {"z": 3}], "v": 2}
    assert new["a"] is old["a"]  # unchanged: taken as it is
    assert new["b"] is not old["b"]
    assert type(new["b"]) is FrozenList
    assert type(new["b"][1]) is FrozenDict


@pytest.mark.parametrize(("before", "after"), [
    (b'{"a": {"t": 1}}', b'{"a": {"t": 1.0}}'),
    (b'{"a": {"t": 1}}', b'{"a": {"t": true}}'),
    (b'{"a": [0]}', b'{"a": [false]}'),
    (b'{"a": [1.0]}', b'{"a": [1]}'),
    (b'{"a": {"b": {"c": 2}}}', b'{"a": {"b": {"c": 2.0}}}'),
])
def test_a_value_that_only_changed_type_is_not_taken_from_the_old_snapshot(
        before: bytes, after: bytes) -> None:
    new = loads(after, loads(before))
    assert orjson.dumps(new) == orjson.dumps(orjson.loads(after))
