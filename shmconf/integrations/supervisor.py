"""Keep a config's publisher running: the process between a server's master and its publisher.

A publisher that dies (a crash, the OOM killer, a stray ``kill -9``) leaves
the workers on the last generation, which is safe, but every later save is
silently ignored. gunicorn restarts a dead worker; nothing restarted the
publisher. The master cannot do it itself: gunicorn's master reaps every
child in its own ``waitpid(-1)`` loop and has no timer hook, and a thread in
a master that forks workers is the hazard that made the publisher a process
in the first place (see :mod:`shmconf.integrations.process`). So
:class:`~shmconf.integrations.process.PublisherProcess` starts
``python -m shmconf.integrations.supervisor`` instead, a small interpreter
that runs the real publisher as its own child and restarts it::

    master ──socket──> supervisor ──socket──> publisher (python -m shmconf.integrations.process)

Both sockets speak the protocol described in :mod:`shmconf.integrations.process`
(one JSON spec line in, one JSON reply line out, then one-byte commands and
end of file as the lifeline); nothing is pickled. The supervisor

1. relays the master's spec to a fresh publisher process, and that process's
   first reply (``ready``, ``standby`` or ``error``) back to the master: an
   initial config that is missing or invalid still stops the server;
2. afterwards, when the publisher exits without being asked to, logs its exit
   status or signal at ERROR level and starts a new one after a backoff
   (0.1 s, doubling to 10 s; back to 0.1 s after a run of 10 s). A restarted
   publisher waits for the writer lock (standby) instead of failing, so that
   during a gunicorn USR2 upgrade it can never take the name from the other
   master's publisher, and it continues the generation count;
3. keeps the lifeline: ``s``/``u`` from the master stop the publisher (``u``
   also removes the segment), and end of file (the master died) stops it as
   the spec says, so no orphan holds the writer lock; SIGHUP is forwarded to
   the publisher (reload); SIGTERM and SIGINT stop both;
4. writes what it did to ``supervisor.json`` in the name's state directory
   (restarts, the last exit and when, the state and since when), which
   ``shmconf status`` and the metrics read; see :mod:`shmconf.status`.

The publisher child is told never to remove the segment on its own end of
file (``unlink`` false in its spec): it sees end of file only when the
supervisor died, and the master's workers still read the segment then. The
supervisor sends ``u`` explicitly when the segment is to go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

import orjson

from shmconf import _paths
from shmconf.protocol.control import read_private, write_private
from shmconf.status import SUPERVISOR_FILE

log = logging.getLogger("shmconf.integrations.supervisor")

#: First pause before a restart: long enough that a publisher dying at once
#: in a loop costs a few interpreter starts a second, short enough that a
#: one-off crash is repaired before anyone saves a file.
BACKOFF_FIRST_S: Final = 0.1
#: Longest pause between restarts of a crash loop (it doubles up to this).
BACKOFF_MAX_S: Final = 10.0
#: A publisher that served this long counts as stable: its death restarts the
#: backoff at ``BACKOFF_FIRST_S``.
STABLE_S: Final = 10.0
#: Seconds the supervisor waits for its publisher to stop before killing it
#: (the master's own stop timeout, 10 s by default, covers both).
STOP_TIMEOUT_S: Final = 8.0

_STOP_KEEP: Final = b"s"
_STOP_UNLINK: Final = b"u"


def exit_reason(returncode: int) -> str:
    """``"killed by SIGKILL"`` or ``"exited with status 1"``, from a Popen returncode."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def next_backoff(previous_s: float | None, served_s: float) -> float:
    """The pause before the next restart, given the last pause and how long it served."""
    if previous_s is None or served_s >= STABLE_S:
        return BACKOFF_FIRST_S
    return min(previous_s * 2, BACKOFF_MAX_S)


