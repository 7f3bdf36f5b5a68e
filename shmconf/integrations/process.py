"""Run a publisher in a child process that a server's master owns.

A pre-forking server (gunicorn) must not run the publisher as a thread in its
master: every worker forked from the master would inherit a copy of that
thread's state without the thread itself (a held writer lock, a half-armed
inotify watch), and the flock that keeps a name to one writer would be
shared by every worker. :class:`PublisherProcess` starts
``python -m shmconf.integrations.process`` instead: a fresh interpreter
(never forked from the master) that builds a :class:`~shmconf.Publisher`
and serves until told to stop.

The master and the child talk over one socket pair, never by pickling:

1. The master sends one JSON line: the name, the source paths, the model as
   an import string ``pkg.mod:Class``, the publisher's keyword options and
   the master's ``sys.path`` (so the child imports what the master imports).
2. The child publishes the initial config and answers one JSON line,
   ``{"ready": GEN}`` or ``{"error": "why"}`` (an invalid initial config: the
   master raises with that message, and the server does not start). A
   standby child answers ``{"standby": true}`` at once, then waits for the
   writer lock, and publishes when it gets it.
3. Afterwards the socket is a lifeline. The master writes ``s`` (stop, keep
   the segment) or ``u`` (stop, unlink); end-of-file means the master died,
   and the child stops as well, so an orphan never holds the writer lock
   against the next start. The child's end of file tells the master the
   child exited, even when the server's own ``waitpid(-1)`` reaped it first.

SIGHUP to the child reloads its sources now (``Publisher.serve_forever``).
The child runs in its own session, so a Ctrl-C in the server's terminal goes
to the master, which then stops the child after its workers.

The master's child is not the publisher itself but its supervisor,
``python -m shmconf.integrations.supervisor``, which speaks this protocol on
both sides: it relays the spec and the first reply, runs the publisher
(``python -m shmconf.integrations.process``, this module's :func:`main`) as
its own child, and restarts it with backoff when it dies. The master sees one
child, whatever happens to the publisher; see :mod:`shmconf.integrations.supervisor`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

import orjson

from shmconf import _paths
from shmconf.errors import PublisherRunningError, PublisherStartError, ShmconfError
from shmconf.integrations._worker import model_spec
from shmconf.model import import_model
from shmconf.protocol.block import list_shm_names
from shmconf.protocol.layout import validate_name

log = logging.getLogger("shmconf.integrations.process")

#: Seconds ``start`` waits for the initial publish by default.
DEFAULT_START_TIMEOUT_S: Final = 30.0
#: Seconds ``stop`` waits after asking before it kills the child.
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
#: Lifeline commands, one byte each.
_STOP_KEEP: Final = b"s"
_STOP_UNLINK: Final = b"u"
#: Publisher keywords that do not travel as JSON (they name Python objects).
_NOT_PORTABLE: Final = frozenset({"name", "sources", "model"})


def _portable_sources(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    out = []
    for source in sources:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                f"sources must be file paths or URLs to run in a publisher process, got {source!r}"
            )
        text = os.fspath(source)
        # Relative paths are the master's: the child may start elsewhere.
        out.append(text if "://" in text else str(Path(text).absolute()))
    return out


def _portable_options(options: dict[str, Any]) -> dict[str, Any]:
    from shmconf.publisher import Publisher
    from shmconf.rollout import Rollout

    known = set(inspect.signature(Publisher).parameters) - _NOT_PORTABLE
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown Publisher option(s): {', '.join(unknown)}")
    out = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
    rollout = Rollout.of(out.get("rollout"))
    if rollout is not None:
        # A policy (or its keywords, checked here so that a typo fails in the
        # master, not in the child) travels as its plain keywords.
        out["rollout"] = rollout.to_json()
    try:
        orjson.dumps(out)
    except TypeError as exc:
        raise TypeError(f"Publisher options must be plain values: {exc}") from None
    return out


class PublisherProcess:
    """A :class:`~shmconf.Publisher` serving ``name`` in a child process.

    Args:
        name: the config's name.
        sources: file paths or source URLs (made absolute: the child may run
            elsewhere).
        model: a pydantic model class that is importable by its module and
            name, or its import string ``"pkg.mod:Class"``.
        unlink_on_exit: when the child stops (``stop()``, SIGTERM, or the
            master's death), remove the segments and the lock file.
        metrics_port: serve the publisher's Prometheus metrics on this port
            (needs ``prometheus_client``; 0 picks a free port, see the
            ``metrics_port`` attribute after ``start()``); ``metrics_addr`` is
            the address to bind.
        python: the interpreter to run (default: this one).
        **publisher_options: keywords for :class:`~shmconf.Publisher`
            (``debounce``, ``poll``, ``history``, ``runtime_dir``, ...), plain values only.

    ``start()`` returns once the initial config is published; ``stop()``
    ends the child. The child is the publisher's supervisor (``pid`` is its
    pid): a publisher that dies is restarted with backoff, and ``shmconf
    status`` shows the restarts. A handle inherited by a forked process (a
    worker) does nothing there: only the process that started the child
    controls it.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[str | os.PathLike[str]],
        model: type[Any] | str | None = None,
        *,
        unlink_on_exit: bool = True,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
        python: str | None = None,
        **publisher_options: Any,
    ) -> None:
        self.name = validate_name(name)
        if not sources:
            raise ValueError("a publisher process needs at least one source")
        _, model_import = model_spec(model)
        self.unlink_on_exit = unlink_on_exit
        self.python = python or sys.executable
        self.spec: dict[str, Any] = {
            "name": self.name,
            "sources": _portable_sources(sources),
            "model": model_import,
            "options": _portable_options(publisher_options),
            "unlink": unlink_on_exit,
            "metrics": None if metrics_port is None else [metrics_addr, metrics_port],
        }
        self.generation = 0
        #: The port the child serves metrics on (``metrics_port=0`` picks a free one).
        self.metrics_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._owner = os.getpid()
        _handles.add(self)

    def clone(self) -> PublisherProcess:
        """A new, not yet started handle with the same spec (a handle starts once)."""
        twin = copy.copy(self)
        twin.spec = dict(self.spec)
        twin.generation = 0
        twin.metrics_port = None
        twin._proc = None
        twin._channel = None
        twin._owner = os.getpid()
        _handles.add(twin)
        return twin

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def runtime_dir(self) -> str | None:
        value = self.spec["options"].get("runtime_dir")
        return None if value is None else str(value)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S, *, standby: bool = False) -> int:
        """Start the child and wait until it published; returns the generation.

        With ``standby`` the child waits for the writer lock of a publisher
        that runs already (another master's, during a gunicorn USR2 upgrade)
        and takes over when that one stops; this returns as soon as the child
        stands by, with 0.

        Raises:
            PublisherStartError: the initial config is missing or invalid,
                another publisher holds the name, or nothing came in time.
        """
        if self._proc is not None:
            raise RuntimeError(f"publisher process of {self.name!r} was already started")
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "shmconf.integrations.supervisor", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._channel = ours
        spec = {**self.spec, "path": [p for p in sys.path if isinstance(p, str)],
                "standby": standby}
        try:
            ours.sendall(orjson.dumps(spec) + b"\n")
            reply = self._read_reply(time.monotonic() + timeout_s)
        except BaseException:
            self._abandon()
            raise
        if reply is None:
            self._abandon()
            raise PublisherStartError(
                self.name, f"no initial publish within {timeout_s:g}s (the publisher's log "
                "says why; a --standby publisher waits for the running one)"
            )
        if "error" in reply:
            self._reap(DEFAULT_STOP_TIMEOUT_S)
            raise PublisherStartError(self.name, str(reply["error"]))
        if reply.get("standby"):
            log.info("config %r: publisher process %d stands by for the running publisher",
                     self.name, self._proc.pid)
            return 0
        if "ready" not in reply:
            code = self._reap(DEFAULT_STOP_TIMEOUT_S)
            raise PublisherStartError(
                self.name, f"the publisher process exited (status {code}) before publishing; "
                "its log above says why"
            )
        self.generation = int(reply["ready"])
        self.metrics_port = reply.get("metrics_port")
        log.info("config %r: publisher process %d serving generation %d",
                 self.name, self._proc.pid, self.generation)
        return self.generation

    def _read_reply(self, deadline: float) -> dict[str, Any] | None:
        """The child's one-line answer; ``{}`` at end of file, ``None`` on timeout."""
        assert self._channel is not None
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._channel], [], [], remaining)
            if not readable:
                continue
            chunk = self._channel.recv(65536)
            if not chunk:
                return {}
            buffer += chunk
        reply = orjson.loads(buffer.split(b"\n", 1)[0])
        return reply if isinstance(reply, dict) else {}

    @property
    def alive(self) -> bool:
        """Whether the child still runs (its end of the socket is still open)."""
        channel = self._channel
        if channel is None or self._owner != os.getpid():
            return False
        # What the child says after start (a standby's late "ready") is for
        # its log only; end of file is what tells that it exited.
        while select.select([channel], [], [], 0)[0]:
            try:
                if channel.recv(4096) == b"":
                    return False
            except OSError:
                return False
        return True

    def reload(self) -> bool:
        """Ask the child to reload its sources now (SIGHUP); ``False`` if it is gone."""
        if not self.alive or self._proc is None:
            return False
        # Popen.send_signal polls first, so a child that the server's own
        # waitpid(-1) already reaped is never signalled by a recycled pid.
        self._proc.send_signal(signal.SIGHUP)
        return True

    def stop(
        self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S, *, unlink: bool | None = None
    ) -> None:
        """Stop the child; with ``unlink`` (default: ``unlink_on_exit``) remove the segment.

        The child is asked first and killed after ``timeout_s``. If it had to
        be killed, or died earlier, this process removes what it left.
        Idempotent; does nothing in a process that did not start the child.
        """
        if self._owner != os.getpid() or self._channel is None:
            return
        unlink = self.unlink_on_exit if unlink is None else unlink
        with contextlib.suppress(OSError):
            self._channel.sendall(_STOP_UNLINK if unlink else _STOP_KEEP)
        deadline = time.monotonic() + timeout_s
        if not self._wait_closed(deadline):
            log.warning("config %r: publisher process %s did not stop in %gs; killing it",
                        self.name, self.pid, timeout_s)
        # The child closes its socket once it cleaned up; let it finish exiting.
        self._abandon(max(0.0, deadline - time.monotonic()))
        if unlink:
            remove_leftovers(self.name, self.runtime_dir)

    def _wait_closed(self, deadline: float) -> bool:
        """Wait for end of file from the child (it exited); ``False`` on timeout."""
        channel = self._channel
        assert channel is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([channel], [], [], remaining)
            if readable:
                try:
                    if channel.recv(4096) == b"":
                        return True
                except OSError:
                    return True

    def _reap(self, timeout_s: float) -> int | None:
        """Wait for the child to exit after it said why; returns its status."""
        if self._channel is not None:
            self._wait_closed(time.monotonic() + timeout_s)
        self._abandon(timeout_s)
        return None if self._proc is None else self._proc.returncode

    def _abandon(self, grace_s: float = 0.0) -> None:
        """Reap the child, killing it if it is still there after ``grace_s``; close the socket."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(DEFAULT_STOP_TIMEOUT_S)
        self._close_channel()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _after_fork_in_child(self) -> None:
        # A forked worker must neither keep the lifeline open (the child would
        # outlive a dead master until every worker exited) nor control the child.
        # close() only drops this process's descriptor; the master's stays open.
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.close()
        self._channel = None

    def __enter__(self) -> PublisherProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self._proc is not None else "not started"
        return f"<shmconf PublisherProcess {self.name!r} {state}>"


_handles: weakref.WeakSet[PublisherProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        handle._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def remove_leftovers(name: str, runtime_dir: str | None = None) -> None:
    """Remove the segments and lock file of ``name`` once no publisher holds it.

    What ``Publisher.unlink()`` removes, for a publisher that could not do it
    itself (killed). Does nothing while another publisher holds the lock.
    """
    lock = _paths.lock_path(name, runtime_dir)
    if not list_shm_names(name) and not lock.exists():
        return
    from shmconf.publisher import Publisher

    try:
        publisher = Publisher(name, runtime_dir=runtime_dir)
    except PublisherRunningError:
        log.warning("config %r: another publisher holds it; leaving its segment", name)
        return
    publisher.unlink()


# -- the child -------------------------------------------------------------------


class _Stop(Exception):
    """Raised in the child's main thread by SIGTERM before the service loop runs."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _reply(channel: socket.socket, **message: Any) -> None:
    with contextlib.suppress(OSError):
        channel.sendall(orjson.dumps(message) + b"\n")


