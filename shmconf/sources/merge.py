"""Layering: sources merge in order, later wins; environment overrides last.

* Mappings merge key by key, recursively.
* Lists are replaced whole, never concatenated (a later source that lists
  two servers means two servers).
* An explicit ``null`` in a later source sets the value to ``None``; it does
  not delete the key (leave the key out to keep the earlier value).
* A mapping replaces a scalar and a scalar replaces a mapping.

``LoadedConfig.origins`` remembers which source set each value, so that a
model error can say "``database.port``: ... (set in prod.toml)".
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shmconf.sources.base import NESTED_DELIMITER, FileSource, Source, check_data, nest
from shmconf.sources.registry import open_source

#: One level of the origin tree: key -> (source name, the levels below).
_OriginTree = dict[str, tuple[str, "_OriginTree"]]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` layered over ``base`` by the rules in the module docstring.

    Returns:
        A new mapping that shares no dict or list with the inputs, which are
        left untouched.
    """
    merged: dict[str, Any] = _copy(base)
    _merge_into(merged, _copy(override))
    return merged


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _merge_into(target: dict[str, Any], override: Mapping[str, Any]) -> None:
    """Merge ``override`` into ``target`` in place, taking over its containers."""
    for key, value in override.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            _merge_into(current, value)
        else:
            target[key] = value


@dataclass(frozen=True)
class LoadedConfig:
    """The merged data of several sources, and who set what."""

    #: The merged mapping.
    data: dict[str, Any]
    #: Key path -> name of the source that set the value there last. Every
    #: mapping key a source set is recorded, at every level; list items are
    #: not (a list is replaced whole, so its source is the list's).
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)
    #: Names of the sources, in the order they were layered.
    sources: tuple[str, ...] = ()
    #: Source name -> its revision, for sources that have one (etcd).
    revisions: dict[str, int] = field(default_factory=dict)
    #: Environment overrides whose key path names no field of the model.
    unmatched: tuple[str, ...] = ()

    def origin_of(self, path: Sequence[str | int]) -> str | None:
        """The source that set the value at ``path``, or at its nearest recorded parent.

        ``path`` may be a pydantic error ``loc``: an ``int`` is a list index,
        and the lookup stops at the list that holds it; parts that are not
        keys (pydantic's ``[key]`` or a union member's name) fall back to the
        longest prefix that is. Returns ``None`` when no source set any prefix.
        """
        parts: list[str] = []
        for part in path:
            if not isinstance(part, str):
                break
            parts.append(part)
        for end in range(len(parts), 0, -1):
            found = self.origins.get(tuple(parts[:end]))
            if found is not None:
                return found
        return None


def _record(tree: _OriginTree, data: Mapping[str, Any], source: Source,
            path: tuple[str, ...] = ()) -> None:
    """Note ``source`` as the origin of every key in ``data``.

    What an earlier source recorded below a key is kept only when both set a
    mapping there (they merged); otherwise the new value replaced it all.
    """
    for key, value in data.items():
        here = (*path, key)
        previous = tree.get(key)
        below: _OriginTree = previous[1] if previous and isinstance(value, Mapping) else {}
        tree[key] = (source.origin(here), below)
        if isinstance(value, Mapping):
            _record(below, value, source, here)


