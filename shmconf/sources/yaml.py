"""YAML files (``.yaml``, ``.yml``), loaded only with PyYAML's safe loader.

PyYAML is imported when a YAML file is first parsed, never by workers; the
C loader (``CSafeLoader``) is used when PyYAML was built with libyaml.

* Duplicate keys are refused at the line of the second one (PyYAML alone
  keeps the last silently). Keys brought in by a merge key
  (``<<: *defaults``) are not duplicates: the mapping's own keys override them.
* Aliases and merge keys work. Their expanded size is bounded by
  ``MAX_NODES``, measured without expanding anything, so an alias bomb
  ("billion laughs") is refused in microseconds; a recursive alias is refused.
* Keys must be strings. Integer keys become strings (``404: missing`` is
  ``{"404": "missing"}``), as they would in JSON. Other keys are refused at
  their line: ``on:``/``yes:`` (booleans in YAML 1.1), ``null:``/``~:``,
  floats and dates. Quote them.
* Dates, times and timestamps become ISO-8601 strings.
* ``.nan`` and ``.inf`` are refused (JSON has no such numbers), like integers
  outside 64 bits, with their key path and line.
* Exactly one document per file; a file of only comments is empty.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, ClassVar, Final

from shmconf import _gc
from shmconf._errors import SourceError
from shmconf.sources.base import MAX_DEPTH, FileSource, KeyPath, check_expanded_size

#: The tag PyYAML gives ``<<`` keys.
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _yaml(name: str) -> ModuleType:
    try:
        import yaml
    except ImportError:
        raise SourceError(name, "YAML sources need PyYAML: pip install PyYAML") from None
    return yaml


@functools.cache
def _loader_class(yaml: ModuleType) -> Any:
    """The safe loader (the C one when available) that turns integer keys into strings."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep=deep)
            # Integer keys are allowed (checked in _check_keys) and stored as
            # the strings JSON would turn them into.
            if any(isinstance(k, int) for k in mapping):
                return {str(k) if isinstance(k, int) else k: v for k, v in mapping.items()}
            return mapping

    return Loader


