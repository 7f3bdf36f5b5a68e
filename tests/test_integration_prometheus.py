"""Prometheus metrics: the publisher process over HTTP, by name, in process."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import shmconf
from shmconf.integrations.gunicorn import ShmconfHooks
from shmconf.integrations.prometheus import ShmconfCollector
from tests.apps.servers import nothing_left, serving, write_doc_files
from tests.helpers import REPO, atomic_save, idle_reader_process, wait_until

GOOD = "greeting: hello\ndatabase:\n  host: db1\n  password: pw-s3cret\n"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as ``{(name, sorted labels without "name"): value}``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "name"))
            out[(sample.name, labels)] = sample.value
    return out


def scrape(port: int) -> Samples:
    with httpx.Client(timeout=5) as client:
        response = client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return parse(response.text)


@pytest.fixture
def idle_reader(name: str) -> Iterator[subprocess.Popen[str]]:
    """A worker that attaches and then reads only when told: it falls behind."""
    with idle_reader_process(name) as proc:
        yield proc


@pytest.fixture
def hooks(tmp_path: Path, name: str) -> Iterator[ShmconfHooks]:
    """gunicorn's hooks, driven by the test as gunicorn's master would."""
    source = tmp_path / "app.yaml"
    atomic_save(source, GOOD, prefix="")
    hooks = ShmconfHooks(name, sources=[source], model="tests.models:Settings",
                         metrics_port=0, debounce=0.02)
    hooks.on_starting(None)
    try:
        yield hooks
    finally:
        hooks.on_exit(None)


def test_publisher_process_serves_publisher_and_reader_metrics(
    tmp_path: Path, name: str, hooks: ShmconfHooks, idle_reader: subprocess.Popen[str]
) -> None:
    process = hooks.publisher
    assert process is not None
    assert process.metrics_port
    source = tmp_path / "app.yaml"
    reader = shmconf.attach(name)
    try:
        atomic_save(source, GOOD.replace("db1", "db2"), prefix="")
        wait_until(lambda: reader.get()["database"]["host"] == "db2", 10, 0.01, "generation 2")
        atomic_save(source, GOOD.replace("greeting: hello", "workers: 0\ngreeting: hello"),
                    prefix="")
        wait_until(
            lambda: scrape(process.metrics_port or 0)[
                ("shmconf_rejections_total", (("reason", "validation"),))] == 1,
            10, 0.02, "the rejection to be counted")
        metrics = scrape(process.metrics_port)
    finally:
        reader.close()

    assert metrics[("shmconf_generation", ())] == 2
    assert metrics[("shmconf_publisher_up", ())] == 1
    assert metrics[("shmconf_publishes_total", ())] == 2
    assert metrics[("shmconf_rejections_total", (("reason", "source"),))] == 0
    assert metrics[("shmconf_last_publish_timestamp_seconds", ())] > 1e9
    assert metrics[("shmconf_publish_duration_seconds_count", ())] == 2
    assert metrics[("shmconf_publish_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert 0 < metrics[("shmconf_publish_duration_seconds_sum", ())] < 1
    # This process read generation 2; the idle reader still holds 1.
    idle = (("pid", str(idle_reader.pid)),)
    ours = (("pid", str(os.getpid())),)
    assert metrics[("shmconf_readers", ())] == 2
    assert metrics[("shmconf_reader_generation", ours)] == 2
    assert metrics[("shmconf_reader_lag", ours)] == 0
    assert metrics[("shmconf_reader_generation", idle)] == 1
    assert metrics[("shmconf_reader_lag", idle)] == 1


def test_collector_by_name_reads_segment_table_and_status(
    tmp_path: Path, name: str, hooks: ShmconfHooks, idle_reader: subprocess.Popen[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = write_doc_files(REPO / "docs" / "metrics.md", tmp_path / "doc")
    monkeypatch.setenv("CONFIG_NAME", name)
    module = runpy.run_path(str(files["metrics_app.py"]))
    with serving(module["application"]) as client:
        metrics = parse(client.get("/metrics").text)
    assert metrics[("shmconf_generation", ())] == 1
    assert metrics[("shmconf_publisher_up", ())] == 1
    assert metrics[("shmconf_publishes_total", ())] == 1
    assert metrics[("shmconf_rejections_total", (("reason", "validation"),))] == 0
    assert metrics[("shmconf_readers", ())] == 1
    assert metrics[("shmconf_reader_lag", (("pid", str(idle_reader.pid)),))] == 0


def test_collector_for_a_name_with_nothing_published(name: str) -> None:
    registry = CollectorRegistry()
    registry.register(ShmconfCollector(name))
    metrics = parse(generate_latest(registry).decode())
    assert metrics == {("shmconf_publisher_up", ()): 0}


def test_in_process_publisher_histogram_counts_every_publish(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        registry = CollectorRegistry()
        registry.register(ShmconfCollector(publisher=publisher, buckets_s=(0.5, 10.0)))
        for n in range(3):
            publisher.publish({"n": n})
        publisher.publish({"n": 2})  # unchanged: not a publish
        metrics = parse(generate_latest(registry).decode())
        publisher.unlink()
    assert metrics[("shmconf_publishes_total", ())] == 3
    assert metrics[("shmconf_publish_duration_seconds_bucket", (("le", "0.5"),))] == 3
    assert metrics[("shmconf_publish_duration_seconds_count", ())] == 3
    assert metrics[("shmconf_unchanged_total", ())] == 1
    assert metrics[("shmconf_readers", ())] == 0


def test_hooks_attach_a_worker_in_post_fork(name: str, hooks: ShmconfHooks) -> None:
    try:
        hooks.post_fork(None, None)
        assert shmconf.current().greeting == "hello"
        assert shmconf.current_reader() is hooks.reader()
    finally:
        hooks.worker_exit(None, None)
    with pytest.raises(shmconf.NotAttachedError):
        shmconf.current()


def test_missing_prometheus_client_names_the_install(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    with pytest.raises(ImportError, match=r"pip install 'shmconf\[prometheus\]'"):
        ShmconfCollector(name)


def test_everything_is_removed_after_the_hooks_exit(tmp_path: Path, name: str) -> None:
    source = tmp_path / "app.yaml"
    atomic_save(source, GOOD, prefix="")
    hooks = ShmconfHooks(name, sources=[source], metrics_port=0)
    hooks.on_starting(None)
    port: Any = hooks.publisher.metrics_port if hooks.publisher else None
    assert scrape(port)[("shmconf_generation", ())] == 1
    hooks.on_exit(None)
    assert nothing_left(name)
    with pytest.raises(httpx.ConnectError):
        scrape(port)
