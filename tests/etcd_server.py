"""A real etcd server on free loopback ports, with its data in a temporary directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shmconf._etcd import EtcdClient, EtcdError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """Start, stop and restart one etcd member; ``endpoint`` is ``127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.binary = shutil.which("etcd")
        self.data_dir = Path(tempfile.mkdtemp(prefix="shmconf-etcd-"))
        self.port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "etcd.log"

    def start(self, timeout: float = 20.0) -> None:
        assert self.binary is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--name", "test", "--data-dir", str(self.data_dir / "data"),
                 "--listen-client-urls", f"http://{self.endpoint}",
                 "--advertise-client-urls", f"http://{self.endpoint}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                 "--initial-cluster", f"test=http://127.0.0.1:{self.peer_port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = EtcdClient([self.endpoint], timeout_s=1.0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.range(b"/")
                return
            except EtcdError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.log.read_text()[-2000:]
                    raise RuntimeError(f"etcd did not start:\n{log}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