def _flatten(tree: _OriginTree, out: dict[tuple[str, ...], str],
             path: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    for key, (origin, below) in tree.items():
        here = (*path, key)
        out[here] = origin
        _flatten(below, out, here)
    return out


class _EnvSource(Source):
    """One ``{PREFIX}A__B=value`` variable, as a source named ``env:{VARIABLE}``.

    Its key path is matched, part by part and case-insensitively, to the
    keys already set and to the model's fields (:meth:`match`), as
    pydantic-settings matches variables to fields; ``load()`` then nests the
    value under the matched keys.
    """

    def __init__(self, variable: str, key: str, raw: str) -> None:
        # A name that is not UTF-8 holds lone surrogates: shown escaped.
        self.name = "env:" + variable.encode("utf-8", "backslashreplace").decode("utf-8")
        self.variable = variable
        self._key = key
        self._raw = raw
        self._parts: list[str] = key.split(NESTED_DELIMITER)
        #: False when a model is known and a part named none of its fields.
        self.matched = True

    def match(self, merged: Mapping[str, Any], model: type[Any] | None) -> None:
        """Spell each part as an existing key, else as a model field, else as written."""
        node: Any = merged
        parts = []
        for part in self._parts:
            folded = part.lower()  # as pydantic-settings compares names
            key = None
            field = _model_field(model, folded) if model is not None else None
            if field is not None:
                # The model's field: spelled as the sources spell it, if they do.
                key = next((k for k in field[2] if isinstance(node, Mapping) and k in node),
                           field[0])
            elif model is None and isinstance(node, Mapping):
                key = next((k for k in node if isinstance(k, str) and k.lower() == folded),
                           None)
            else:
                self.matched = False
            parts.append(part if key is None else key)
            node = node.get(key) if key is not None and isinstance(node, Mapping) else None
            model = field[1] if field is not None else None
        self._parts = parts

    def load(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        nest(data, self._key, _env_value(self._raw), self.name, parts=self._parts)
        return data  # load_sources() checks it, as for every non-file source


def _model_field(model: type[Any], folded: str
                 ) -> tuple[str, type[Any] | None, list[str]] | None:
    """The field of ``model`` named or aliased ``folded`` (lower case).

    Returns ``(key, nested model, spellings)``: the key is the field's alias
    when it has one (what files write), else its name; the nested model is
    the model class the field holds directly (not inside a list or dict);
    the spellings are every name validation accepts for it.
    """
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, Mapping):
        return None
    for name, info in fields.items():
        names = [name, info.alias, info.validation_alias]
        choices = getattr(info.validation_alias, "choices", None)
        if choices:
            names += list(choices)
        spellings = [n for n in names if isinstance(n, str)]
        if any(n.lower() == folded for n in spellings):
            return (info.alias if isinstance(info.alias, str) else name,
                    _nested_model(info.annotation), spellings)
    return None


def _nested_model(annotation: Any) -> type[Any] | None:
    """The one model class an annotation is (``Model``, ``Model | None``), if any.

    A list or dict of models is not: the next part of a key path would be
    an index or a dict key, not a field.
    """
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType, typing.Annotated):
        return None
    found = [m for m in map(_nested_model, typing.get_args(annotation)) if m is not None]
    return found[0] if len(found) == 1 else None


def _env_value(raw: str) -> Any:
    """A JSON object or array parsed (strict JSON only); anything else as the string."""
    if raw.lstrip()[:1] not in ("{", "["):
        return raw

    def strict_pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise ValueError("duplicate key")
        return out

    def no_constant(token: str) -> Any:
        raise ValueError(token)

    try:
        return json.loads(raw, object_pairs_hook=strict_pairs, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return raw


def env_sources(prefix: str, environ: Mapping[str, str]) -> list[Source]:
    """A source for each variable whose name starts with ``prefix``, sorted by name.

    The prefix matches case-insensitively, as in pydantic-settings; the rest
    of the name is the key path (``__`` nests), matched case-insensitively
    when the sources are loaded.
    """
    found: list[Source] = []
    folded = prefix.casefold()
    for variable in sorted(environ):
        if len(variable) > len(prefix) and variable[: len(prefix)].casefold() == folded:
            found.append(_EnvSource(variable, variable[len(prefix):], environ[variable]))
    return found


def load_sources(
    sources: Sequence[Source | str | os.PathLike[str]],
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    model: type[Any] | None = None,
) -> LoadedConfig:
    """Load every source in order, merge them, then apply environment overrides.

    Args:
        sources: sources, or file paths and URLs for :func:`open_source`;
            later ones win.
        env_prefix: when given, every environment variable starting with it
            (case-insensitively) overrides the key it names:
            ``{PREFIX}DATABASE__HOST=db`` sets ``database.host`` when the
            sources or the model spell it so, else ``DATABASE.HOST`` as
            written. Off by default.
        environ: the variables to read instead of ``os.environ``.
        model: the pydantic model the data will be validated with: an
            override's key path is matched to its fields and aliases,
            case-insensitively (``MYAPP_APIKEY`` sets ``apiKey``), where no
            key of the sources already matches. Variables that name no field
            are listed in ``LoadedConfig.unmatched``.

    Returns:
        The merged data, which source set each key, and the source names.

    Raises:
        SourceError: from the first source that cannot be loaded.
    """
    opened = [s if isinstance(s, Source) else open_source(s) for s in sources]
    layers = list(opened)
    if env_prefix:
        layers += env_sources(env_prefix, os.environ if environ is None else environ)
    merged: dict[str, Any] = {}
    tree: _OriginTree = {}
    revisions: dict[str, int] = {}
    unmatched: list[str] = []
    for source in layers:
        if isinstance(source, _EnvSource):
            source.match(merged, model)
            if not source.matched:
                unmatched.append(source.variable)
        data = source.load()
        if not isinstance(source, FileSource):
            # File sources check their own data (with line numbers); any other
            # source is held to the same contract here.
            data = check_data(data, source.name)
        if source.revision is not None:
            revisions[source.name] = source.revision
        _record(tree, data, source)
        _merge_into(merged, data)
    return LoadedConfig(merged, _flatten(tree, {}), tuple(s.name for s in opened), revisions,
                        tuple(unmatched))
