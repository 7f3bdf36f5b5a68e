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

import re
from types import ModuleType
from typing import Any, ClassVar, Final

from shmconf import _gc
from shmconf.errors import SourceError
from shmconf.sources.base import (
    MAX_DEPTH,
    MAX_NODES,
    FileSource,
    KeyPath,
    check_expanded_size,
)

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


#: Exceptions PyYAML's pure-Python scanner and safe constructor raise, on some
#: input, instead of a YAMLError; shmconf turns them into a SourceError.
_CONSTRUCTOR_BUGS: Final = (ValueError, OverflowError, KeyError, AttributeError, IndexError,
                            TypeError, RecursionError)
_SCANNER_BUGS: Final = _CONSTRUCTOR_BUGS
#: Documents up to this many characters are read again with the pure-Python
#: parser when libyaml refuses them (its message is the same on every build);
#: a larger one keeps libyaml's message rather than wait seconds for another.
_REREAD_LIMIT: Final = 1_000_000
#: YAML's line breaks (YAML 1.1 counts NEL and the Unicode separators too).
_LINE_BREAK: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
#: Collection tags shmconf builds itself; any other is PyYAML's business
#: (which refuses every one the safe loader does not know).
_OMAP_TAGS: Final = ("tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs")
_SET_TAG: Final = "tag:yaml.org,2002:set"


class _ParserFailed(Exception):
    """libyaml refused the document; the pure-Python parser says why."""

    def __init__(self, error: SourceError) -> None:
        super().__init__(error)
        self.error = error


