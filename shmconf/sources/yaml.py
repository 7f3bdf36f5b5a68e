"""YAML files (``.yaml``, ``.yml``), loaded only with PyYAML's safe loader.

Duplicate keys are refused with their line (PyYAML would keep the last one
silently). Aliases and merge keys (``<<: *defaults``) work; the expanded
size is bounded (see ``base.MAX_NODES``). Integer keys become strings
(``404: "not found"`` is ``{"404": "not found"}``); other non-string keys
(``yes:``, ``null:``) are refused: quote them. Dates and times become
ISO-8601 strings.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shmconf._errors import SourceError
from shmconf.sources.base import FileSource


def _loader_class() -> Any:
    try:
        import yaml
    except ImportError:
        raise SourceError("(yaml)", "YAML sources need PyYAML: pip install PyYAML") from None
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictSafeLoader(base):  # type: ignore[misc, valid-type]
        """The safe loader, refusing duplicate keys and odd key types."""

        source_name = "(yaml)"

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, int) and not isinstance(key, bool):
                    key = str(key)
                elif not isinstance(key, str):
                    raise SourceError(self.source_name,
                                      f"key {key!r} is not a string; quote it",
                                      key_node.start_mark.line + 1,
                                      key_node.start_mark.column + 1)
                if key in seen:
                    raise SourceError(self.source_name, f"duplicate key {key!r} (first on "
                                      f"line {seen[key].start_mark.line + 1})",
                                      key_node.start_mark.line + 1,
                                      key_node.start_mark.column + 1)
                seen[key] = key_node
            mapping = super().construct_mapping(node, deep=deep)
            return {
                str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
                for k, v in mapping.items()
            }

    return StrictSafeLoader


class YamlSource(FileSource):
    suffixes: ClassVar[tuple[str, ...]] = (".yaml", ".yml")
    format_name: ClassVar[str] = "YAML"

    def parse(self, text: str) -> Any:
        import yaml

        loader = _loader_class()(text)
        loader.source_name = self.name
        try:
            return loader.get_single_data()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            if mark is None:
                raise SourceError(self.name, reason) from None
            raise SourceError(self.name, reason, mark.line + 1, mark.column + 1) from None
        except yaml.YAMLError as exc:
            raise SourceError(self.name, f"invalid YAML: {exc}") from None
        except RecursionError:
            raise SourceError(self.name, "nested too deeply") from None
        finally:
            loader.dispose()
