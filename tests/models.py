"""Models the tests import by string (``--model tests.models:Settings``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator


class Database(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str
    port: int = 5432
    password: SecretStr


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)
    greeting: str
    workers: int = 4
    database: Database

    @field_validator("workers")
    @classmethod
    def positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value


class Strict(BaseModel):
    """What a worker of a rollout test checks: a port that is a number."""

    model_config = ConfigDict(frozen=True)
    port: int
