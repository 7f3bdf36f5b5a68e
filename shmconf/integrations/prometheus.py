"""Prometheus metrics for a published config: a custom collector.

Needs ``prometheus_client`` (``pip install 'shmconf[prometheus]'``).

Two ways to collect, both at scrape time only; workers do nothing per request:

* **In the publisher's process**: ``ShmconfCollector(publisher=pub)`` reads
  ``pub.stats`` and times every publish through ``pub.on_publish``, so it
  also exports the publish-duration histogram. ``serve_publisher_metrics``
  (and ``ShmconfHooks(metrics_port=...)`` for gunicorn) serve it.
* **Anywhere on the host**: ``ShmconfCollector("myapp")`` reads what
  ``shmconf status`` reads: the segment's header and reader table, and the
  running publisher's status file (publishes, rejections).

Both export the readers: the generation each live worker holds and how many
generations it is behind, read from the reader table that workers update
only when they adopt a new generation; and the publisher's health: its last
heartbeat (with ``shmconf_publisher_up`` 0, when it died), the restarts by
its supervisor (publishers that an integration started), and whether each
source (and the file watcher) is ok; and the rollout (docs/rollout.md): whether
one runs, its candidate and step, the canaries' and the other workers' requests
and failures as the publisher judges them, and how the last one ended.

============================================== ========= ==========================
metric                                         type      labels
============================================== ========= ==========================
shmconf_generation                             gauge     name
shmconf_publisher_up                           gauge     name
shmconf_publisher_heartbeat_timestamp_seconds  gauge     name
shmconf_publisher_restarts_total               counter   name
shmconf_publisher_last_exit_timestamp_seconds  gauge     name
shmconf_source_up                              gauge     name, source
shmconf_publishes_total                        counter   name
shmconf_unchanged_total                        counter   name
shmconf_rejections_total                       counter   name, reason
shmconf_last_publish_timestamp_seconds         gauge     name
shmconf_publish_duration_seconds               histogram name (publisher process only)
shmconf_readers                                gauge     name
shmconf_reader_generation                      gauge     name, pid
shmconf_reader_lag                             gauge     name, pid
shmconf_rollout_running                        gauge     name
shmconf_rollout_candidate_generation           gauge     name (while one runs)
shmconf_rollout_step                           gauge     name (while one runs)
shmconf_rollout_steps                          gauge     name (while one runs)
shmconf_rollout_canaries                       gauge     name (while one runs)
shmconf_rollout_bake_remaining_seconds         gauge     name (while one runs)
shmconf_rollout_requests                       gauge     name, group (while one runs)
shmconf_rollout_failures                       gauge     name, group (while one runs)
shmconf_rollout_last_outcome                   gauge     name, outcome
shmconf_rollout_last_end_timestamp_seconds     gauge     name
============================================== ========= ==========================
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from shmconf.errors import SegmentNotFoundError
from shmconf.protocol import layout as L
from shmconf.protocol.layout import validate_name
from shmconf.status import plausible_readers, read_readers

if TYPE_CHECKING:
    from shmconf.publisher import Publisher
    from shmconf.status import ReaderStatus

log = logging.getLogger("shmconf.integrations.prometheus")

#: Publish durations are sub-millisecond for small configs and tens of
#: milliseconds for megabytes (the bars in DESIGN: 1 ms / 50 ms).
DEFAULT_BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
#: Rejection reasons always exported (as 0 until they happen), so rate() works.
REJECTION_REASONS: Final = ("source", "validation", "size", "io", "error")
#: Readers shown one series each (those furthest behind); all are counted.
MAX_READER_SERIES: Final = 256
#: How a rollout ends (``Publisher.last_rollout["outcome"]``), as the
#: ``outcome`` label of ``shmconf_rollout_last_outcome`` spells it.
ROLLOUT_OUTCOMES: Final = {"promoted": "promoted", "rolled back": "rolled_back",
                           "replaced": "replaced"}

_INSTALL_HINT: Final = (
    "shmconf.integrations.prometheus needs prometheus_client: "
    "pip install 'shmconf[prometheus]' (or pip install prometheus-client)"
)


def _client() -> Any:
    """``prometheus_client.core``, imported only when metrics are used."""
    try:
        import prometheus_client.core
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return prometheus_client.core


class _Histogram:
    """Cumulative bucket counts, fed by the publishing thread, read by scrapes."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
            self.total += seconds

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            counts, total = list(self.counts), self.total
        buckets, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets, total