def _yaml_position(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of character ``position``, counting YAML's line breaks."""
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, position - start + 1


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
            except _ParserFailed as failed:
                # libyaml's messages (and limits, such as its own nesting
                # depth) differ between builds; the pure-Python parser gives
                # the same words and positions everywhere. It is slower, so a
                # large document keeps libyaml's message.
                if len(text) > _REREAD_LIMIT:
                    raise failed.error from None
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
            error = self._yaml_error(yaml, exc, text)
            if loader_class is not yaml.SafeLoader:
                raise _ParserFailed(error) from None
            raise error from None
        except SourceError:
            raise  # shmconf's own refusal (a ValueError too)
        except _SCANNER_BUGS as exc:
            # The pure-Python scanner fails on some escapes (chr() of
            # "\U00110000") instead of reporting them; libyaml refuses them.
            mark = loader.get_mark() if loader is not None and \
                hasattr(loader, "get_mark") else None
            where = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
            raise SourceError(self.name, f"invalid YAML ({type(exc).__name__} in the "
                                         "scanner: an escape out of range?)", *where) from None
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
            line, column = _yaml_position(text, exc.position)
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

    def _scalar(self, loader: Any, node: Any) -> Any:
        """A scalar node's value, by PyYAML's safe constructor; any failure at its line.

        The constructor raises ValueError, KeyError and others on some
        tagged scalars (``!!int hunter2``, ``!!bool x``, an integer of 5,000
        digits); their messages would show the value, which may be a secret.
        """
        try:
            return loader.construct_object(node, deep=True)
        except _CONSTRUCTOR_BUGS:
            tag = node.tag.rsplit(":", 1)[-1]
            raise self._at(node, f"cannot read this value as {tag}") from None

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
            key = self._scalar(loader, key_node) if key_node.id == "scalar" else None
            if key_node.id != "scalar" or isinstance(key, bool) or \
                    not isinstance(key, (str, int)):
                found = key_node.id if key_node.id != "scalar" else _yaml_type(key)
                raise self._at(key_node, f"found a key of type {found}; keys must be strings "
                                         "(quote it)")
            text = _key_text(self, key_node, key)
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
        classes = [yaml.SafeLoader]
        if self.libyaml and hasattr(yaml, "CSafeLoader"):
            classes.insert(0, yaml.CSafeLoader)
        for loader_class in classes:  # the parser that read the document
            loader = None
            try:
                loader = loader_class(text)
                node = self._compose(yaml, loader)
                for part in path:
                    node = _child(loader, node, part)
                    if node is None:
                        return None
            except (yaml.YAMLError, SourceError, *_CONSTRUCTOR_BUGS):
                continue
            finally:
                if loader is not None:
                    loader.dispose()
            if node is None:
                return None
            return node.start_mark.line + 1, node.start_mark.column + 1
        return None


class _Builder:
    """Plain data from a checked node graph, merge keys resolved by the spec.

    Nodes are built in document order and each once: an alias yields the
    object already built for its anchor (normalize() copies shared objects
    apart later), and a collection is recorded before its children are
    built, so a recursive alias becomes a cycle that
    :func:`check_expanded_size` refuses at its anchor. Merges copy keys, so
    they are counted: more than ``MAX_NODES`` keys and items built is
    refused before the copies cost gigabytes.
    """

    def __init__(self, source: YamlSource, loader: Any) -> None:
        self._source = source
        self._loader = loader
        self._built: dict[int, Any] = {}
        #: Mappings whose merges are not resolved yet.
        self._open: set[int] = set()
        self._budget = MAX_NODES

    def build(self, node: Any) -> Any:
        built = self._built.get(id(node))
        if built is not None:
            return built
        if node.id == "mapping":
            if node.tag == _SET_TAG:
                # Refused by normalize() with its key path: a set is no config value.
                return {self._source._scalar(self._loader, key) for key, _ in node.value}
            return self._mapping(node)
        if node.id == "sequence" and (node.tag == _SEQ_TAG or node.tag in _OMAP_TAGS):
            items: list[Any] = []
            self._built[id(node)] = items
            self._spend(node, len(node.value))
            if node.tag in _OMAP_TAGS:
                # Ordered pairs ([{k: v}, ...]) become [[k, v], ...].
                items.extend(self._pair(item) for item in node.value)
            else:
                items.extend(self.build(item) for item in node.value)
            return items
        # Scalars, by PyYAML's safe constructor; an unknown tag on a
        # collection fails there too, before building anything below it.
        return self._source._scalar(self._loader, node)

    def _mapping(self, node: Any) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            return self._source._scalar(self._loader, node)  # type: ignore[no-any-return]
        result: dict[str, Any] = {}
        self._built[id(node)] = result
        self._open.add(id(node))
        own: list[tuple[str, Any]] = []
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = [self._merged(item, key_node)
                          for item in _merge_items(self._source, value_node)]
                self._spend(key_node, sum(len(m) for m in merged))
                continue
            key = self._source._scalar(self._loader, key_node)
            # Integer keys are stored as the strings JSON would make of them
            # (_check_keys refused every other kind).
            own.append((str(key) if isinstance(key, int) else key, self.build(value_node)))
        self._spend(node, len(own))
        # Earlier merged mappings win over later ones, own keys over all;
        # updating in reverse keeps the key order PyYAML used to give.
        for source in reversed(merged):
            result.update(source)
        result.update(own)
        self._open.discard(id(node))
        return result

    def _pair(self, item: Any) -> list[Any]:
        if item.id != "mapping" or len(item.value) != 1:
            raise self._source._at(item, "an ordered map (!!omap, !!pairs) takes mappings "
                                         "of one key each")
        key_node, value_node = item.value[0]
        return [self._source._scalar(self._loader, key_node), self.build(value_node)]

    def _merged(self, node: Any, key_node: Any) -> dict[str, Any]:
        if id(node) in self._open:
            raise self._source._at(key_node,
                                   "a merge key (<<) refers to a mapping that contains it")
        mapping: dict[str, Any] = self.build(node)
        return mapping

    def _spend(self, node: Any, count: int) -> None:
        """Count ``count`` keys or items built; refuse the document past ``MAX_NODES``."""
        self._budget -= count
        if self._budget < 0:
            raise self._source._at(node, f"more than {MAX_NODES} values with merge keys "
                                         "and aliases expanded")


def _key_text(source: YamlSource, node: Any, key: str | int) -> str:
    """``str(key)``; an integer too long for ``str()`` (4,300 digits) is refused at its line."""
    try:
        return str(key)
    except ValueError:
        raise source._at(node, "integer key too long") from None


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
            first = anchors[anchor].start_mark.line + 1
            raise yaml.composer.ComposerError(
                None, None, f"duplicate anchor {anchor!r} (first on line {first})",
                event.start_mark)
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
