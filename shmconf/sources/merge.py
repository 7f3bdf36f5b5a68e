"""Layering: sources merge in order, later wins; environment overrides last.

* Mappings merge key by key, recursively.
* Lists are replaced whole, never concatenated (a later source that lists
  two servers means two servers).
* An explicit ``null`` in a later source sets the value to ``None``; it does
  not delete the key (use the model's default by leaving the key out).
* A mapping replaces a scalar and a scalar replaces a mapping.

``LoadedConfig.origins`` remembers which source set each value, so that a
model error can say "``database.port``: ... (set in prod.toml)".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shmconf.sources.base import Source
from shmconf.sources.dotenv import nest


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base`` (see the module docstring); inputs untouched."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class LoadedConfig:
    """The merged data of several sources, and who set what."""

    data: dict[str, Any]
    #: Key path -> name of the source that set the value there last.
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    #: Source name -> its revision, for sources that have one (etcd).
    revisions: dict[str, int] = field(default_factory=dict)

    def origin_of(self, path: Sequence[str | int]) -> str | None:
        """The source that set the value at ``path`` (or its nearest parent)."""
        parts = tuple(str(p) for p in path)
        for end in range(len(parts), 0, -1):
            found = self.origins.get(parts[:end])
            if found is not None:
                return found
        return None


def _record(origins: dict[tuple[str, ...], str], data: Any,
            origin: Callable[[tuple[str, ...]], str], path: tuple[str, ...] = ()) -> None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = (*path, key)
            origins[here] = origin(here)
            _record(origins, value, origin, here)


def _constant(origin: str) -> Callable[[tuple[str, ...]], str]:
    return lambda _path: origin


def env_overrides(prefix: str, environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """``(variable, data)`` for each ``{PREFIX}A__B=value`` variable, sorted by name.

    The prefix matches case-insensitively. A value that parses as a JSON
    object or array is parsed; anything else stays a string for the model.
    """
    found = []
    for variable in sorted(environ):
        if not variable.upper().startswith(prefix.upper()) or len(variable) == len(prefix):
            continue
        raw = environ[variable]
        value: Any = raw
        if raw.lstrip()[:1] in ("{", "["):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = raw
        data: dict[str, Any] = {}
        nest(data, variable[len(prefix):], value, f"env:{variable}")
        found.append((variable, data))
    return found


def load_sources(
    sources: Sequence[Source | str | os.PathLike[str]],
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load every source in order, merge them, then apply environment overrides."""
    from shmconf.sources import open_source

    opened = [s if isinstance(s, Source) else open_source(s) for s in sources]
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    revisions: dict[str, int] = {}
    for source in opened:
        data = source.load()
        if source.revision is not None:
            revisions[source.name] = source.revision
        merged = deep_merge(merged, data)
        _record(origins, data, source.origin)
    if env_prefix:
        for variable, data in env_overrides(env_prefix,
                                            os.environ if environ is None else environ):
            merged = deep_merge(merged, data)
            _record(origins, data, _constant(f"env:{variable}"))
    return LoadedConfig(merged, origins, tuple(s.name for s in opened), revisions)
