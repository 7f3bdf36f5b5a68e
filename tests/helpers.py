"""Helpers for tests: waiting on conditions, starting real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