def _read_spec(channel: socket.socket) -> dict[str, Any]:
    buffer = b""
    while b"\n" not in buffer:
        chunk = channel.recv(65536)
        if not chunk:
            raise SystemExit(1)  # the master went away before saying anything
        buffer += chunk
    spec = orjson.loads(buffer.split(b"\n", 1)[0])
    if not isinstance(spec, dict):
        raise SystemExit(2)
    return spec


def _lifeline(channel: socket.socket, decision: dict[str, bool]) -> None:
    """Wait for a stop command or the master's end of file, then stop the service."""
    try:
        command = channel.recv(1)
    except OSError:
        command = b""
    if command == _STOP_KEEP:
        decision["unlink"] = False
    elif command == _STOP_UNLINK:
        decision["unlink"] = True
    # SIGTERM reaches whichever handler runs now: the service loop's (stop) or
    # the start-up one (_Stop); both end in main()'s cleanup.
    os.kill(os.getpid(), signal.SIGTERM)


def _start_lifeline(channel: socket.socket, decision: dict[str, bool]) -> None:
    threading.Thread(
        target=_lifeline, args=(channel, decision), name="shmconf-lifeline", daemon=True
    ).start()


def _serve_metrics(publisher: Any, addr: str, port: int) -> int:
    """Serve the publisher's metrics on a thread; returns the port (``port`` 0 picks one)."""
    from shmconf.integrations.prometheus import serve_publisher_metrics

    server = serve_publisher_metrics(publisher, port=port, addr=addr)
    return int(server.server_port)


