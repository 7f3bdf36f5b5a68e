"""Secrets are redacted by the path under which they are published, in every output.

Aliases, serialization aliases, nested models, lists and dicts of secrets and
unions: each secret's value must appear in no output of the CLI, the debug
view or the logs, while workers still read it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel, Field, SecretBytes, SecretStr

import shmconf
from shmconf.integrations.debug import debug_info
from tests.helpers import REPO


class Inner(BaseModel):
    token: SecretStr = Field(alias="innerToken")


class Secrets(BaseModel):
    api: SecretStr = Field(alias="apiAuth")
    served: SecretStr = Field(SecretStr("s-served-default"), serialization_alias="servedAs")
    inner: Inner
    many: list[SecretStr] = []
    named: dict[str, SecretStr] = {}
    either: SecretStr | int = 0
    raw: SecretBytes = SecretBytes(b"")
    plain: str = "visible"


def values(generation: int) -> dict[str, Any]:
    return {"apiAuth": f"S-API-{generation}", "served": f"S-SERVED-{generation}",
            "inner": {"innerToken": f"S-INNER-{generation}"},
            "many": [f"S-LIST-{generation}"], "named": {"k": f"S-DICT-{generation}"},
            "either": f"S-UNION-{generation}", "raw": f"S-BYTES-{generation}"}


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "shmconf", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_no_output_shows_a_secret(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="shmconf"), \
            shmconf.Publisher(name, model=Secrets) as publisher:
        publisher.publish(values(1))
        publisher.publish(values(2))
        with shmconf.attach(name, model=Secrets) as worker:
            cfg = worker.get()
            assert cfg.api.get_secret_value() == "S-API-2"  # workers read the values
            assert cfg.inner.token.get_secret_value() == "S-INNER-2"
            assert cfg.raw.get_secret_value() == b"S-BYTES-2"
            outputs = [
                cli("show", name), cli("show", name, "--json"), cli("history", name),
                cli("history", name, "--json"), cli("diff", name, "1", "2"),
                cli("diff", name, "1", "2", "--json"), cli("status", name, "--json"),
                repr(debug_info(worker, show_config=True)), repr(cfg), caplog.text,
            ]
        with shmconf.attach(name) as bare:  # no model: the recorded secret paths redact
            outputs.append(repr(debug_info(bare, show_config=True)))
        publisher.unlink()
    for output in outputs:
        assert "S-" not in output.replace("S-served", ""), output
    assert "visible" in outputs[0]
