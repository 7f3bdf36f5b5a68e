"""`make demo`: a publisher, four workers, and a config edited on disk.

1. copies examples/demo/app.yaml to a temporary directory,
2. starts `shmconf publish demo -c app.yaml --model settings:Settings`,
3. starts 4 worker processes that print what they read,
4. edits the file (an editor's atomic save), waits until every worker holds
   the new generation (`shmconf status demo --wait-for N`), and again with an
   invalid edit that is rejected while workers keep the last good config,
5. shows `shmconf status` and `shmconf history`, then stops everything and
   removes the segment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "demo"
SHMCONF = [sys.executable, "-m", "shmconf"]


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def save(path: Path, text: str) -> None:
    """Write like an editor does: a temporary file renamed over the original."""
    tmp = path.with_suffix(".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def shmconf(*args: str, env: dict[str, str], check: bool = True) -> str:
    result = subprocess.run([*SHMCONF, *args], env=env, capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"shmconf {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def generation(env: dict[str, str]) -> int:
    import json

    return int(json.loads(shmconf("status", "demo", "--json", env=env))["generation"])


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="shmconf-demo-"))
    env = {**os.environ, "SHMCONF_RUNTIME_DIR": str(workdir / "run"),
           "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
    config = workdir / "app.yaml"
    shutil.copy(HERE / "app.yaml", config)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        step(f"publishing {config}")
        publisher = subprocess.Popen(
            [*SHMCONF, "publish", "demo", "-c", str(config), "--model", "settings:Settings",
             "--debounce", "50ms"], env=env, cwd=HERE)
        procs.append(publisher)
        deadline = time.monotonic() + 15
        while shmconf("status", "demo", "--json", env=env, check=False) == "":
            if time.monotonic() > deadline or publisher.poll() is not None:
                raise SystemExit("the publisher did not start")
            time.sleep(0.05)

        step("starting 4 workers")
        procs += [subprocess.Popen([sys.executable, str(HERE / "worker.py")], env=env)
                  for _ in range(4)]
        shmconf("status", "demo", "--wait-for", str(generation(env)), "--timeout", "15", env=env)
        # Wait until all four are listed in the reader table.
        deadline = time.monotonic() + 15
        while shmconf("status", "demo", env=env).count("current") < 4:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not attach")
            time.sleep(0.05)

        step("editing app.yaml: greeting -> 'bonjour', feature_x -> true")
        before = generation(env)
        save(config, config.read_text().replace("greeting: hello", "greeting: bonjour")
             .replace("feature_x: false", "feature_x: true"))
        out = shmconf("status", "demo", "--wait-for", str(before + 1), "--timeout", "15", env=env)
        print(out.strip(), flush=True)

        step("saving an invalid edit (port: not-a-number): rejected, workers keep the last good")
        save(config, config.read_text().replace("port: 5432", "port: not-a-number"))
        deadline = time.monotonic() + 10
        while "last error" not in (status := shmconf("status", "demo", env=env)):
            if time.monotonic() > deadline:
                raise SystemExit("the invalid edit was not rejected")
            time.sleep(0.05)
        print(status.strip(), flush=True)

        step("fixing it: db host -> db2.internal")
        before = generation(env)
        save(config, config.read_text().replace("port: not-a-number", "port: 5432")
             .replace("db1.internal", "db2.internal"))
        shmconf("status", "demo", "--wait-for", str(before + 1), "--timeout", "15", env=env)

        step("shmconf show demo (the secret is redacted)")
        print(shmconf("show", "demo", env=env).strip())
        step("shmconf history demo")
        print(shmconf("history", "demo", env=env).strip(), flush=True)
    finally:
        step("stopping workers and publisher, removing the segment")
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shmconf("unlink", "demo", "--force", "--purge", env=env, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        print("done", flush=True)


if __name__ == "__main__":
    main()
