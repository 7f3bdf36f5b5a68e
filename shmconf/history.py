"""The publisher's history: the last N published versions, kept on disk.

Each version is one orjson file, ``STATE/history/GENERATION.json``, mode 0600
in a 0700 directory: it holds the full config (a rollback needs it, secrets
included), so nobody but the publisher's user may read it. Files are written
to a temporary name and renamed, so a publisher killed while writing leaves
either the old set or the new one, never a half file; a file that does not
parse is skipped with a warning.

The state directory also holds ``pin.json`` while a rollback is in force
(see :class:`Pin`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from shmconf.protocol.control import read_private, write_private

log = logging.getLogger("shmconf.history")

#: Versions kept by default (``--history``).
DEFAULT_KEEP: Final = 20


@dataclass(frozen=True)
class Version:
    """One published version, as the history keeps it."""

    generation: int
    published_ns: int
    digest: str
    sources: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    #: What caused the publish: "sources", "publish" (an API call) or "rollback".
    origin: str = "sources"
    #: Dotted paths of secret values (from the model), redacted by the CLI.
    secrets: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Its rollout (docs/rollout.md): "" when it went to every worker at
    #: once, "candidate" while canaries try it, "promoted", or
    #: "rolled back: why"; the version that rolled one back says
    #: "rollback of N: why".
    rollout: str = ""

    @property
    def reached_everyone(self) -> bool:
        """Whether every worker held it (not a candidate that was never promoted)."""
        return self.rollout in ("", "promoted") or self.rollout.startswith("rollback of")

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "generation": self.generation,
                "published_ns": self.published_ns,
                "digest": self.digest,
                "sources": list(self.sources),
                "changed": list(self.changed),
                "origin": self.origin,
                "secrets": list(self.secrets),
                "data": self.data,
                "rollout": self.rollout,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Version:
        obj = orjson.loads(raw)
        return cls(
            generation=int(obj["generation"]),
            published_ns=int(obj["published_ns"]),
            digest=str(obj["digest"]),
            sources=tuple(obj.get("sources", ())),
            changed=tuple(obj.get("changed", ())),
            origin=str(obj.get("origin", "sources")),
            secrets=tuple(obj.get("secrets", ())),
            data=obj.get("data", {}),
            rollout=str(obj.get("rollout", "")),
        )


@dataclass(frozen=True)
class Pin:
    """A rollback in force: keep ``generation``'s content until the sources change.

    ``sources_digest`` is the digest of what the sources held when the
    rollback was made. A reload whose sources still merge to that digest
    publishes nothing; the first reload that finds different content
    publishes it and removes the pin.
    """

    generation: int
    sources_digest: str


class History:
    """The versions kept in ``directory``, newest last."""

    def __init__(self, directory: Path, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError(f"'keep' must be at least 1, got {keep}")
        self.directory = directory
        self.keep = keep
        directory.mkdir(mode=0o700, exist_ok=True)

    def _path(self, generation: int) -> Path:
        return self.directory / f"{generation:020d}.json"

    def record(self, version: Version) -> None:
        """Keep ``version``; forget the oldest beyond ``keep``."""
        write_private(self._path(version.generation), version.to_json())
        names = self._names()
        for stale in names[: max(0, len(names) - self.keep)]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / stale).unlink()

    def _names(self) -> list[str]:
        return sorted(
            n for n in os.listdir(self.directory) if n.endswith(".json") and n[:-5].isdigit()
        )

    def versions(self) -> list[Version]:
        """Every readable kept version, oldest first."""
        found = []
        for name in self._names():
            try:
                found.append(Version.from_json(read_private(self.directory / name)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable history file %s: %s", name, exc)
        return found

    def get(self, generation: int) -> Version | None:
        """The kept version of ``generation``, if it is still kept."""
        try:
            return Version.from_json(read_private(self._path(generation)))
        except FileNotFoundError:
            return None

    def before(self, generation: int, digest: str | None) -> Version | None:
        """The newest kept version older than ``generation`` with other content than ``digest``.

        What a rollback without ``--to`` goes back to: a candidate that was
        rolled back (or never promoted) is skipped.
        """
        older = [v for v in self.versions()
                 if v.generation < generation and v.digest != digest and v.reached_everyone]
        return older[-1] if older else None

    def last_generation(self) -> int:
        """The newest kept generation, 0 when there is none."""
        names = self._names()
        return int(names[-1][:-5]) if names else 0

    # -- rollback pin ------------------------------------------------------------

    @property
    def _pin_path(self) -> Path:
        return self.directory.parent / "pin.json"

    def pin(self) -> Pin | None:
        try:
            obj = orjson.loads(read_private(self._pin_path))
            return Pin(int(obj["generation"]), str(obj["sources_digest"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable rollback pin: %s", exc)
            return None

    def set_pin(self, pin: Pin | None) -> None:
        if pin is None:
            with contextlib.suppress(FileNotFoundError):
                self._pin_path.unlink()
            return
        write_private(
            self._pin_path,
            orjson.dumps({"generation": pin.generation, "sources_digest": pin.sources_digest}),
        )
