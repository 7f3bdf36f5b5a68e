"""A model named by an import string, ``pkg.module:Class`` (the CLI, child processes)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def import_model(spec: str) -> type[Any]:
    """Import ``pkg.mod:Class``; the current directory is importable, as in gunicorn."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a model import string looks like 'pkg.module:Class', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise ImportError(f"cannot import model {spec!r}: {exc}") from exc
    if not hasattr(obj, "model_validate"):
        raise TypeError(f"model {spec!r} is not a pydantic model class")
    return obj  # type: ignore[no-any-return]
