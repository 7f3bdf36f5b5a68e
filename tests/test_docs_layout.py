"""docs/design.md's layout tables and step labels agree with the code.

The byte layout lives in shmconf/protocol/layout.py; the design page draws
it. This test reads the page's tables and compares every offset, size and
count with the constants, and checks that every module and function the page
names as performing a step exists and carries the step's label.
"""

from __future__ import annotations

import importlib
import inspect
import re
import struct

import pytest

from shmconf.protocol import layout as L
from tests.helpers import REPO

DESIGN = (REPO / "docs" / "design.md").read_text(encoding="utf-8")


def table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` (cells stripped, header row dropped)."""
    section = DESIGN.split(f"### {heading}", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if set(cells[0]) <= {"-", " "}:
            continue
        rows.append(cells)
    return rows[1:]


def struct_fields(fmt: str, start: int = 0) -> list[tuple[int, int]]:
    """``(offset, size)`` of each field of a little-endian struct format."""
    out = []
    offset = start
    for code in re.findall(r"\d*[a-zA-Z]", fmt.lstrip("<")):
        size = struct.calcsize("<" + code)
        if not code.endswith("x"):
            out.append((offset, size))
        offset += size
    return out


def offsets(rows: list[list[str]]) -> dict[str, tuple[int, int]]:
    return {row[2].strip("*"): (int(row[0]), int(row[1])) for row in rows if row[1].isdigit()}


def test_anchor_header_table_matches_the_layout() -> None:
    rows = table("Anchor header (256 bytes)")
    doc = offsets(rows)
    magic, version, header_size = struct_fields(L.ANCHOR_PREFIX.format)
    expected = {
        "magic": magic, "version": version, "header_size": header_size,
        "generation": (L.A_GENERATION * 8, 8), "data_serial": (L.A_DATA_SERIAL * 8, 8),
        "slot_capacity": (L.A_SLOT_CAPACITY * 8, 8),
        "publisher_pid": (L.A_PUBLISHER_PID * 8, 8), "heartbeat_ns": (L.A_HEARTBEAT_NS * 8, 8),
        "started_ns": (L.A_STARTED_NS * 8, 8), "wake": (L.A_WAKE * 8, 8),
        "flags": (L.A_FLAGS * 8, 8),
        "canary_generation": (L.A_CANARY_GENERATION * 8, 8), "rollout": (L.A_ROLLOUT * 8, 8),
        "canary_count": (L.A_CANARY_COUNT * 8, 8),
    }
    assert {k: v for k, v in doc.items() if k != "reserved"} == expected
    reserved_at, reserved_size = doc["reserved"]
    assert reserved_at + reserved_size == L.ANCHOR_HEADER_SIZE
    values = {row[2].strip("*"): row[3] for row in rows}
    assert f"layout version, {L.LAYOUT_VERSION}" in values["version"]
    assert values["header_size"] == str(L.ANCHOR_HEADER_SIZE)
    assert L.WAKE_OFFSET == L.A_WAKE * 8
    assert f"bytes {L.CANARY_LIST_WORD * 8} to {L.ANCHOR_SIZE - 1}" in DESIGN
    assert f"up to {L.CANARY_LIST_MAX} words" in DESIGN
    assert f"| {L.ANCHOR_SIZE // 1024} KiB (one page), fixed |" in DESIGN


def test_reader_table_matches_the_layout() -> None:
    heading = f"Reader table entry ({L.TABLE_ENTRY_SIZE} bytes, entry i at i * " \
              f"{L.TABLE_ENTRY_SIZE})"
    assert f"### {heading}" in DESIGN
    rows = table(heading)
    fields = struct_fields(L.TABLE_ENTRY.format)
    assert [(int(r[0]), int(r[1])) for r in rows][: len(fields)] == fields
    assert sum(int(r[1]) for r in rows) == L.TABLE_ENTRY_SIZE
    assert L.TABLE_ENTRY.size == L.TABLE_READER_PART
    assert f"A reader writes bytes 0-{L.TABLE_READER_PART - 1} of its own entry" in DESIGN
    assert f"{L.TABLE_MAX_ENTRIES:,}" in DESIGN


def test_data_segment_header_table_matches_the_layout() -> None:
    rows = table(f"Data segment header ({L.DATA_HEADER_SIZE} bytes)")
    assert [(int(r[0]), int(r[1])) for r in rows] == struct_fields(L.DATA_PREFIX.format)
    assert rows[1][2] == f"version, {L.LAYOUT_VERSION}"
    assert rows[2][2] == f"header_size, {L.DATA_HEADER_SIZE}"
    assert f"slot_stride = {L.SLOT_HEADER_SIZE} + slot_capacity" in rows[5][2]


def test_slot_table_matches_the_layout() -> None:
    rows = table(f"Slot (at `{L.DATA_HEADER_SIZE} + i * slot_stride`, i = 0, 1)")
    fixed = [(int(r[0]), int(r[1])) for r in rows if r[0].isdigit() and r[1].isdigit()]
    fields = struct_fields(L.SLOT_HEADER.format)
    assert fixed[: len(fields)] == fields
    reserved_at, reserved_size = fixed[len(fields)]
    assert reserved_at + reserved_size == L.SLOT_HEADER_SIZE
    assert f"bytes [{L.SLOT_CHECKED_FROM}, {L.SLOT_HEADER_SIZE} + meta_len" in rows[1][2]


def test_object_names_match_the_layout() -> None:
    assert f"`{L.anchor_shm_name('NAME').replace(str(L.LAYOUT_VERSION), 'V', 1)}`" in DESIGN
    assert f"layout version (now {L.LAYOUT_VERSION})" in DESIGN


STEP_TABLE = re.compile(r"^\| (?P<steps>[RWG]\d[^|]*) \| (?P<where>[^|]+) \|$", re.M)


def performers() -> list[tuple[list[str], str]]:
    """``(step labels, dotted function)`` for every function the step tables name."""
    found = []
    for match in STEP_TABLE.finditer(DESIGN):
        labels = re.findall(r"\b[RWG]\d\b", match["steps"])
        found += [(labels, name) for name in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)`",
                                                        match["where"])]
    return found