class _Child:
    """One publisher process and our end of its socket."""

    def __init__(self, python: str, spec: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "shmconf.integrations.process", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.channel = ours
        self.buffer = b""
        self.serving_since: float | None = None
        #: The last error the child replied (an initial config it rejected).
        self.error: str | None = None
        with contextlib.suppress(OSError):
            ours.sendall(orjson.dumps(spec) + b"\n")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def messages(self) -> list[dict[str, Any]] | None:
        """The complete lines the child sent; ``None`` at end of file (it exited)."""
        try:
            chunk = self.channel.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        for line in lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                message = orjson.loads(line)
                if isinstance(message, dict):
                    out.append(message)
        return out

    def send(self, command: bytes) -> None:
        with contextlib.suppress(OSError):
            self.channel.sendall(command)

    def wait_closed(self, deadline: float) -> bool:
        """Wait for the child's end of file; ``False`` on timeout."""
        while (remaining := deadline - time.monotonic()) > 0:
            if select.select([self.channel], [], [], remaining)[0] and self.messages() is None:
                return True
        return False

    def reap(self, grace_s: float) -> int:
        """Wait for the exit (killing it after ``grace_s``), close the socket; the returncode."""
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.channel.close()
        return self.proc.returncode


class Supervisor:
    """Runs the publisher of ``spec`` as a child and restarts it; see the module docstring.

    Args:
        master: the socket to the master (its spec line was read already).
        spec: the master's spec, as :class:`PublisherProcess` sends it.
        python: the interpreter for the publisher (default: this one).
    """

    def __init__(self, master: socket.socket, spec: dict[str, Any],
                 python: str | None = None) -> None:
        self.master = master
        self.spec = spec
        self.name = str(spec["name"])
        self.python = python or sys.executable
        runtime = spec.get("options", {}).get("runtime_dir")
        self.runtime_dir = None if runtime is None else str(runtime)
        self.child: _Child | None = None
        #: Restarts so far; the last exit's reason and time (ns since the epoch).
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_exit_ns: int | None = None
        self.state = "starting"
        self.since_ns = time.time_ns()
        self.backoff_s: float | None = None
        self._restart_at: float | None = None
        #: The master has its answer; the first publisher served (``ready``);
        #: the first publisher's answer was an error (nothing is restarted then).
        self._answered = False
        self._served_once = False
        self._fatal = False
        self._events: list[str] = []

    # -- the state file --------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return _paths.runtime_path(self.runtime_dir) / self.name / SUPERVISOR_FILE

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since_ns = state, time.time_ns()
        self._write_state()

    def state_record(self) -> dict[str, Any]:
        """What ``supervisor.json`` holds."""
        restart_in = None
        if self._restart_at is not None:
            restart_in = max(0.0, self._restart_at - time.monotonic())
        return {
            "pid": os.getpid(),
            "publisher_pid": self.child.pid if self.child is not None else None,
            "state": self.state,
            "since_ns": self.since_ns,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_ns": self.last_exit_ns,
            "backoff_s": self.backoff_s,
            "next_start_ns": None if restart_in is None
            else time.time_ns() + int(restart_in * 1e9),
            "updated_ns": time.time_ns(),
        }

    def _write_state(self) -> None:
        # Only once a publisher of ours served: a standby (USR2) must not
        # overwrite the running supervisor's file, and a first start that
        # fails must leave its state directory empty (its publisher removes it).
        if not self._served_once:
            return
        path = self.state_file
        if not path.parent.is_dir():
            return
        try:
            write_private(path, orjson.dumps(self.state_record()))
        except OSError as exc:
            log.warning("config %r: cannot write %s: %s", self.name, path, exc)

    def _remove_state(self) -> None:
        """Remove ``supervisor.json`` if it is still ours (another master's may replace it)."""
        path = self.state_file
        try:
            if orjson.loads(read_private(path)).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until told to stop; the exit status of the supervisor."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop,
                    signal.SIGHUP: self._on_hup}
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            self._start(standby=bool(self.spec.get("standby")))
            return self._loop(wake_r)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_r)
            os.close(wake_w)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only enqueue (the loop wakes through the wakeup fd)."""
        self._events.append("stop")

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only enqueue a reload for the publisher."""
        self._events.append("hup")

    def _start(self, *, standby: bool) -> None:
        spec = {**self.spec, "standby": standby, "unlink": False}
        self.child = _Child(self.python, spec)
        self._restart_at = None

    def _loop(self, wake_r: int) -> int:
        while True:
            timeout = None
            if self._restart_at is not None:
                timeout = max(0.0, self._restart_at - time.monotonic())
            watched: list[Any] = [self.master, wake_r]
            if self.child is not None:
                watched.append(self.child.channel)
            readable = select.select(watched, [], [], timeout)[0]
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 256)
            status = self._signalled()
            if status is None and self.master in readable:
                status = self._from_master()
            if status is None and self.child is not None and self.child.channel in readable:
                status = self._from_child(self.child)
            if status is not None:
                return status
            if self._restart_at is not None and time.monotonic() >= self._restart_at:
                # Standby: wait for the writer lock rather than fail, should
                # another publisher (a USR2 successor's) hold the name now.
                try:
                    self._start(standby=True)
                except OSError as exc:  # no memory, no process slot, the venv replaced
                    self._failed_start(exc)
                else:
                    self._set_state("restarting")

    def _signalled(self) -> int | None:
        """Carry out what the signal handlers queued; an exit status once stopped."""
        while self._events:
            event = self._events.pop(0)
            if event == "stop":
                return self._stop(unlink=bool(self.spec.get("unlink", True)))
            if event == "hup" and self.child is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.child.proc.send_signal(signal.SIGHUP)
        return None

    def _from_master(self) -> int | None:
        try:
            command = self.master.recv(1)
        except OSError:
            command = b""
        if command in (_STOP_KEEP, _STOP_UNLINK):
            return self._stop(unlink=command == _STOP_UNLINK)
        if not command:  # the master died: stop as its spec says
            return self._stop(unlink=bool(self.spec.get("unlink", True)))
        return None

    def _from_child(self, child: _Child) -> int | None:
        messages = child.messages()
        if messages is None:
            return self._child_exited(child)
        for message in messages:
            self._on_message(child, message)
        return None

    def _on_message(self, child: _Child, message: dict[str, Any]) -> None:
        if not self._answered:
            # The first reply is the master's: relay it as it came.
            self._answered = True
            self._fatal = "error" in message
            with contextlib.suppress(OSError):
                self.master.sendall(orjson.dumps(message) + b"\n")
        if "error" in message:
            child.error = str(message["error"])
        elif message.get("standby"):
            # A restarted publisher always stands by first: still restarting.
            self._set_state("restarting" if self.restarts else "standby")
        elif "ready" in message:
            child.serving_since = time.monotonic()
            self._served_once = True
            port = message.get("metrics_port")
            if port and self.spec.get("metrics"):
                # A restart serves on the same port, also when 0 picked it.
                self.spec["metrics"] = [self.spec["metrics"][0], int(port)]
            if self.restarts:
                log.info("config %r: publisher restarted as pid %d (restart %d)",
                         self.name, child.pid, self.restarts)
            self._set_state("serving")

    def _child_exited(self, child: _Child) -> int | None:
        """The publisher exited unasked: restart it later; an exit status to end with."""
        code = child.reap(STOP_TIMEOUT_S)
        self.child = None
        if not self._answered or self._fatal:
            # The initial start failed: the master reports it, nothing restarts.
            return 1
        served_s = 0.0 if child.serving_since is None else time.monotonic() - child.serving_since
        self.backoff_s = next_backoff(self.backoff_s, served_s)
        self.restarts += 1
        self.last_exit = exit_reason(code)
        if child.error:
            self.last_exit += f": {child.error}"
        self.last_exit_ns = time.time_ns()
        log.error("config %r: publisher pid %d %s; restarting it in %.1fs (restart %d); "
                  "workers keep the last published config", self.name, child.pid,
                  self.last_exit, self.backoff_s, self.restarts)
        self._restart_at = time.monotonic() + self.backoff_s
        self._set_state("backoff")
        return None

    def _failed_start(self, exc: OSError) -> None:
        """A restart could not even start a process: count it as an exit, and back off."""
        self.child = None
        self.backoff_s = next_backoff(self.backoff_s, 0.0)
        self.restarts += 1
        self.last_exit = f"could not start: {exc}"
        self.last_exit_ns = time.time_ns()
        log.error("config %r: the publisher could not be started (%s); trying again in "
                  "%.1fs (restart %d)", self.name, exc, self.backoff_s, self.restarts)
        self._restart_at = time.monotonic() + self.backoff_s
        self._set_state("backoff")

    def _stop(self, *, unlink: bool) -> int:
        child, self.child = self.child, None
        self._restart_at = None
        killed = False
        if child is not None:
            child.send(_STOP_UNLINK if unlink else _STOP_KEEP)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            if not child.wait_closed(deadline):
                log.warning("config %r: publisher pid %d did not stop in %gs; killing it",
                            self.name, child.pid, STOP_TIMEOUT_S)
                killed = True
            child.reap(max(0.0, deadline - time.monotonic()))
        if unlink and (killed or child is None) and self._answered:
            from shmconf.integrations.process import remove_leftovers

            remove_leftovers(self.name, self.runtime_dir)
        self._remove_state()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The supervisor: read the master's spec, then supervise its publisher."""
    from shmconf.integrations.process import channel_argument

    fd = channel_argument(argv, "shmconf.integrations.supervisor")
    if fd is None:
        return 2
    # Until the loop installs its handlers, a SIGHUP must not kill the supervisor.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    master = socket.socket(fileno=fd)
    try:
        buffer = b""
        while b"\n" not in buffer:
            chunk = master.recv(65536)
            if not chunk:
                return 1  # the master went away before saying anything
            buffer += chunk
        spec = orjson.loads(buffer.split(b"\n", 1)[0])
        if not isinstance(spec, dict):
            return 2
        return Supervisor(master, spec).run()
    finally:
        master.close()


if __name__ == "__main__":
    sys.exit(main())