def channel_argument(argv: Sequence[str] | None, module: str) -> int | None:
    """The socket descriptor a child of :class:`PublisherProcess` was given, or None.

    Also sets up the child's log lines like gunicorn's, on stderr, which the
    master's log receives. ``None`` (and a usage line) for a bad command line.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write(f"usage: python -m {module} FD (started by "
                         "shmconf.integrations.process.PublisherProcess)\n")
        return None
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args[0])


def main(argv: Sequence[str] | None = None) -> int:
    """The child: read the spec, publish, report, serve until told to stop."""
    fd = channel_argument(argv, "shmconf.integrations.process")
    if fd is None:
        return 2
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    # Until the service loop installs its reload handler, a SIGHUP must not
    # kill the child (its default action): the first publish reads the files anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    channel = socket.socket(fileno=fd)
    try:
        spec = _read_spec(channel)
        return _run(channel, spec)
    except _Stop:
        return 0
    finally:
        channel.close()


def _run(channel: socket.socket, spec: dict[str, Any]) -> int:
    from shmconf.publisher import Publisher

    for entry in reversed(spec.get("path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    name = str(spec["name"])
    options = dict(spec["options"])
    standby = bool(spec.get("standby") or options.pop("standby", False))
    decision = {"unlink": bool(spec.get("unlink", True))}
    try:
        model = import_model(spec["model"]) if spec.get("model") else None
        if standby:
            # Answer before waiting for the lock, and listen to the master
            # meanwhile: a stop while standing by ends the wait (via _Stop).
            _reply(channel, standby=True)
            _start_lifeline(channel, decision)
        publisher = Publisher(name, spec["sources"], model, standby=standby, **options)
    except (ShmconfError, OSError, ImportError, TypeError, ValueError) as exc:
        # Most of shmconf's errors name the config already.
        text = str(exc)
        log.error("%s", text if f"{name!r}" in text else f"config {name!r}: {text}")
        _reply(channel, error=text)
        return 1
    try:
        # Metrics first, so that the initial publish is counted and timed too.
        metrics_port = None
        if spec.get("metrics"):
            addr, port = spec["metrics"]
            try:
                metrics_port = _serve_metrics(publisher, str(addr), int(port))
            except (OSError, ImportError) as exc:
                log.error("config %r: cannot serve metrics on %s:%s: %s", name, addr, port, exc)
                _reply(channel, error=f"cannot serve metrics on {addr}:{port}: {exc}")
                return 1
        try:
            generation = publisher.publish_now()
        except (ShmconfError, OSError) as exc:
            log.error("config %r: initial config rejected: %s", name, exc)
            _reply(channel, error=str(exc))
            return 1
        _reply(channel, ready=generation, metrics_port=metrics_port)
        if not standby:
            _start_lifeline(channel, decision)
        # publish_now above was the first publish; serve_forever arms the
        # watcher and loads once more, so an edit made in between is not lost.
        publisher.serve_forever()
        return 0
    except _Stop:
        return 0
    finally:
        # No second SIGTERM may interrupt the clean-up half way.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if decision["unlink"]:
            publisher.unlink()
        else:
            publisher.close()
        log.info("config %r: publisher stopped%s", name,
                 " and segment removed" if decision["unlink"] else "")


if __name__ == "__main__":
    sys.exit(main())