class ShmconfCollector:
    """A ``prometheus_client`` collector for one config.

    Args:
        name: the config's name (collect as ``shmconf status`` does).
        publisher: a publisher in this process (collect from its stats, and
            time its publishes); its name is used.
        buckets_s: upper bounds of the publish-duration histogram, in seconds.

    Register it with ``prometheus_client.REGISTRY.register(collector)`` or a
    registry of your own.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        publisher: Publisher | None = None,
        buckets_s: Sequence[float] = DEFAULT_BUCKETS_S,
        trusted_owner: int | str | None = None,
    ) -> None:
        from shmconf.reader import _trusted

        self._trusted = _trusted(trusted_owner) if trusted_owner is not None else None
        self._core = _client()
        if publisher is None and name is None:
            raise TypeError("ShmconfCollector needs a config name or a publisher")
        self.name = publisher.name if publisher is not None else validate_name(str(name))
        self.publisher = publisher
        self._durations = _Histogram(buckets_s)
        if publisher is not None:
            publisher.on_publish(self._observe)

    def _observe(self, generation: int, meta: Mapping[str, Any]) -> None:
        # on_publish runs after stats.record_publish, so this is the publish
        # that just finished.
        if self.publisher is not None:
            self._durations.observe(self.publisher.stats.last_duration_s)

    def describe(self) -> list[Any]:
        """The metric families without samples: registering never touches the segment."""
        return list(self._families().values())

    def collect(self) -> Iterator[Any]:
        """Read the state now and yield the metric families."""
        families = self._families()
        try:
            if self.publisher is not None:
                self._from_publisher(families)
            else:
                self._from_status(families)
        except SegmentNotFoundError:
            families["publisher_up"].add_metric([self.name], 0.0)
        except (OSError, ValueError) as exc:
            # A scrape must not fail because the segment is being replaced.
            log.warning("config %r: cannot collect metrics: %s", self.name, exc)
        yield from families.values()

    def _families(self) -> dict[str, Any]:
        core = self._core
        name_label = ["name"]
        return {
            "generation": core.GaugeMetricFamily(
                "shmconf_generation", "Published config generation.", labels=name_label),
            "publisher_up": core.GaugeMetricFamily(
                "shmconf_publisher_up", "1 while a publisher runs and heartbeats.",
                labels=name_label),
            "publishes": core.CounterMetricFamily(
                "shmconf_publishes", "New generations published by the running publisher.",
                labels=name_label),
            "unchanged": core.CounterMetricFamily(
                "shmconf_unchanged", "Reloads whose content was unchanged (nothing published).",
                labels=name_label),
            "rejections": core.CounterMetricFamily(
                "shmconf_rejections", "Configs rejected, by reason; the last good one stays.",
                labels=["name", "reason"]),
            "heartbeat": core.GaugeMetricFamily(
                "shmconf_publisher_heartbeat_timestamp_seconds",
                "Unix time of the publisher's last heartbeat (when it died, if it is down).",
                labels=name_label),
            "restarts": core.CounterMetricFamily(
                "shmconf_publisher_restarts",
                "Publishers restarted by the supervisor after they died.", labels=name_label),
            "last_exit": core.GaugeMetricFamily(
                "shmconf_publisher_last_exit_timestamp_seconds",
                "Unix time the supervised publisher last died.", labels=name_label),
            "source_up": core.GaugeMetricFamily(
                "shmconf_source_up",
                "1 while a source (or the file watcher) is ok; 0 while it fails or retries.",
                labels=["name", "source"]),
            "last_publish": core.GaugeMetricFamily(
                "shmconf_last_publish_timestamp_seconds",
                "Unix time of the last publish.", labels=name_label),
            "duration": core.HistogramMetricFamily(
                "shmconf_publish_duration_seconds",
                "Time to validate, serialize and write one generation.", labels=name_label),
            "readers": core.GaugeMetricFamily(
                "shmconf_readers", "Live reader processes attached.", labels=name_label),
            "reader_generation": core.GaugeMetricFamily(
                "shmconf_reader_generation", "Generation held by each live reader process.",
                labels=["name", "pid"]),
            "reader_lag": core.GaugeMetricFamily(
                "shmconf_reader_lag",
                "Generations a live reader process is behind the published one.",
                labels=["name", "pid"]),
            **self._rollout_families(),
        }

    def _rollout_families(self) -> dict[str, Any]:
        core = self._core
        name_label = ["name"]
        return {
            "rollout_running": core.GaugeMetricFamily(
                "shmconf_rollout_running",
                "1 while a rollout's candidate is out to canary workers.", labels=name_label),
            "rollout_candidate": core.GaugeMetricFamily(
                "shmconf_rollout_candidate_generation",
                "The running rollout's candidate generation (the canaries').", labels=name_label),
            "rollout_step": core.GaugeMetricFamily(
                "shmconf_rollout_step", "The running rollout's step, from 1.", labels=name_label),
            "rollout_steps": core.GaugeMetricFamily(
                "shmconf_rollout_steps", "Steps of the running rollout (the canaries' is the "
                "first; promotion follows the last).", labels=name_label),
            "rollout_canaries": core.GaugeMetricFamily(
                "shmconf_rollout_canaries", "Live canary workers of the running rollout.",
                labels=name_label),
            "rollout_bake": core.GaugeMetricFamily(
                "shmconf_rollout_bake_remaining_seconds",
                "Seconds until the running rollout's step is judged (0: baked).",
                labels=name_label),
            "rollout_requests": core.GaugeMetricFamily(
                "shmconf_rollout_requests",
                "Requests in the running rollout: canary workers on the candidate, the "
                "others (stable) on the stable generation.", labels=["name", "group"]),
            "rollout_failures": core.GaugeMetricFamily(
                "shmconf_rollout_failures",
                "Failed requests in the running rollout, canary and stable workers.",
                labels=["name", "group"]),
            "rollout_last_outcome": core.GaugeMetricFamily(
                "shmconf_rollout_last_outcome",
                "1 for how the last rollout ended (promoted, rolled_back, replaced), 0 for "
                "the others.", labels=["name", "outcome"]),
            "rollout_last_end": core.GaugeMetricFamily(
                "shmconf_rollout_last_end_timestamp_seconds",
                "Unix time the last rollout ended.", labels=name_label),
        }

    def _from_publisher(self, families: dict[str, Any]) -> None:
        publisher = self.publisher
        assert publisher is not None
        stats = publisher.stats
        generation = publisher.generation
        label = [self.name]
        families["generation"].add_metric(label, float(generation))
        families["publisher_up"].add_metric(label, 1.0)
        families["publishes"].add_metric(label, float(stats.publishes))
        families["unchanged"].add_metric(label, float(stats.unchanged))
        self._rejections(families, dict(stats.rejections))
        families["last_publish"].add_metric(label, stats.last_publish_ns / 1e9)
        buckets, total = self._durations.snapshot()
        families["duration"].add_metric(label, buckets, total)
        anchor = publisher.writer.anchor
        families["heartbeat"].add_metric(label, int(anchor.words[L.A_HEARTBEAT_NS]) / 1e9)
        self._health(families)
        run = publisher.rollout
        readers, _, _ = read_readers(self.name)
        # Canaries hold the candidate, above the published generation.
        readers = plausible_readers(readers, max(generation, run.candidate if run else 0))
        self._readers(families, generation, [(r.pid, r.generation) for r in readers if r.alive])
        self._rollout(families, run.to_json() if run is not None else None,
                      publisher.last_rollout)

    def _from_status(self, families: dict[str, Any]) -> None:
        from shmconf.status import collect

        status = collect(self.name, reclaim=False, trusted_uids=self._trusted)
        service = status.service
        label = [self.name]
        families["generation"].add_metric(label, float(status.generation))
        families["publisher_up"].add_metric(label, 1.0 if status.publisher_alive else 0.0)
        families["last_publish"].add_metric(label, status.published_ns / 1e9)
        families["heartbeat"].add_metric(label, status.heartbeat_ns / 1e9)
        # A dead publisher's status file is what it knew when it died: no source_up.
        self._health(families, service if status.publisher_alive else {}, status.supervisor)
        if service:
            families["publishes"].add_metric(label, float(service.get("publishes", 0)))
            self._rejections(families, dict(service.get("rejections") or {}))
        readers: list[ReaderStatus] = [r for r in status.readers if r.alive]
        self._readers(families, status.generation, [(r.pid, r.generation) for r in readers])
        self._rollout(families, status.rollout, status.last_rollout)

    def _rollout(self, families: dict[str, Any], rollout: Mapping[str, Any] | None,
                 last: Mapping[str, Any] | None) -> None:
        """The running rollout (``RolloutRun.to_json()`` or ``Status.rollout``) and the last one."""
        label = [self.name]
        families["rollout_running"].add_metric(label, 0.0 if rollout is None else 1.0)
        if rollout is not None:
            families["rollout_candidate"].add_metric(label, float(rollout["candidate"]))
            families["rollout_canaries"].add_metric(label, float(len(rollout["canaries"] or ())))
            # The rest is the publisher's view: absent until it reported one.
            for key, family in (("step", "rollout_step"), ("steps", "rollout_steps"),
                                ("bake_left_s", "rollout_bake")):
                if isinstance(rollout.get(key), (int, float)):
                    families[family].add_metric(label, float(rollout[key]))
            for group in ("canary", "stable"):
                health = rollout.get(f"{group}_health")
                if isinstance(health, Mapping):
                    families["rollout_requests"].add_metric(
                        [self.name, group], float(health.get("requests") or 0))
                    families["rollout_failures"].add_metric(
                        [self.name, group], float(health.get("failures") or 0))
        if last:
            ended = ROLLOUT_OUTCOMES.get(str(last.get("outcome")))
            for outcome in ROLLOUT_OUTCOMES.values():
                families["rollout_last_outcome"].add_metric(
                    [self.name, outcome], 1.0 if outcome == ended else 0.0)
            if last.get("ended_ns"):
                families["rollout_last_end"].add_metric(label, int(last["ended_ns"]) / 1e9)

    def _health(self, families: dict[str, Any], service: dict[str, Any] | None = None,
                supervisor: dict[str, Any] | None = None) -> None:
        """Restarts by the supervisor, and each source's health (from ``status.json``)."""
        from shmconf.status import read_service_status, read_supervisor_status

        label = [self.name]
        supervisor = read_supervisor_status(self.name) if supervisor is None else supervisor
        if supervisor:
            families["restarts"].add_metric(label, float(supervisor.get("restarts") or 0))
            if supervisor.get("last_exit_ns"):
                families["last_exit"].add_metric(label, supervisor["last_exit_ns"] / 1e9)
        service = read_service_status(self.name) if service is None else service
        for health in service.get("source_health") or []:
            up = 1.0 if health.get("state") == "ok" else 0.0
            families["source_up"].add_metric([self.name, str(health.get("source"))], up)

    def _rejections(self, families: dict[str, Any], counts: dict[str, int]) -> None:
        for reason in sorted({*REJECTION_REASONS, *counts}):
            families["rejections"].add_metric([self.name, reason], float(counts.get(reason, 0)))

    def _readers(
        self, families: dict[str, Any], published: int, held: list[tuple[int, int]]
    ) -> None:
        families["readers"].add_metric([self.name], float(len(held)))
        # Per-reader series for the readers furthest behind, at most so many: a
        # scrape stays small whatever the table holds (its entries are written
        # by readers, which a hostile group member can imitate).
        held = sorted(held, key=lambda entry: entry[1])[:MAX_READER_SERIES]
        for pid, generation in held:
            labels = [self.name, str(pid)]
            families["reader_generation"].add_metric(labels, float(generation))
            families["reader_lag"].add_metric(labels, float(max(0, published - generation)))


def serve_publisher_metrics(publisher: Publisher, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` for ``publisher`` on a thread; returns the HTTP server.

    A registry of its own, so only shmconf's metrics are served (no
    process or platform collectors of whoever embeds the publisher).
    """
    core = _client()
    import prometheus_client

    registry = core.CollectorRegistry(auto_describe=False)
    registry.register(ShmconfCollector(publisher=publisher))
    server, _thread = prometheus_client.start_http_server(port, addr, registry=registry)
    log.info("config %r: metrics on http://%s:%d/metrics", publisher.name, addr,
             server.server_port)
    return server
