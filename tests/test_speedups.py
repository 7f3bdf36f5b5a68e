"""The C speedups (shmconf/_speedups.c): built here, sound, and the same as the Python paths.

tests/test_frozen.py runs every snapshot test on both freezes; the reader
tests run on the C fast path in ``make test`` and on the Python one in
``make unit-pure``.
"""

from __future__ import annotations

import gc
import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import shmconf
from shmconf import _fastpath
from shmconf._fastpath import PyFastPath, speedups
from shmconf.frozen import FrozenDict, FrozenList, loads

needs_speedups = pytest.mark.skipif(speedups is None, reason="C speedups off or not built")


def test_built_where_required() -> None:
    # The Makefile builds shmconf's own venvs with SHMCONF_SPEEDUPS=require.
    if os.environ.get("SHMCONF_SPEEDUPS") != "require":
        pytest.skip("SHMCONF_SPEEDUPS=require is not set")
    assert speedups is not None
    assert shmconf.Reader.get is speedups.FastPath.get  # type: ignore[attr-defined]


def test_speedups_off_gives_the_python_paths() -> None:
    code = ("import shmconf, shmconf._fastpath as f, shmconf.frozen as z; "
            "print(f.speedups, shmconf.Reader.get is f.PyFastPath.get, "
            "z._freeze is z._freeze_owned)")
    env = {**os.environ, "SHMCONF_SPEEDUPS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "True", "True"]


@pytest.mark.parametrize("setting", ["", "require"])
def test_a_missing_build_is_named_and_required_ones_fail_to_import(setting: str) -> None:
    code = ("import sys; sys.modules['shmconf._speedups'] = None  # as if never built\n"
            "import shmconf._fastpath as f; print(f.speedups is None); print(f.state)")
    env = {**os.environ, "SHMCONF_SPEEDUPS": setting}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=False)
    if setting == "require":
        assert result.returncode == 1
        assert "SHMCONF_SPEEDUPS=require, but shmconf's C speedups are not built" in result.stderr
    else:
        assert result.stdout.splitlines()[0] == "True"
        assert result.stdout.splitlines()[1].startswith("not built (")


def test_a_setting_that_means_nothing_is_warned_about() -> None:
    env = {**os.environ, "SHMCONF_SPEEDUPS": "required"}  # a typo of "require"
    result = subprocess.run([sys.executable, "-c", "import shmconf"], env=env,
                            capture_output=True, text=True, check=True)
    assert "SHMCONF_SPEEDUPS='required' means nothing to shmconf" in result.stderr


def frozen_types(value: Any) -> Iterator[type]:
    yield type(value)
    if isinstance(value, dict):
        for item in value.values():
            yield from frozen_types(item)
    elif isinstance(value, list):
        for item in value:
            yield from frozen_types(item)


@needs_speedups
def test_freeze_refuses_a_container_someone_else_holds() -> None:
    assert speedups is not None
    shared = {"a": [1, 2]}
    with pytest.raises(ValueError, match="held elsewhere"):
        speedups.freeze({"x": shared})
    assert type(shared) is dict
    assert type(shared["a"]) is list  # its class is its holders' business


@needs_speedups
def test_freeze_runs_no_python_code_of_the_data() -> None:
    assert speedups is not None
    ran = []

    class Key:  # hashes and compares like "a": a dict store under "a" would call it
        def __hash__(self) -> int:
            return hash("a")

        def __eq__(self, other: object) -> bool:
            ran.append(other)
            return False

    shared: list[int] = []
    outer = [{Key(): 0, "a": shared}]
    ran.clear()  # building the dict compared the keys; freezing it must not
    with pytest.raises(ValueError, match="held elsewhere"):
        speedups.freeze(outer)
    assert ran == []
    fresh = [{Key(): 0, "a": []}]
    ran.clear()
    assert type(speedups.freeze(fresh)[0]) is FrozenDict
    assert ran == []


@needs_speedups
def test_freeze_keeps_the_classes_reference_counts_balanced() -> None:
    payload = orjson.dumps({"a": [{"b": [1, {}]}, []], "c": {"d": {}}})
    before = sys.getrefcount(FrozenDict), sys.getrefcount(FrozenList)
    for _ in range(1000):
        snapshot = loads(payload)
        del snapshot
    gc.collect()
    assert (sys.getrefcount(FrozenDict), sys.getrefcount(FrozenList)) == before


@needs_speedups
def test_the_deepest_json_orjson_parses_is_frozen_all_the_way() -> None:
    depth = 1000
    snapshot = loads(b"[" * depth + b"{}" + b"]" * depth)
    node, seen = snapshot, 0
    while isinstance(node, list):
        assert type(node) is FrozenList
        node, seen = node[0], seen + 1
    assert seen == depth
    assert type(node) is FrozenDict
    gc.collect()  # the collector walks them (tracked or not) without harm


