"""The demo's model: every published version must validate against it."""

from pydantic import BaseModel, ConfigDict, SecretStr


class Service(BaseModel):
    model_config = ConfigDict(frozen=True)
    greeting: str
    feature_x: bool = False


class Database(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str
    port: int = 5432
    password: SecretStr


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)
    service: Service
    database: Database
