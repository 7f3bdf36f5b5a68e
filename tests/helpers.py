"""Helpers for tests: waiting on conditions, starting real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
