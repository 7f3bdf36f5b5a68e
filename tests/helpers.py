"""Helpers for tests: waiting on conditions, saving files, starting real processes."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shmconf import SourceError
from shmconf.sources import open_source

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005,
               message: str = "condition") -> None:
    """Wait for ``predicate()`` to be true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def atomic_save(path: Path, text: str, *, prefix: str = ".", suffix: str = ".tmp") -> None:
    """Save as editors and deploy tools do: write a temporary file, rename it over ``path``.

    The temporary file is ``PREFIX + path.name + SUFFIX`` in the same directory
    (``.app.yaml.tmp`` by default; ``suffix=".swp"`` for vim's swap file).
    """
    tmp = path.with_name(f"{prefix}{path.name}{suffix}")
    tmp.write_text(text)
    os.replace(tmp, path)


def python(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[str]:
    """Start ``python ARGS`` from the repository root, text pipes."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@contextlib.contextmanager
def idle_reader_process(name: str) -> Iterator[subprocess.Popen[str]]:
    """A reader process that attaches, then reads only when told: it falls behind.

    ``tests.procs.idle_reader``: it has printed ``ready GENERATION``; each line
    written to its stdin makes it read once. Killed on leaving.
    """
    proc = python("-m", "tests.procs.idle_reader", name, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready ")
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def load_text(tmp_path: Path, name: str, text: str) -> dict[str, Any]:
    """Write ``text`` to ``tmp_path / name`` and load it as a source."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return open_source(path).load()


def load_fails(tmp_path: Path, name: str, text: str, match: str) -> SourceError:
    """Loading ``text`` as ``name`` fails; ``match`` is searched after the file name."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError) as info:
        open_source(path).load()
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert re.search(match, message[len(str(path)):]), message
    return info.value


class DumpReader:
    """A reader process (``tests.procs.dump_reader``): ``read()`` asks it for what it holds."""

    def __init__(self, name: str) -> None:
        self.proc = python("-m", "tests.procs.dump_reader", name, stdin=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def read(self) -> tuple[int, dict[str, object]]:
        """The generation and the config the reader process holds now."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        generation, _, body = self.proc.stdout.readline().partition(" ")
        return int(generation), dict(orjson.loads(body))

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()


#: A secret the CLI tests look for in every output (it must never show), and a
#: YAML config holding it beside a greeting to change.
SECRET = "pa55-w0rd-s3cret"
CONFIG_WITH_SECRET = f"""\
greeting: hello
database:
  host: db1
  password: {SECRET}
"""


@contextlib.contextmanager
def process_reader(name: str, model: Any = None) -> Iterator[Any]:
    """``attach(name)`` as this process's reader, as an integration wires a worker; closed after."""
    import shmconf

    reader = shmconf.attach(name, model=model)
    shmconf.set_reader(reader)
    try:
        yield reader
    finally:
        shmconf.set_reader(None)
        reader.close()
