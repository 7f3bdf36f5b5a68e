"""YAML merge keys by the spec, and messages, the same on every parser build and release.

Every test here runs on both of PyYAML's parsers: libyaml (``CSafeLoader``)
and the pure-Python one. ``make test`` runs this file once more on the
PyYAML release before 6.0.4, which changed what its own merge handling
returns; shmconf never uses it, so the results must not change.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmconf
from shmconf.sources.yaml import YamlSource
from tests.helpers import load_fails, load_text, python

pytestmark = pytest.mark.usefixtures("yaml_parser")


def load(tmp_path: Path, text: str) -> dict[str, Any]:
    return load_text(tmp_path, "app.yaml", text)


def test_a_merged_mapping_brings_its_own_merges(tmp_path: Path) -> None:
    data = load(tmp_path, "base: &base {x: 1, y: 1}\n"
                          "prod: &prod {<<: *base, x: 2}\n"
                          "replica: {<<: *prod}\n")
    assert data["prod"] == {"x": 2, "y": 1}
    assert data["replica"] == {"x": 2, "y": 1}


def test_earlier_mappings_in_a_merge_list_win(tmp_path: Path) -> None:
    data = load(tmp_path, "a: &a {timeout: 1, t: 1}\n"
                          "b: &b {timeout: 2, t: 2}\n"
                          "c: {<<: [*a, *b]}\n"
                          "d: {<<: [*b, *a], t: 3}\n")
    assert data["c"] == {"timeout": 1, "t": 1}
    assert data["d"] == {"timeout": 2, "t": 3}


def test_long_keys_merge_like_short_ones(tmp_path: Path) -> None:
    # Keys too long for the interpreter to intern: identity tells nothing.
    key = "connection_timeout_seconds_for_the_primary_database"
    data = load(tmp_path, f"a: &a {{{key}: 1}}\n"
                          f"b: &b {{{key}: 2}}\n"
                          "c: {<<: [*a, *b]}\n"
                          f"p: &p {{<<: *a, {key}: 3}}\n"
                          "q: {<<: *p}\n")
    assert data["c"] == {key: 1}
    assert data["q"] == {key: 3}


def test_chains_of_three_levels(tmp_path: Path) -> None:
    text = ("l0: &l0 {a: 0, b: 0, c: 0, d: 0}\n"
            "l1: &l1 {<<: *l0, b: 1}\n"
            "l2: &l2 {<<: *l1, c: 2}\n"
            "l3: &l3 {<<: [*l2, {d: 9, e: 9}], d: 3}\n"
            "top:\n  <<: *l3\n  e: 4\n")
    data = load(tmp_path, text)
    assert data["l3"] == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 9}
    assert data["top"] == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}


def test_own_keys_win_wherever_they_stand(tmp_path: Path) -> None:
    before = load(tmp_path, "base: &b {k: 0}\nm:\n  k: 1\n  <<: *b\n")
    after = load(tmp_path, "base: &b {k: 0}\nm:\n  <<: *b\n  k: 1\n")
    assert before["m"] == after["m"] == {"k": 1}


def test_a_merge_list_can_be_an_alias(tmp_path: Path) -> None:
    data = load(tmp_path, "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nboth: &both [*a, *b]\n"
                          "m: {<<: *both}\n")
    assert data["m"] == {"x": 1, "y": 2}


@pytest.mark.parametrize(("text", "where", "found"), [
    ("a: 1\nm:\n  <<: 5\n", ":3:7:", r"found a scalar \(int\)"),
    ("a: &a [1, 2]\nm:\n  <<: *a\n", ":1:8:", r"found a scalar \(int\)"),
    ("a: &a {x: 1}\nm:\n  <<: [*a, 7]\n", ":3:12:", r"found a scalar \(int\)"),
    ("m:\n  <<: [[{x: 1}]]\n", ":2:8:", r"found a list \(seq\)"),
])
def test_a_merge_of_anything_but_mappings_is_refused_at_its_line(
        tmp_path: Path, text: str, where: str, found: str) -> None:
    load_fails(tmp_path, "app.yaml", text,
               rf"^{where} a merge key \(<<\) takes a mapping or a list of mappings; {found}$")


def test_a_second_merge_key_is_a_duplicate(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.yaml", "a: &a {x: 1}\nb: &b {y: 1}\nm:\n  <<: *a\n  <<: *b\n",
               r"^:5:3: duplicate merge key '<<' \(first on line 4\); merge several "
               r"mappings with <<: \[\*a, \*b\]$")


def test_a_mapping_that_merges_itself_is_refused(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.yaml", "m: &m\n  x: 1\n  inner:\n    <<: *m\n",
               r"^:4:5: a merge key \(<<\) refers to a mapping that contains it$")


def test_a_quoted_merge_key_is_a_plain_key(tmp_path: Path) -> None:
    assert load(tmp_path, "'<<': {x: 1}\n") == {"<<": {"x": 1}}


@pytest.mark.parametrize("depth", [65, 2_000, 50_000])
def test_too_deep_nesting_gets_shmconfs_message_and_position(tmp_path: Path,
                                                            depth: int) -> None:
    # libyaml 0.2.5 has no depth limit, later ones refuse at 1000 levels with
    # their own words: the message and the position are shmconf's on both.
    error = load_fails(tmp_path, "app.yaml", "a: " + "[" * depth + "]" * depth + "\n",
                       r"^:1:67: nested deeper than 64 levels$")
    assert (error.line, error.column) == (1, 67)


@pytest.mark.parametrize(("text", "where", "escape"), [
    ("a: 1\nb: x\x07y\n", ":2:5:", r"\\x07"),
    ("a: 1\nb:\n  - ok\n  - \x1b[31m\n", ":4:5:", r"\\x1b"),
    ("a: \ufffe\n", ":1:4:", r"\\ufffe"),
])
def test_control_characters_are_refused_at_their_line(tmp_path: Path, text: str, where: str,
                                                      escape: str) -> None:
    load_fails(tmp_path, "app.yaml", text,
               rf"^{where} control character U\+[0-9A-F]{{4}} is not allowed in YAML; "
               rf"write it as {escape} inside double quotes$")


def test_the_advice_for_a_control_character_works(tmp_path: Path) -> None:
    assert load(tmp_path, 'a: 1\nb: "x\\x07y"\n') == {"a": 1, "b": "x\x07y"}


def test_syntax_errors_read_the_same_on_both_parsers(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["a: 1\nb: [1, 2\nc: 3\n", "a:\n  b: 1\n c: 2\n", "a: 'open\n", "a: 1\n\tb: 2\n",
             "a: *nowhere\n", "a: &x 1\nb: &x 2\n"]
    for text in texts:
        messages = []
        for use_libyaml in (True, False):
            monkeypatch.setattr(YamlSource, "libyaml", use_libyaml)
            path = tmp_path / "app.yaml"
            path.write_text(text, encoding="utf-8")
            with pytest.raises(shmconf.SourceError) as info:
                YamlSource(path).load()
            messages.append(str(info.value))
        assert messages[0] == messages[1], text


# -- a property: shmconf against a reference written for this test ------------

#: Short keys (interned by the interpreter) and long ones (not interned).
KEYS = ["a", "b", "c", "timeout_seconds_of_the_primary_connection",
        "retry_budget_of_the_secondary_connection"]


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A YAML document of anchored mappings that merge earlier ones, and its meaning.

    Each mapping ``mN`` has its own keys (integers, or aliases of earlier
    mappings as values) and a merge of nothing, one earlier mapping, or a list
    of earlier mappings (aliases or inline). The expected data comes from
    :func:`reference`, which knows nothing of PyYAML.
    """
    count = draw(st.integers(1, 6))
    specs: list[dict[str, Any]] = []
    lines = []
    for n in range(count):
        own = draw(st.dictionaries(st.sampled_from(KEYS), st.integers(0, 9), max_size=3))
        nested = {k: draw(st.integers(0, n - 1)) for k in
                  draw(st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True))} \
            if n else {}
        merges: list[int | dict[str, int]] = []
        if n:
            merges = draw(st.lists(st.one_of(
                st.integers(0, n - 1),
                st.dictionaries(st.sampled_from(KEYS), st.integers(10, 19), min_size=1,
                                max_size=2)), max_size=3))
        as_list = len(merges) != 1 or draw(st.booleans())
        own_first = draw(st.booleans())
        specs.append({"own": own, "nested": nested, "merges": merges})
        parts = [f"{k}: {v}" for k, v in own.items()] + [f"{k}: *m{v}" for k, v in nested.items()]
        if merges:
            rendered = [f"*m{m}" if isinstance(m, int) else
                        "{" + ", ".join(f"{k}: {v}" for k, v in m.items()) + "}"
                        for m in merges]
            merge = "<<: " + (f"[{', '.join(rendered)}]" if as_list else rendered[0])
            parts = [*parts, merge] if not own_first else [merge, *parts]
        lines.append(f"m{n}: &m{n} {{{', '.join(parts)}}}")
    return "\n".join(lines) + "\n", reference(specs)


