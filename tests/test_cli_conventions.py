"""The CLI's Unix habits: --version, --help on every option, quiet closed pipes,
read-only commands that create nothing, durations with units, validate's outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import shmconf
from tests.helpers import REPO

CONFIG = "greeting: hi\ndatabase:\n  password: s3cret-pw\n"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmconf", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    first, speedups = result.stdout.strip().splitlines()
    assert first == f"shmconf {shmconf.__version__}"
    assert speedups == "C speedups: " + ("on" if shmconf._fastpath.speedups else  # type: ignore[attr-defined]
                                        shmconf._fastpath.state)  # type: ignore[attr-defined]
    off = run("--version", env={"SHMCONF_SPEEDUPS": "0"})
    assert off.stdout.splitlines()[1] == "C speedups: off (SHMCONF_SPEEDUPS=0)"
    closed = subprocess.run(  # a reader that reads nothing: quiet, exit 0
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m shmconf --version | head -0"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert (closed.returncode, closed.stderr) == (0, "")


@pytest.mark.parametrize("command", ["publish", "validate", "status", "show", "history",
                                     "diff", "rollback", "rollout", "reload", "unlink"])
def test_every_option_has_help(command: str) -> None:
    from shmconf.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for action in sub.choices[command]._actions:  # type: ignore[union-attr]
        if action.dest != "help" and action.help is not argparse_suppress():
            assert action.help, f"{command} {action.option_strings or action.dest}"


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


def test_a_closed_pipe_ends_quietly(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        for value in range(30):
            publisher.publish({"v": value})
        proc = subprocess.Popen(
            f"{sys.executable} -m shmconf history {name} | head -1", shell=True,
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert out.startswith("GEN") or out.split()[0].isdigit() or out, out
        assert err == ""
        # The same, where a pipeline is judged by its first failure.
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c",
             f"{sys.executable} -m shmconf history {name} --json | head -c 10"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        publisher.unlink()


@pytest.mark.parametrize("command", [["status"], ["show"], ["history"], ["diff", "1", "2"]])
def test_read_only_commands_on_an_unknown_name_create_nothing(tmp_path: Path,
                                                              command: list[str]) -> None:
    runtime = tmp_path / "runtime"
    result = run(command[0], "typo-name", *command[1:], env={"SHMCONF_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 1
    assert "no config named 'typo-name'" in result.stderr
    assert not runtime.exists()


def test_durations_take_units_and_the_old_spelling_warns(tmp_path: Path, name: str) -> None:
    from shmconf.cli import build_parser, duration

    assert duration("100ms") == pytest.approx(0.1)
    assert duration("2s") == 2.0
    assert duration("1.5") == 1.5
    assert duration("1m") == 60.0
    args = build_parser().parse_args(["publish", name, "-c", "x.yaml", "--debounce-ms", "250"])
    assert args.debounce == pytest.approx(0.25)
    bad = run("status", name, "--wait-for", "1", "--timeout", "soon")
    assert bad.returncode == 2
    assert "'soon' is not a duration" in bad.stderr


def test_validate_print_and_json_show_the_merged_config_and_its_sources(
        tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(CONFIG + "  host: db1\n")
    prod = tmp_path / "prod.json"
    prod.write_text('{"workers": 8}')
    result = run("validate", "-c", str(base), "-c", str(prod),
                 "--model", "tests.models:Settings", "--print")
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout
    assert f"workers: 8  # {prod}" in result.stdout
    assert f"host: \"db1\"  # {base}" in result.stdout
    assert "port: 5432" in result.stdout  # the model's default: what is published
    result = run("validate", "-c", str(base), "-c", str(prod),
                 "--model", "tests.models:Settings", "--json")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["ok"] is True
    assert report["model"] == "Settings"
    assert report["config"]["database"]["password"] == "**********"
    assert report["set_in"]["workers"] == str(prod)
    assert "s3cret-pw" not in result.stdout


def test_validate_errors_name_the_field_the_model_and_the_file(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("greeting: hi\ndatabase:\n  port: 1\n")
    result = run("validate", "-c", str(base), "--model", "tests.models:Settings")
    assert result.returncode == 1
    assert f"config '{base}' is invalid for model Settings (2 problems)" in result.stderr
    assert f"database.host: Field required (expected in {base}, which sets database)" \
        in result.stderr
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("workers: 2\n")
    result = run("validate", "-c", str(nothing), "--model", "tests.models:Settings")
    assert f"greeting: Field required (none of {nothing} sets it)" in result.stderr


def test_bad_old_debounce_spelling_is_a_usage_error(name: str) -> None:
    result = run("publish", name, "-c", "x.yaml", "--debounce-ms", "abc")
    assert result.returncode == 2
    assert "'abc' is not a whole number of milliseconds" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("publish", name, "-c", "x.yaml", "--debounce", "100000000000")
    assert result.returncode == 2
    assert "longer than a day" in result.stderr


def test_validate_refuses_env_prefix_with_a_base_settings_model(tmp_path: Path) -> None:
    (tmp_path / "app.json").write_text("{}")
    result = run("validate", "-c", str(tmp_path / "app.json"), "--model", "tests.test_model:Env",
                 "--env-prefix", "APP_")
    assert result.returncode == 1
    assert "Env reads its own environment" in result.stderr


def test_validate_json_reports_a_failure_on_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("greeting: hi\n")
    result = run("validate", "-c", str(bad), "--model", "tests.models:Settings", "--json")
    assert result.returncode == 1
    report = orjson.loads(result.stdout)
    assert report["ok"] is False
    assert "database: Field required (none of" in report["problems"][0]
