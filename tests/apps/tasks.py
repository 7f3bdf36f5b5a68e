"""Pool tasks: importable by every start method (spawn imports them by name)."""

from __future__ import annotations

import os
from typing import Any

import shmconf


def read_config(_: object = None) -> dict[str, Any]:
    """What this pool worker reads, and who it is."""
    cfg = shmconf.current()
    return {"pid": os.getpid(), "greeting": cfg.greeting, "host": cfg.database.host,
            "generation": shmconf.current_reader().generation}