def reference(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The merge-key spec, directly: own keys, then each merged mapping's keys not yet set."""
    resolved: list[dict[str, Any]] = []
    for spec in specs:
        result = dict(spec["own"])
        result.update({k: resolved[v] for k, v in spec["nested"].items()})
        for merged in spec["merges"]:
            for key, value in (resolved[merged] if isinstance(merged, int) else merged).items():
                result.setdefault(key, value)
        resolved.append(result)
    return {f"m{n}": value for n, value in enumerate(resolved)}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents())
def test_merges_match_the_reference(tmp_path: Path, document: tuple[str, dict[str, Any]]
                                    ) -> None:
    text, expected = document
    assert load(tmp_path, text) == expected, text


# -- end to end: published, then read by a worker process ---------------------

WORKER = """
import json, sys, shmconf
def plain(v):
    if hasattr(v, "items"):
        return {k: plain(x) for k, x in v.items()}
    return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
reader = shmconf.attach(sys.argv[1], timeout=10)
print(json.dumps(plain(reader.get())))
reader.close()
"""


def test_merged_values_reach_a_worker(tmp_path: Path, name: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("base: &base {x: 1, y: 1}\nprod: &prod {<<: *base, x: 2}\n"
                    "replica: {<<: *prod}\n"
                    "a: &a {timeout: 1, t: 1}\nb: &b {timeout: 2, t: 2}\nc: {<<: [*a, *b]}\n",
                    encoding="utf-8")
    with shmconf.Publisher(name, sources=[path]) as publisher:
        publisher.publish_now()
        worker = python("-c", WORKER, name)
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        data = json.loads(out)
        publisher.unlink()
    assert data["replica"] == {"x": 2, "y": 1}
    assert data["c"] == {"timeout": 1, "t": 1}


# -- what careless or hostile input must not do --------------------------------

@pytest.mark.parametrize(("text", "where"), [
    ('a: "\\U00110000"\n', ":1:"),
    ('a: "\\UFFFFFFFF"\n', ":1:"),
    ('a: !!bool "\\ud800"\n', ":1:"),
    ('a: !!timestamp "\\ud800"\n', ":1:"),
    ("password: !!int hunter2\n", ":1:11:"),
    ("a: !!float x\n", ":1:4:"),
    ("a: !!bool x\n", ":1:4:"),
    ("a: !!int\n", ":1:4:"),
    ("a: !!timestamp 2020-13-45\n", ":1:4:"),
    ("a: " + "9" * 5000 + "\n", ":1:4:"),
    ("? 0x" + "f" * 4000 + "\n: v\n", ":1:3:"),
])
def test_every_bad_value_is_a_source_error_without_the_value(
        tmp_path: Path, text: str, where: str) -> None:
    error = load_fails(tmp_path, "app.yaml", text, "^" + where)
    assert "hunter2" not in str(error)
    assert len(str(error)) < 300


def test_a_bad_value_in_a_running_publisher_keeps_the_last_good(tmp_path: Path,
                                                                name: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    with shmconf.Publisher(name, sources=[path]) as publisher:
        assert publisher.publish_now() == 1
        path.write_text('a: "\\U00110000"\n', encoding="utf-8")
        assert publisher.reload() is None
        assert publisher.stats.rejections["source"] == 1
        assert publisher.generation == 1
        publisher.unlink()


def test_long_alias_chains_inside_an_ordered_map_are_no_recursion(tmp_path: Path) -> None:
    chain = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 400))
    load_fails(tmp_path, "app.yaml", chain + "om: !!omap [{k: *a399}]\n",
               r"nested deeper than 64 levels$")


