"""Self-checking configs: each carries the SHA-256 of its own content.

A reader that ever got a torn or mixed copy sees a ``check`` that does not
match (``tests.procs.consistency_reader``); ``tests.procs.churn_publisher``
and the torn-read and fault tests publish them.
"""

from __future__ import annotations

import hashlib


def expected_check(seq: int, blob: str) -> str:
    return hashlib.sha256(f"{seq}:{blob}".encode()).hexdigest()


def config(seq: int, size: int, *, final: bool = False) -> dict[str, object]:
    """Config number ``seq`` with a ``size``-character blob; ``final`` tells readers to stop."""
    blob = hashlib.sha256(str(seq).encode()).hexdigest() * (size // 64 + 1)
    blob = blob[:size]
    return {"seq": seq, "blob": blob, "check": expected_check(seq, blob), "final": final}
