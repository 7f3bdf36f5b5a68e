"""Applications type-check against shmconf as installed (editable installs included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

APP = '''
import shmconf
from pydantic import BaseModel


class Settings(BaseModel):
    port: int = 80


reader = shmconf.attach("myapp", model=Settings)
port: int = reader.get().port
current: int = shmconf.current(Settings).port
same: shmconf.Reader[Settings] = shmconf.current_reader(Settings)
wrong: str = reader.get().port
'''


def test_mypy_sees_shmconfs_types_from_an_application(tmp_path: Path) -> None:
    # Run from outside the repository, as an application would: shmconf is
    # found through the installed package (py.typed), not the working tree.
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "app.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert "Cannot find implementation or library stub" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert lines == ['app.py:14: error: Incompatible types in assignment (expression has type '
                     '"int", variable has type "str")  [assignment]'], result.stdout