@needs_speedups
def test_any_depth_is_frozen_on_any_thread_stack() -> None:
    import threading

    assert speedups is not None
    deep: list[Any] = []
    node = deep
    for _ in range(100_000):  # far past any C stack's recursion depth
        node.append([])
        node = node[0]
    del node  # the innermost list: held by its parent alone
    threading.stack_size(128 * 1024)  # musl's default thread stack
    try:
        worker = threading.Thread(target=speedups.freeze, args=(deep,))
        worker.start()
        worker.join()
    finally:
        threading.stack_size(0)
    node, seen = deep, 0
    while node:
        assert type(node) is FrozenList
        node, seen = node[0], seen + 1
    assert seen == 100_000


@needs_speedups
def test_register_refuses_classes_that_add_a_field() -> None:
    assert speedups is not None

    class WithDict(dict):  # type: ignore[type-arg]  # instances get a __dict__
        pass

    class Slotted(list):  # type: ignore[type-arg]
        __slots__ = ("extra",)

    with pytest.raises(TypeError, match="add no field"):
        speedups.register(WithDict, FrozenList)
    with pytest.raises(TypeError, match="add no field"):
        speedups.register(FrozenDict, Slotted)
    assert type(loads(b'{"a": []}')) is FrozenDict  # the registered classes are kept


class Probe(PyFastPath):
    """A fast path whose slow path counts its calls (C base where built)."""

    __slots__ = ("refreshes",)

    def _refresh(self) -> Any:
        self.refreshes += 1
        return "slow"


def probes() -> list[Any]:
    found: list[Any] = [pytest.param(Probe, id="python")]
    if speedups is not None:
        c_probe = type("CProbe", (speedups.FastPath,), {
            "__slots__": ("refreshes",), "_refresh": Probe._refresh})
        found.append(pytest.param(c_probe, id="c"))
    return found


@pytest.mark.parametrize("probe_class", probes())
def test_the_fast_path_serves_the_cache_only_while_the_word_matches(probe_class: type) -> None:
    block = mmap.mmap(-1, mmap.PAGESIZE)
    words = memoryview(block).cast("Q")
    probe = probe_class()
    probe.refreshes = 0
    try:
        probe._words, probe._gen, probe._snapshot = words, -1, "cached"
        assert probe.get() == "slow"  # -1: nothing held yet
        probe._gen = 0
        assert probe.get() == "cached"
        words[2] = 7
        assert probe.get() == "slow"
        probe._gen = 7
        assert probe.get() == "cached"
        probe._gen = 2**70  # no word holds it
        assert probe.get() == "slow"
        probe._gen = 7
        probe._words = words[8:]  # a canary's view: its word 2 is word 10
        assert probe.get() == "slow"
        words[10] = 7
        assert probe.get() == "cached"
        assert probe.refreshes == 4
    finally:
        del probe  # its hold on the view ends, then the mapping can close
        words.release()
        block.close()


@needs_speedups
def test_the_c_fast_path_checks_the_words_it_is_given() -> None:
    assert speedups is not None
    probe = speedups.FastPath()
    with pytest.raises(ValueError, match="8-byte"):
        probe._words = memoryview(bytearray(16)).cast("Q")  # two words
    with pytest.raises(ValueError, match="8-byte"):
        probe._words = memoryview(bytearray(64))  # bytes, not words
    with pytest.raises(ValueError, match="8-byte"):
        probe._words = memoryview(bytearray(64)).cast("d")  # 8 bytes, not a word
    with pytest.raises(TypeError):
        probe._gen = "2"  # type: ignore[assignment]
    assert probe._words is None
    assert probe._gen == -1
    assert probe._snapshot is None


@needs_speedups
def test_the_c_fast_path_lets_the_mapping_close_once_it_moved_on() -> None:
    assert speedups is not None
    block = mmap.mmap(-1, mmap.PAGESIZE)
    words = memoryview(block).cast("Q")
    probe = speedups.FastPath()
    probe._words = words
    with pytest.raises(BufferError):
        words.release()  # get() may still load from it
    probe._words = _fastpath_closed_words()
    words.release()
    block.close()


def _fastpath_closed_words() -> memoryview:
    from shmconf.reader import _CLOSED_WORDS

    return _CLOSED_WORDS


def test_a_closed_reader_lets_its_anchor_close(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        reader = shmconf.attach(name, make_current=False)
        assert reader.get() == {"a": 1}
        reader.close()  # closes the anchor's mapping: get() must hold it no more
        with pytest.raises(ValueError, match="closed"):
            reader.get()
        publisher.unlink()


def test_the_fast_path_module_names_its_choice() -> None:
    assert _fastpath.FastPath is (speedups.FastPath if speedups is not None else PyFastPath)