def resolve(dotted: str) -> object:
    """``writer.Writer.publish`` -> the function ``shmconf.writer.Writer.publish``."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module("shmconf." + ".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{dotted} is not in a shmconf module")


@pytest.mark.parametrize(("labels", "dotted"), performers())
def test_each_function_named_for_a_step_exists_and_carries_a_label(labels: list[str],
                                                                   dotted: str) -> None:
    source = inspect.getsource(resolve(dotted))  # type: ignore[arg-type]
    # The first function named for steps performs them and says so at the line.
    if dotted == STEP_TABLE_FIRST.get(tuple(labels)):
        assert any(label in source for label in labels), f"{dotted} never mentions {labels}"


#: Per row of a step table, the function named first: the one that performs the steps.
STEP_TABLE_FIRST = {tuple(labels): dotted for labels, dotted in reversed(performers())}


def test_every_step_is_placed() -> None:
    placed = {label for labels, _ in performers() for label in labels}
    expected = {*(f"W{i}" for i in range(1, 5)), *(f"R{i}" for i in range(1, 8)),
                *(f"G{i}" for i in range(1, 5))}
    assert placed == expected


ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def architecture_names() -> list[str]:
    """Every `module.name` the flows of docs/architecture.md point at."""
    names = set()
    for cell in re.findall(r"^\| [^|]+ \| ([^|]+) \|$", ARCHITECTURE, re.M):
        previous = ""
        for found in re.findall(r"`([A-Za-z_.]+)`", cell):
            name = found
            if "." not in name:  # `_adopt` continues the previous `module.Class`
                name = previous.rsplit(".", 1)[0] + "." + name
            names.add(name)
            previous = name
    return sorted(n for n in names if n.split(".")[0] not in ("shmconf",))


@pytest.mark.parametrize("dotted", architecture_names())
def test_architecture_names_exist(dotted: str) -> None:
    assert resolve(dotted) is not None