class YamlSource(FileSource):
    """A YAML file; see the module docstring for what is refused and converted."""

    suffixes: ClassVar[tuple[str, ...]] = (".yaml", ".yml")

    def parse(self, text: str) -> Any:
        yaml = _yaml(self.name)
        loader = _loader_class(yaml)(text)
        try:
            with _gc.paused():  # PyYAML allocates a container per node
                node = self._compose(yaml, loader)
                if node is None:
                    raise self.empty()
                self._check_keys(loader, node, 1, set())
                data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            if mark is None:
                raise SourceError(self.name, reason) from None
            raise SourceError(self.name, reason, mark.line + 1, mark.column + 1) from None
        except yaml.YAMLError as exc:
            raise SourceError(self.name, f"invalid YAML ({type(exc).__name__})") from None
        finally:
            loader.dispose()
        # Before normalize() copies anything: an alias bomb is refused here.
        check_expanded_size(data)
        return data

    def _compose(self, yaml: ModuleType, loader: Any) -> Any:
        """The node graph of the single document, or ``None`` for an empty stream.

        PyYAML's composers recurse once per nesting level, and the C one
        overflows the C stack (a crash, not an exception) on a few thousand
        levels. This one reads the parser's events in a loop, keeps its own
        stack, and stops at ``MAX_DEPTH``; it builds the same nodes.
        """
        events = yaml.events
        loader.get_event()  # stream start
        if loader.check_event(events.StreamEndEvent):
            return None
        document = loader.get_event()
        anchors: dict[str, Any] = {}
        # Open collections, each with the key node waiting for its value.
        stack: list[list[Any]] = []
        root = None
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is events.DocumentEndEvent:
                break
            if kind is events.AliasEvent:
                node = _alias(yaml, anchors, event)
            elif kind is events.SequenceEndEvent or kind is events.MappingEndEvent:
                node = stack.pop()[0]
                node.end_mark = event.end_mark
            else:
                node = _anchored(yaml, anchors, event, self._node(yaml, loader, event))
                if kind is not events.ScalarEvent:
                    stack.append([node, None])
                    if len(stack) > MAX_DEPTH:
                        raise self._at(node, f"nested deeper than {MAX_DEPTH} levels")
                    continue
            if stack:
                _add(stack[-1], node)
            else:
                root = node
        if not loader.check_event(events.StreamEndEvent):
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", document.start_mark,
                "but found another document", loader.get_event().start_mark)
        return root

    @staticmethod
    def _node(yaml: ModuleType, loader: Any, event: Any) -> Any:
        """A node for a scalar or collection-start event, its tag resolved as PyYAML does."""
        nodes = yaml.nodes
        if isinstance(event, yaml.events.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(nodes.ScalarNode, event.value, event.implicit)
            return nodes.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                    style=event.style)
        cls = nodes.SequenceNode if isinstance(event, yaml.events.SequenceStartEvent) \
            else nodes.MappingNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(cls, None, event.implicit)
        return cls(tag, [], event.start_mark, None, flow_style=event.flow_style)

    def _check_keys(self, loader: Any, node: Any, depth: int, seen: set[int]) -> None:
        """Refuse duplicate and non-string keys, at their line, before constructing.

        Runs on the composed node graph, where each alias is the same node
        object: every node is visited once, whatever the aliases expand to.
        """
        if id(node) in seen or not isinstance(node.value, list):
            return
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise self._at(node, f"nested deeper than {MAX_DEPTH} levels")
        if node.id == "sequence":
            for item in node.value:
                self._check_keys(loader, item, depth + 1, seen)
            return
        keys: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._check_keys(loader, value_node, depth, seen)
                continue
            key = loader.construct_object(key_node, deep=True) if key_node.id == "scalar" \
                else None
            if key_node.id != "scalar" or isinstance(key, bool) or \
                    not isinstance(key, (str, int)):
                found = key_node.id if key_node.id != "scalar" else _yaml_type(key)
                raise self._at(key_node, f"found a key of type {found}; keys must be strings "
                                         "(quote it)")
            text = str(key)
            if text in keys:
                first = keys[text].start_mark.line + 1
                raise self._at(key_node, f"duplicate key {text!r} (first on line {first})")
            keys[text] = key_node
            self._check_keys(loader, value_node, depth + 1, seen)

    def _at(self, node: Any, reason: str) -> SourceError:
        return SourceError(self.name, reason, node.start_mark.line + 1,
                           node.start_mark.column + 1)

    def locate(self, text: str, path: KeyPath) -> tuple[int, int] | None:
        yaml = _yaml(self.name)
        loader = _loader_class(yaml)(text)
        try:
            node = self._compose(yaml, loader)
            for part in path:
                node = _child(loader, node, part)
                if node is None:
                    return None
        except (yaml.YAMLError, SourceError):
            return None
        finally:
            loader.dispose()
        return node.start_mark.line + 1, node.start_mark.column + 1


def _alias(yaml: ModuleType, anchors: dict[str, Any], event: Any) -> Any:
    """The node an alias event refers to."""
    if event.anchor not in anchors:
        raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                          event.start_mark)
    return anchors[event.anchor]


def _anchored(yaml: ModuleType, anchors: dict[str, Any], event: Any, node: Any) -> Any:
    """Record ``node`` under the event's anchor, if it has one; returns ``node``."""
    anchor = event.anchor
    if anchor is not None:
        if anchor in anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                anchors[anchor].start_mark, "second occurrence", event.start_mark)
        anchors[anchor] = node
    return node


def _add(parent: list[Any], node: Any) -> None:
    """Add ``node`` to the open collection ``[collection node, pending key node]``."""
    collection, key = parent
    if collection.id == "sequence":
        collection.value.append(node)
    elif key is None:
        parent[1] = node
    else:
        collection.value.append((key, node))
        parent[1] = None


def _child(loader: Any, node: Any, part: str | int) -> Any:
    """The node at ``part`` below ``node``: own keys first, then merged-in mappings."""
    if node is None or not isinstance(node.value, list):
        return None
    if node.id == "sequence":
        return node.value[part] if isinstance(part, int) and part < len(node.value) else None
    merged: list[Any] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(value_node.value if value_node.id == "sequence" else [value_node])
        elif key_node.id == "scalar" and str(loader.construct_object(key_node)) == str(part):
            return value_node
    for source in merged:
        found = _child(loader, source, part)
        if found is not None:
            return found
    return None


def _yaml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean (YAML reads on/off/yes/no/true/false as booleans)"
    if value is None:
        return "null"
    return {float: "number"}.get(type(value), type(value).__name__)
