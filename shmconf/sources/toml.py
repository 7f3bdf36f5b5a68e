"""TOML files (``.toml``): ``tomllib``, or ``tomli`` on Python 3.10.

Dates and times become ISO-8601 strings; ``nan`` and ``inf`` are refused.
"""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar

from shmconf._errors import SourceError
from shmconf.sources.base import FileSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class TomlSource(FileSource):
    suffixes: ClassVar[tuple[str, ...]] = (".toml",)
    format_name: ClassVar[str] = "TOML"

    def parse(self, text: str) -> Any:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = _POSITION.search(message)
            reason = _POSITION.sub("", message).strip()
            if found:
                raise SourceError(self.name, reason, int(found[1]), int(found[2])) from None
            raise SourceError(self.name, reason) from None
        except RecursionError:
            raise SourceError(self.name, "nested too deeply") from None
