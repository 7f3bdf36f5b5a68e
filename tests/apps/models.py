"""The load tests' model: a sequence number and a check value derived from it.

A worker that ever served a torn or mixed snapshot would answer with a
``check`` that is not ``sha256(seq)``.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, SecretStr


def check_of(seq: int) -> str:
    return hashlib.sha256(str(seq).encode()).hexdigest()


class Seq(BaseModel):
    model_config = ConfigDict(frozen=True)
    seq: int
    check: str
    padding: str = ""
    token: SecretStr = SecretStr("")


def seq_yaml(seq: int, *, padding: int = 200) -> str:
    """A config for ``seq``; ``padding`` makes it big enough to tear if it could."""
    return (
        f"seq: {seq}\ncheck: {check_of(seq)}\npadding: {'x' * padding}\n"
        f"token: s3cret-token-{seq}\n"
    )
