"""What every measure shares: the run's scratch space and its cleanup, configs, timing loops.

A :class:`Session` owns everything a run creates: a temporary directory
(``SHMCONF_RUNTIME_DIR`` and ``TMPDIR`` point into it), unique names for
configs and segments, child processes, and cleanup callbacks. Leaving it, by
a normal end, an exception, Ctrl-C or SIGTERM, runs the callbacks, kills the
children, unlinks every shared-memory object whose name carries the run's
tag and removes the directory, so nothing is left in ``/dev/shm`` or
``/tmp``.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("bench")

#: The repository root: workers run ``python -m bench.worker`` from here.
ROOT = Path(__file__).resolve().parent.parent
#: Where Linux shows POSIX shared memory.
SHM_DIR = "/dev/shm"
#: Results of quick runs and raw JSON go here (ignored by git).
OUT_DIR = ROOT / "bench" / "out"

KIB = 1024
MIB = 1024 * KIB


class BenchError(Exception):
    """A measure could not run for one alternative; the report shows the reason."""


# -- the session -----------------------------------------------------------------


class Session:
    """Scratch space, names, children and cleanup for one run. Use as a context manager."""

    def __init__(self, *, quick: bool = False, tag: str | None = None) -> None:
        sweep_stale()
        self.quick = quick
        self.tag = tag or f"bench-{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"shmconf-{self.tag}-"))
        self.runtime_dir = self.tmp / "run"
        self._names = itertools.count(1)
        self._cleanups: list[tuple[str, Callable[[], object]]] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._saved_env: dict[str, str | None] = {}
        self._saved_handlers: dict[int, Any] = {}
        self._saved_tempdir: str | None = None
        self.leftovers: list[str] = []

    # -- names and files -------------------------------------------------------

    def name(self, what: str) -> str:
        """A config or segment name unique to this run: ``bench-PID-WHAT-N``."""
        return f"{self.tag}-{what}-{next(self._names)}"

    def path(self, *parts: str) -> Path:
        """A path in the run's directory; its parent is created."""
        path = self.tmp.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- children and cleanup --------------------------------------------------

    def on_exit(self, what: str, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the session ends (last registered runs first)."""
        self._cleanups.append((what, callback))

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a child that is killed when the session ends, if still running.

        Children get their own session, so a Ctrl-C in the terminal reaches
        only this process, which then stops them in order.
        """
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("cwd", ROOT)
        proc: subprocess.Popen[Any] = subprocess.Popen(list(args), **kwargs)
        self._procs.append(proc)
        return proc

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def __enter__(self) -> Session:
        self.runtime_dir.mkdir(mode=0o700)
        for key, value in (("SHMCONF_RUNTIME_DIR", str(self.runtime_dir)),
                           ("TMPDIR", str(self.tmp))):
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        # multiprocessing's listener sockets and any other temp file land in self.tmp.
        self._saved_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.tmp)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._saved_handlers[sig] = signal.signal(sig, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Undo everything; safe to call twice."""
        # A second Ctrl-C (or a SIGTERM) must not cut the cleanup short.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while self._cleanups:
                what, callback = self._cleanups.pop()
                try:
                    callback()
                except Exception as exc:
                    log.warning("cleanup of %s failed: %s", what, exc)
            for proc in self._procs:
                stop_process(proc)
            self._procs.clear()
            self.leftovers = remove_shm(self.tag)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env.clear()
            tempfile.tempdir = self._saved_tempdir
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            previous.update(self._saved_handlers)
            self._saved_handlers.clear()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP: unwind like Ctrl-C, so every ``finally`` runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; reaps the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def shm_entries(tag: str) -> list[str]:
    """Shared-memory objects whose name carries ``tag``."""
    try:
        return sorted(e for e in os.listdir(SHM_DIR) if f"{tag}-" in e)
    except OSError:
        return []


def remove_shm(tag: str) -> list[str]:
    """Unlink what an alternative failed to remove; returns what had to be removed."""
    removed = []
    for entry in shm_entries(tag):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, entry))
            removed.append(entry)
    return removed


#: What a run's shared-memory objects and temporary directory are called; PID is its pid.
_STALE_SHM = re.compile(r"^(?:shmconf\.|sm_)?bench-(\d+)-")
_STALE_TMP = re.compile(r"^shmconf-bench-(\d+)-")


def sweep_stale() -> list[str]:
    """Remove what a run killed with SIGKILL (no cleanup possible) left behind.

    Only objects named after a benchmark run whose process no longer exists.
    """
    removed = []
    for directory, pattern in ((SHM_DIR, _STALE_SHM), (tempfile.gettempdir(), _STALE_TMP)):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry)
            if match is None or os.path.exists(f"/proc/{match.group(1)}"):
                continue
            path = os.path.join(directory, entry)
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(path)
    if removed:
        log.warning("removed leftovers of killed benchmark runs: %s", ", ".join(removed))
    return removed


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(1)


# -- configs -----------------------------------------------------------------------


def make_config(size: int, version: int = 1) -> dict[str, Any]:
    """A realistic config of about ``size`` bytes of JSON (an upstream list grows it)."""
    config: dict[str, Any] = {
        "version": version,
        "service": {"name": "checkout", "env": "prod", "region": "eu-west-1", "debug": False,
                    "log_level": "INFO", "workers": 8, "timeout_ms": 2500},
        "database": {"host": "db.internal", "port": 5432, "user": "app",
                     "password": "not-a-real-secret",
                     "pool": {"min": 2, "max": 20, "timeout_ms": 1000}},
        "features": {f"feature_{i:03d}": i % 3 == 0 for i in range(24)},
        "upstreams": [],
    }
    base = len(orjson.dumps(config))
    per_item = len(orjson.dumps(_upstream(0))) + 1
    count = max(0, (size - base) // per_item)
    config["upstreams"] = [_upstream(i) for i in range(count)]
    return config


def _upstream(i: int) -> dict[str, Any]:
    return {"name": f"upstream-{i:05d}", "host": f"10.{i // 256 % 256}.{i % 256}.17",
            "port": 8000 + i % 1000, "weight": i % 10 + 1, "tls": i % 2 == 0,
            "tags": ["blue", f"zone-{'abc'[i % 3]}"], "timeout_ms": 500}


def with_every_container_changed(config: dict[str, Any], version: int) -> dict[str, Any]:
    """``config`` at ``version`` with a value changed in every dict and list of it.

    The worst case for a reader that takes unchanged containers from the
    snapshot it replaces: nothing can be taken.
    """
    def churn(value: Any) -> Any:
        if isinstance(value, dict):
            changed = {k: churn(v) for k, v in value.items()}
            changed["rev"] = version
            return changed
        if isinstance(value, list):
            return [*(churn(v) for v in value), version]
        return value

    return churn(with_version(config, version))  # type: ignore[no-any-return]


def with_version(config: dict[str, Any], version: int) -> dict[str, Any]:
    """A shallow copy of ``config`` that differs in its ``version`` key."""
    copy = dict(config)
    copy["version"] = version
    return copy


def settings_model() -> type[Any]:
    """The pydantic model every generated config validates against (imported lazily)."""
    from pydantic import BaseModel, SecretStr

    class Service(BaseModel):
        name: str
        env: str
        region: str
        debug: bool
        log_level: str
        workers: int
        timeout_ms: int

    class Pool(BaseModel):
        min: int
        max: int
        timeout_ms: int

    class Database(BaseModel):
        host: str
        port: int
        user: str
        password: SecretStr
        pool: Pool

    class Upstream(BaseModel):
        name: str
        host: str
        port: int
        weight: int
        tls: bool
        tags: list[str]
        timeout_ms: int

    class Settings(BaseModel):
        version: int
        service: Service
        database: Database
        features: dict[str, bool]
        upstreams: list[Upstream]

    return Settings


def size_label(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MB"
    return f"{size // KIB} KB"


# -- timing loops --------------------------------------------------------------------

_LOOPS = '''
def make(_pc, _repeat{params}):
    def batch(n):
        """Run the statement n times; nanoseconds for all of them (loop included)."""
        it = _repeat(None, n)
        t0 = _pc()
        for _ in it:
            {stmt}
        return _pc() - t0

    def sample(buf, n_max, deadline_ns):
        """Time single runs into buf until n_max or the deadline; (count, exceptions)."""
        i = 0
        errors = 0
        while i < n_max:
            t0 = _pc()
            try:
                {stmt}
            except Exception:
                errors += 1
            t1 = _pc()
            buf[i] = t1 - t0
            i += 1
            if not i & 63 and t1 > deadline_ns:
                break
        return i, errors

    return batch, sample
'''


def compile_loops(
    stmt: str, namespace: dict[str, Any]
) -> tuple[Callable[[int], int], Callable[[array.array[int], int, int], tuple[int, int]]]:
    """``batch`` and ``sample`` functions with ``stmt`` inlined, as ``timeit`` does.

    The namespace becomes default arguments of ``make``, hence closure
    variables: names in ``stmt`` cost the same for every alternative.
    """
    params = "".join(f", {key}" for key in namespace)
    source = _LOOPS.format(params=params, stmt=stmt)
    code = compile(source, f"<bench loop: {stmt}>", "exec")
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["make"](time.perf_counter_ns, itertools.repeat, *namespace.values())  # type: ignore[no-any-return]


def sample_buffer(n: int) -> array.array[int]:
    return array.array("q", bytes(8 * n))


def timer_overhead_ns(samples: int = 20_000) -> float:
    """Median cost of an empty timed section (two perf_counter_ns calls and the loop)."""
    _, sample = compile_loops("pass", {})
    buf = sample_buffer(samples)
    n, _ = sample(buf, samples, time.perf_counter_ns() + 10**9)
    return percentiles(buf, n, [50])[0]


def percentiles(buf: Any, n: int, qs: Sequence[float]) -> list[float]:
    """Percentiles of the first ``n`` values of ``buf`` (numpy when available)."""
    if n == 0:
        return [float("nan")] * len(qs)
    try:
        import numpy as np
    except ImportError:
        values = sorted(buf[:n])
        return [float(values[min(n - 1, int(q / 100 * n))]) for q in qs]
    arr = np.frombuffer(buf, dtype=np.int64, count=n) if isinstance(buf, array.array) else (
        np.asarray(buf[:n], dtype=np.float64))
    return [float(v) for v in np.percentile(arr, list(qs))]


def latency_stats(buf: array.array[int], n: int, overhead_ns: float) -> dict[str, float]:
    """p50/p99/p99.9/max of single-read samples, timer overhead subtracted (floored at 0)."""
    p50, p99, p999, top = percentiles(buf, n, [50, 99, 99.9, 100])
    return {
        "p50_ns": max(0.0, p50 - overhead_ns),
        "p99_ns": max(0.0, p99 - overhead_ns),
        "p999_ns": max(0.0, p999 - overhead_ns),
        "max_ns": max(0.0, top - overhead_ns),
        "samples": n,
        "over_100us": _count_over(buf, n, 100_000),
        "over_1ms": _count_over(buf, n, 1_000_000),
    }


def _count_over(buf: array.array[int], n: int, limit: int) -> int:
    try:
        import numpy as np
    except ImportError:
        return sum(1 for i in range(n) if buf[i] > limit)
    return int((np.frombuffer(buf, dtype=np.int64, count=n) > limit).sum())


def median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if v == v)  # drop NaN
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_dict(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key by key median of several repetitions' results."""
    keys = rows[0].keys() if rows else ()
    return {k: median([float(r[k]) for r in rows]) for k in keys}


# -- /proc -------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_run_ns(pid: int) -> int:
    """Nanoseconds on CPU summed over the threads of ``pid`` (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def proc_memory(pid: int | str = "self") -> dict[str, int]:
    """Rss, Pss and USS (private clean + dirty) in bytes, from smaps_rollup."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * KIB
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


def proc_counts(pid: int) -> dict[str, int]:
    """Open file descriptors, memory mappings (all, and of /dev/shm) and RSS of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    maps = shm_maps = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            maps += 1
            shm_maps += f" {SHM_DIR}/" in line
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * KIB
    return {"fds": fds, "maps": maps, "shm_maps": shm_maps, "rss": rss}


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...``; ``t[0]`` is then the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def eprint(*args: object) -> None:
    """Progress lines go to stderr; stdout stays for the summary."""
    print(*args, file=sys.stderr, flush=True)
