"""No process ever registers a shmconf object with multiprocessing.resource_tracker.

The tracker unlinks whatever is still registered when a program's processes
exit: a worker that registered the segment would destroy every worker's
config on its way out. shmconf opens its objects itself (never through
``SharedMemory``), in publishers and readers alike. This test records every
registration of every Python process it starts (a ``sitecustomize`` on the
path wraps ``resource_tracker.register``) and runs real publishers, readers,
Pool workers (fork and spawn) and the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

SITECUSTOMIZE = """
import os
from multiprocessing import resource_tracker

_register = resource_tracker.register


def register(name, rtype):
    with open(os.environ["SHMCONF_TRACKER_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()} {rtype} {name}\\n")
    return _register(name, rtype)


resource_tracker.register = register
"""

SCENARIO = """
import multiprocessing
import sys

import shmconf
from shmconf.integrations.multiprocessing import initializer


def work(_):
    return shmconf.current()["n"]


if __name__ == "__main__":
    name = sys.argv[1]
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"n": 1})
        with shmconf.attach(name) as reader:
            assert reader.get()["n"] == 1
        for method in ("fork", "spawn"):
            ctx = multiprocessing.get_context(method)
            with ctx.Pool(2, initializer=initializer, initargs=(name,)) as pool:
                assert pool.map(work, range(4)) == [1, 1, 1, 1]
            # A SharedMemory made by the application itself is registered:
            # the log shows that the recording works.
        from multiprocessing import shared_memory
        probe = shared_memory.SharedMemory(create=True, size=16)
        probe.close()
        probe.unlink()
        publisher.unlink()
    print("ok")
"""


def test_nothing_registers_a_shmconf_object(tmp_path: Path, name: str) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "registered.log"
    log.touch()
    env = {"PYTHONPATH": f"{hooks}:{REPO}", "SHMCONF_TRACKER_LOG": str(log)}
    scenario = tmp_path / "scenario.py"
    scenario.write_text(SCENARIO, encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([sys.executable, *args], cwd=REPO, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120, check=False)

    result = run(str(scenario), name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "resource_tracker" not in result.stderr
    run("-m", "shmconf", "status", name)  # exits 1 (unlinked); registers nothing either
    lines = log.read_text(encoding="utf-8").splitlines()
    assert any("shared_memory" in line for line in lines), "the recording hook did not run"
    assert [line for line in lines if "shmconf" in line] == []
