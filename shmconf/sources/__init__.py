"""Where configs come from: files in four formats, and etcd.

``open_source(spec)`` picks the source for a path or URL by its suffix or
scheme (``registry.py``); ``load_sources(specs)`` loads and layers them
(``merge.py``). See ``docs/sources.md``.
"""

from shmconf.sources.base import FileSource, Source
from shmconf.sources.dotenv import DotenvSource
from shmconf.sources.json import JsonSource
from shmconf.sources.merge import LoadedConfig, deep_merge, load_sources
from shmconf.sources.registry import FILE_FORMATS, open_source, parse_document
from shmconf.sources.toml import TomlSource
from shmconf.sources.yaml import YamlSource

__all__ = [
    "FILE_FORMATS",
    "DotenvSource",
    "FileSource",
    "JsonSource",
    "LoadedConfig",
    "Source",
    "TomlSource",
    "YamlSource",
    "deep_merge",
    "load_sources",
    "open_source",
    "parse_document",
]
