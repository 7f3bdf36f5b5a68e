"""YAML files (``.yaml``, ``.yml``), loaded only with PyYAML's safe loader.

PyYAML is imported when a YAML file is first parsed, never by workers; the
C parser (libyaml) is used when PyYAML was built with it.

shmconf reads PyYAML's parser events into its own node graph and builds the
data from that graph itself, so what a document means never depends on the
PyYAML release or build:

* Merge keys (``<<: *defaults``) follow the merge-key spec
  (https://yaml.org/type/merge.html): a mapping's own keys win wherever they
  stand; in ``<<: [*a, *b]`` earlier mappings win over later ones; a merged
  mapping brings its own merges along, to any depth. A merge of anything but
  a mapping or a list of mappings is refused at its line. (PyYAML 6.0.4
  changed what its own ``flatten_mapping`` returns for merges of merges and
  for lists: shmconf never calls it.)
* Errors name the file, line and column in the same words on every build:
  when libyaml refuses a document, it is read again with the pure-Python
  parser, whose message (or shmconf's own, such as the nesting limit) is the
  one shown.
* Duplicate keys are refused at the line of the second one (PyYAML alone
  keeps the last silently); so is a second ``<<`` in one mapping. Keys
  brought in by a merge are not duplicates.
* Aliases work. Their expanded size is bounded by ``MAX_NODES``, measured
  without expanding anything, so an alias bomb ("billion laughs") is refused
  in microseconds; a recursive alias is refused.
* Keys must be strings. Integer keys become strings (``404: missing`` is
  ``{"404": "missing"}``), as they would in JSON. Other keys are refused at
  their line: ``on:``/``yes:`` (booleans in YAML 1.1), ``null:``/``~:``,
  floats and dates. Quote them.
* Dates, times and timestamps become ISO-8601 strings.
* ``.nan`` and ``.inf`` are refused (JSON has no such numbers), like integers
  outside 64 bits, with their key path and line.
* A control character (other than tab and line breaks) is refused at its
  line and column, with the escape to write instead.
* Exactly one document per file; a file of only comments is empty.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Final

from shmconf import _gc
from shmconf.errors import SourceError
from shmconf.sources.base import MAX_DEPTH, FileSource, KeyPath, check_expanded_size

#: The tag PyYAML gives ``<<`` keys.
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
#: Tags of the plain collections, which shmconf builds itself; any other
#: collection tag (``!!set``, ``!!omap``) is left to PyYAML's safe constructor.
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"


def _yaml(name: str) -> ModuleType:
    try:
        import yaml
    except ImportError:
        raise SourceError(name, "YAML sources need PyYAML: pip install PyYAML") from None
    return yaml


def _loader_class(yaml: ModuleType, libyaml: bool = True) -> Any:
    """PyYAML's safe loader: the C one when asked for and available."""
    if libyaml:
        return getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.SafeLoader


class _ParserFailed(Exception):
    """libyaml refused the document; the pure-Python parser says why."""


