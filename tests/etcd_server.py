"""A real etcd server on free loopback ports, with its data in a temporary directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shmconf.sources.etcd_client import EtcdClient, EtcdError, TLSOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """Start, stop and restart one etcd member; ``endpoint`` is ``127.0.0.1:PORT``.

    With ``tls``, clients must speak TLS and show a certificate signed by the
    test CA (``self.tls`` names the CA and a client certificate and key);
    ``token_ttl`` sets how long an auth token lives unused, in seconds.
    """

    def __init__(self, *, tls: bool = False, token_ttl: int | None = None) -> None:
        self.binary = shutil.which("etcd")
        self.data_dir = Path(tempfile.mkdtemp(prefix="shmconf-etcd-"))
        self.port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "etcd.log"
        self.tls = make_certificates(self.data_dir / "tls") if tls else None
        self.token_ttl = token_ttl
        #: (user, password) that start() checks readiness with, once auth is on.
        self.auth: tuple[str, str] | None = None

    def start(self, timeout: float = 20.0) -> None:
        assert self.binary is not None
        scheme = "https" if self.tls else "http"
        args = [self.binary, "--name", "test", "--data-dir", str(self.data_dir / "data"),
                "--listen-client-urls", f"{scheme}://{self.endpoint}",
                "--advertise-client-urls", f"{scheme}://{self.endpoint}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                "--initial-cluster", f"test=http://127.0.0.1:{self.peer_port}"]
        if self.tls:
            certs = self.data_dir / "tls"
            args += ["--cert-file", str(certs / "server.crt"),
                     "--key-file", str(certs / "server.key"),
                     "--trusted-ca-file", str(certs / "ca.crt"), "--client-cert-auth"]
        if self.token_ttl is not None:
            args += ["--auth-token-ttl", str(self.token_ttl)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        user, password = self.auth or (None, None)
        client = EtcdClient([self.endpoint], tls=self.tls, user=user, password=password,
                            timeout_s=1.0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.range(b"/")
                return
            except EtcdError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.log.read_text()[-2000:]
                    self.stop()  # never leave a half-started server behind
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


def make_certificates(into: Path) -> TLSOptions:
    """A CA, a server certificate for 127.0.0.1 and client certificates (openssl).

    The client certificate has no CommonName: with client-cert-auth and auth
    both on, etcd's JSON gateway refuses one that has (CVE-2018-16886).
    ``client-cn.crt`` / ``client-cn.key`` are one with a CommonName.
    """
    into.mkdir(mode=0o700)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=into, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    # A CA as Python 3.13's strict verification (VERIFY_X509_STRICT) wants
    # it: basicConstraints critical, keyUsage; leaves with key identifiers.
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=shmconf test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
    # The server's certificate is also a client one: etcd's own gateway
    # connects to its gRPC port with it.
    certificates = {
        "server": ("/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n"
                                    "extendedKeyUsage=serverAuth,clientAuth\n"),
        "client": ("/O=shmconf test client", "extendedKeyUsage=clientAuth\n"),
        "client-cn": ("/CN=app", "extendedKeyUsage=clientAuth\n"),
    }
    leaf = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    for who, (subject, extensions) in certificates.items():
        (into / f"{who}.ext").write_text(extensions + leaf)
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{who}.crt", "-days", "2",
                "-extfile", f"{who}.ext")
    return TLSOptions(str(into / "ca.crt"), str(into / "client.crt"), str(into / "client.key"))