def test_merges_inside_an_ordered_map_follow_the_spec(tmp_path: Path) -> None:
    data = load(tmp_path, "om: !!omap [{k: &m {<<: [{port: first}, {port: second}]}}]\n"
                          "plain: *m\n")
    assert data == {"om": [["k", {"port": "first"}]], "plain": {"port": "first"}}


def test_a_self_merge_inside_an_ordered_map_is_refused(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.yaml", "o: &o !!omap [{x: 1}, {y: {<<: *o}}]\n",
               r"takes a mapping or a list of mappings")


def test_merges_that_copy_too_much_are_refused_quickly(tmp_path: Path) -> None:
    keys = ", ".join(f"k{i}: {i}" for i in range(5000))
    text = f"a: &a {{{keys}}}\nb: {{<<: [{', '.join(['*a'] * 20000)}]}}\n"
    started = time.monotonic()
    load_fails(tmp_path, "app.yaml", text,
               r"^:2:5: more than 1000000 values with merge keys and aliases expanded$")
    assert time.monotonic() - started < 5


def test_control_characters_after_other_line_breaks_are_placed_right(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.yaml", 'a: 1\rb: 2\rc: "\x01"\n', r"^:3:5: control character")


def test_a_duplicate_anchor_names_the_first_line(tmp_path: Path) -> None:
    load_fails(tmp_path, "app.yaml", "a: &x 1\nb: 2\nc: &x 3\n",
               r"^:3:4: duplicate anchor 'x' \(first on line 1\)$")


def test_a_surrogate_escape_in_yaml_is_located(tmp_path: Path, yaml_parser: str) -> None:
    text = 'a:\n  b: "\\ud800"\n'
    if yaml_parser == "libyaml":
        load_fails(tmp_path, "app.yaml", text, r"^:2:")
    else:
        load_fails(tmp_path, "app.yaml", text, r"^:2:6: a\.b: string not valid Unicode")