class YamlSource(FileSource):
    """A YAML file; see the module docstring for what is refused and converted."""

    suffixes: ClassVar[tuple[str, ...]] = (".yaml", ".yml")
    #: Parse with libyaml when PyYAML has it (tests turn it off to run the
    #: pure-Python parser on the same documents).
    libyaml: ClassVar[bool] = True

    def parse(self, text: str) -> Any:
        yaml = _yaml(self.name)
        if self.libyaml and hasattr(yaml, "CSafeLoader"):
            try:
                return self._parse(yaml, yaml.CSafeLoader, text)
            except _ParserFailed:
                # libyaml's messages (and limits, such as its own nesting
                # depth) differ between builds; the pure-Python parser gives
                # the same words and positions everywhere.
                pass
        return self._parse(yaml, yaml.SafeLoader, text)

    def _parse(self, yaml: ModuleType, loader_class: Any, text: str) -> Any:
        loader = None
        try:
            # The pure-Python reader checks for control characters here.
            loader = loader_class(text)
            with _gc.paused():  # a container per node
                node = self._compose(yaml, loader)
                if node is None:
                    raise self.empty()
                self._check_keys(loader, node, 1, set())
                data = _Builder(self, loader).build(node)
        except yaml.YAMLError as exc:
            if loader_class is not yaml.SafeLoader:
                raise _ParserFailed from None
            raise self._yaml_error(yaml, exc, text) from None
        finally:
            if loader is not None:
                loader.dispose()
        # Before normalize() copies anything: an alias bomb is refused here.
        check_expanded_size(data)
        return data

    def _yaml_error(self, yaml: ModuleType, exc: Exception, text: str) -> SourceError:
        """A PyYAML error as a SourceError at its line and column."""
        if isinstance(exc, yaml.reader.ReaderError):
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
            return SourceError(self.name, f"control character U+{code:04X} is not allowed in "
                                          f"YAML; write it as {escape} inside double quotes",
                               line, column)
        if isinstance(exc, yaml.MarkedYAMLError):
            mark = exc.problem_mark or exc.context_mark
            reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            if mark is not None:
                return SourceError(self.name, reason, mark.line + 1, mark.column + 1)
            return SourceError(self.name, reason)
        return SourceError(self.name, f"invalid YAML ({type(exc).__name__})")

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
        merge: Any = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge is not None:
                    first = merge.start_mark.line + 1
                    raise self._at(key_node, f"duplicate merge key '<<' (first on line {first}); "
                                             "merge several mappings with <<: [*a, *b]")
                merge = key_node
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


class _Builder:
    """Plain data from a checked node graph, merge keys resolved by the spec.

    Nodes are built in document order and each once: an alias yields the
    object already built for its anchor (normalize() copies shared objects
    apart later), and a collection is recorded before its children are
    built, so a recursive alias becomes a cycle that
    :func:`check_expanded_size` refuses at its anchor.
    """

    def __init__(self, source: YamlSource, loader: Any) -> None:
        self._source = source
        self._loader = loader
        self._built: dict[int, Any] = {}
        #: Mappings whose merges are not resolved yet.
        self._open: set[int] = set()

    def build(self, node: Any) -> Any:
        built = self._built.get(id(node))
        if built is not None:
            return built
        if node.id == "mapping" and node.tag == _MAP_TAG:
            return self._mapping(node)
        if node.id == "sequence" and node.tag == _SEQ_TAG:
            items: list[Any] = []
            self._built[id(node)] = items
            items.extend(self.build(item) for item in node.value)
            return items
        # Scalars, and collections with another tag (!!set, !!omap), by
        # PyYAML's safe constructor; normalize() refuses what is not JSON.
        return self._loader.construct_object(node, deep=True)

    def _mapping(self, node: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self._built[id(node)] = result
        self._open.add(id(node))
        own: list[tuple[str, Any]] = []
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = [self._merged(item, key_node)
                          for item in _merge_items(self._source, value_node)]
                continue
            key = self._loader.construct_object(key_node)
            # Integer keys are stored as the strings JSON would make of them
            # (_check_keys refused every other kind).
            own.append((str(key) if isinstance(key, int) else key, self.build(value_node)))
        # Earlier merged mappings win over later ones, own keys over all;
        # updating in reverse keeps the key order PyYAML used to give.
        for source in reversed(merged):
            result.update(source)
        result.update(own)
        self._open.discard(id(node))
        return result

    def _merged(self, node: Any, key_node: Any) -> dict[str, Any]:
        if id(node) in self._open:
            raise self._source._at(key_node,
                                   "a merge key (<<) refers to a mapping that contains it")
        mapping: dict[str, Any] = self.build(node)
        return mapping


def _merge_items(source: YamlSource, value: Any) -> list[Any]:
    """The mapping nodes a ``<<`` merges, in order; anything else is refused at its line."""
    items = value.value if value.id == "sequence" and value.tag == _SEQ_TAG else [value]
    for item in items:
        if item.id != "mapping" or item.tag != _MAP_TAG:
            found = "list" if item.id == "sequence" else \
                "mapping" if item.id == "mapping" else "scalar"
            raise source._at(item, f"a merge key (<<) takes a mapping or a list of mappings; "
                                   f"found a {found} ({item.tag.rsplit(':', 1)[-1]})")
    return list(items)


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
