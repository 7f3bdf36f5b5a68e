"""Every CLI command through a real subprocess, against a real running publisher."""

from __future__ import annotations

import _posixshmem
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shmconf.protocol.block import list_shm_names
from shmconf.protocol.layout import anchor_shm_name
from tests.helpers import CONFIG_WITH_SECRET as CONFIG
from tests.helpers import REPO, SECRET, atomic_save, idle_reader_process, python, wait_until


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shmconf", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )


def status_json(name: str) -> dict[str, object]:
    result = run("status", name, "--json")
    assert result.returncode == 0, result.stderr
    return dict(orjson.loads(result.stdout))


class Running:
    def __init__(self, name: str, config: Path, proc: subprocess.Popen[str]) -> None:
        self.name, self.config, self.proc = name, config, proc

    def generation(self) -> int:
        return int(status_json(self.name)["generation"])  # type: ignore[call-overload]

    def edit(self, text: str) -> int:
        """Save new content and wait for the publisher to publish it."""
        before = self.generation()
        atomic_save(self.config, text, prefix="")
        wait_until(lambda: self.generation() > before, message="publish after edit")
        return self.generation()


@pytest.fixture
def running(name: str, tmp_path: Path) -> Iterator[Running]:
    config = tmp_path / "app.yaml"
    config.write_text(CONFIG)
    proc = python("-m", "shmconf", "publish", name, "-c", str(config),
                  "--model", "tests.models:Settings", "--debounce", "20ms")
    try:
        wait_until(lambda: run("status", name).returncode == 0 or proc.poll() is not None,
                   message="publisher up")
        assert proc.poll() is None, proc.communicate()
        yield Running(name, config, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert SECRET not in err
        run("unlink", name, "--force")


@pytest.fixture
def idle_reader(running: Running) -> Iterator[subprocess.Popen[str]]:
    with idle_reader_process(running.name) as proc:
        yield proc


def ask_read(reader: subprocess.Popen[str]) -> str:
    assert reader.stdin is not None
    assert reader.stdout is not None
    reader.stdin.write("read\n")
    reader.stdin.flush()
    return reader.stdout.readline().strip()


def test_status_names_publisher_and_readers(running: Running, idle_reader) -> None:
    result = run("status", running.name)
    assert result.returncode == 0, result.stderr
    assert f"pid {running.proc.pid} alive" in result.stdout
    assert str(idle_reader.pid) in result.stdout
    assert str(running.config) in result.stdout
    data = status_json(running.name)
    assert data["publisher_pid"] == running.proc.pid
    assert data["publisher_alive"] is True
    assert data["generation"] == 1
    assert data["sources"] == [str(running.config)]
    assert isinstance(data["digest"], str)
    assert [r["pid"] for r in data["readers"]] == [idle_reader.pid]  # type: ignore[union-attr]
    assert SECRET not in result.stdout


def test_wait_for_times_out_naming_laggards_then_succeeds(running: Running, idle_reader) -> None:
    generation = running.edit(CONFIG.replace("hello", "bonjour"))
    result = run("status", running.name, "--wait-for", str(generation), "--timeout", "0.5")
    assert result.returncode == 1
    assert f"pid {idle_reader.pid} at 1" in result.stderr
    assert ask_read(idle_reader) == f"{generation} bonjour"
    result = run("status", running.name, "--wait-for", str(generation), "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert "all 1 live reader(s)" in result.stdout


def test_show_history_and_diff_never_print_the_secret(running: Running) -> None:
    running.edit(CONFIG.replace(SECRET, SECRET + "-rotated").replace("db1", "db2"))
    shown = run("show", running.name)
    assert shown.returncode == 0
    assert SECRET not in shown.stdout
    assert '"password": "**********"' in shown.stdout
    assert '"host": "db2"' in shown.stdout
    sub = run("show", running.name, "--path", "database.host", "--json")
    assert orjson.loads(sub.stdout)["config"] == "db2"
    missing = run("show", running.name, "--path", "database.nope")
    assert missing.returncode == 1
    assert "no path 'database.nope'" in missing.stderr
    history = run("history", running.name)
    assert history.returncode == 0
    assert "database.host, database.password" in history.stdout
    diff = run("diff", running.name, "1", "2")
    assert diff.returncode == 0
    assert "database.password: secret changed" in diff.stdout
    assert 'database.host: "db1" -> "db2"' in diff.stdout
    for out in (history.stdout, diff.stdout, run("diff", running.name, "1", "2", "--json").stdout):
        assert SECRET not in out


def test_rollback_publishes_old_content_as_new_generation(running: Running, idle_reader) -> None:
    running.edit(CONFIG.replace("hello", "broken-release"))
    result = run("rollback", running.name)
    assert result.returncode == 0, result.stderr
    assert "generation 3" in result.stdout
    assert ask_read(idle_reader) == "3 hello"
    # The pin holds across a reload with unchanged sources...
    assert run("reload", running.name).returncode == 0
    assert running.generation() == 3
    # ...and is released by the next real edit.
    assert running.edit(CONFIG.replace("hello", "fixed")) == 4


def test_a_rollback_names_its_target_so_a_retry_changes_nothing(running: Running) -> None:
    running.edit(CONFIG.replace("hello", "broken-release"))  # generation 2
    result = run("rollback", running.name, "--timeout", "0")
    assert result.returncode == 0, result.stderr
    assert "rollback to generation 1 requested" in result.stdout
    wait_until(lambda: running.generation() == 3, message="the rollback")
    # The retry a timeout message advises: nothing more is published.
    result = run("rollback", running.name, "--to", "1")
    assert result.returncode == 0, result.stderr
    assert running.generation() == 3


def test_reload_reports_unchanged_and_rejections(running: Running) -> None:
    result = run("reload", running.name)
    assert result.returncode == 0, result.stderr
    assert "sources unchanged, generation 1 stays" in result.stdout
    atomic_save(running.config, CONFIG + "workers: 0\n", prefix="")
    wait_until(lambda: "workers" in str(status_json(running.name)["service"]),
               message="rejection recorded")
    result = run("reload", running.name)
    assert result.returncode == 1
    assert "workers: Value error, must be at least 1" in result.stderr
    assert f"set in {running.config}" in result.stderr
    assert running.generation() == 1


def test_validate_names_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(CONFIG)
    result = run("validate", "-c", str(good), "--model", "tests.models:Settings")
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("greeting: hi\ndatabase: [unclosed\n")
    result = run("validate", "-c", str(bad))
    assert result.returncode == 1
    assert f"{bad}:3" in result.stderr or f"{bad}:2" in result.stderr
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("greeting: hi\nworkers: 0\ndatabase: {host: x, password: y}\n")
    result = run("validate", "-c", str(wrong), "--model", "tests.models:Settings")
    assert result.returncode == 1
    assert "workers: Value error" in result.stderr


def test_missing_name_exits_1_and_bad_usage_exits_2(name: str) -> None:
    result = run("status", name)
    assert result.returncode == 1
    assert f"no config named {name!r} is published" in result.stderr
    assert run("show", name).returncode == 1
    assert run("status").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("status", "bad/name").returncode == 1


def test_second_publisher_exits_1(running: Running) -> None:
    result = run("publish", running.name, "-c", str(running.config))
    assert result.returncode == 1
    assert "already published by pid" in result.stderr


def test_invalid_initial_config_exits_1_with_location(name: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"greeting": "hi",\n "database": }\n')
    result = run("publish", name, "-c", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2" in result.stderr
    # A failed first start leaves nothing: no segment, lock file or state.
    assert list_shm_names(name) == []
    runtime = Path(os.environ["SHMCONF_RUNTIME_DIR"])
    assert not (runtime / f"{name}.lock").exists()
    assert not (runtime / name).exists()


def test_unlink_refuses_live_publisher_then_leaves_nothing(running: Running) -> None:
    result = run("unlink", running.name)
    assert result.returncode == 1
    assert "stop it first" in result.stderr
    running.proc.send_signal(signal.SIGTERM)
    running.proc.wait(timeout=30)
    result = run("unlink", running.name)
    assert result.returncode == 0, result.stderr
    assert list_shm_names(running.name) == []


def test_half_made_segment_is_explained_and_unlinked(name: str) -> None:
    # A publisher killed between shm_open and sizing leaves an empty anchor.
    fd = _posixshmem.shm_open("/" + anchor_shm_name(name), os.O_CREAT | os.O_RDWR,
                              mode=0o600)
    os.close(fd)
    result = run("status", name)
    assert result.returncode == 1
    assert "killed while creating it" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("unlink", name)
    assert result.returncode == 0, result.stderr
    assert list_shm_names(name) == []


def test_dead_reader_is_shown_once_then_reclaimed(running: Running) -> None:
    proc = python("-m", "tests.procs.idle_reader", running.name, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    proc.send_signal(signal.SIGKILL)  # no chance to release its table entry
    proc.communicate()
    first = status_json(running.name)
    shown = [(r["pid"], r["generation"], r["alive"]) for r in first["readers"]]  # type: ignore[union-attr]
    assert (proc.pid, 1, False) in shown
    second = status_json(running.name)
    assert all(r["pid"] != proc.pid for r in second["readers"])  # type: ignore[union-attr]
    human = run("status", running.name)
    assert "readers: none attached" in human.stdout
