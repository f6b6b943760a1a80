"""Metrics kept in each process and written to the samples at most once a second."""
from __future__ import annotations

import collections
import os
import time
import warnings
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from app import metrics
from tests.helpers import DEV_AUTH, definition

TWO_NODES = {"definition": definition("root>greet", greet={
    "type": "log", "payload": {"message": "hello"}})}


def successes() -> float:
    return REGISTRY.get_sample_value("runner_runs_total", {"status": "success"}) or 0


def test_many_runs_write_each_sample_at_most_once_a_second(client, monkeypatch):
    """30 runs: each sample is written at most once a second (the first run's at once)
    and at the scrape, not by every run."""
    value_class = type(metrics.CU._value)  # the samples' class (files under gunicorn)
    writes = collections.Counter()

    def counting(write):
        def wrapper(self, *args, **kwargs):
            writes[id(self)] += 1
            return write(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(value_class, "inc", counting(value_class.inc))
    monkeypatch.setattr(value_class, "set", counting(value_class.set))
    before = successes()
    started = time.monotonic()
    for _ in range(30):
        assert client.post("/v1/runs/sync", json=TWO_NODES, headers=DEV_AUTH).status_code == 200
    elapsed = time.monotonic() - started
    assert client.get("/metrics").status_code == 200  # writes what is left
    assert successes() == before + 30
    assert writes and max(writes.values()) <= 2 + elapsed / metrics.FLUSH_INTERVAL_S


def written(metric, *labels: str) -> float:
    """The sample as written, without writing what is pending (as reading REGISTRY does)."""
    return (metric.labels(*labels) if labels else metric)._value.get()


def test_counts_are_written_within_a_second_without_a_scrape(client):
    metrics.flush()
    before = written(metrics.RUNS, "success")
    client.post("/v1/runs/sync", json=TWO_NODES, headers=DEV_AUTH)
    client.post("/v1/runs/sync", json=TWO_NODES, headers=DEV_AUTH)
    deadline = time.monotonic() + 2
    while written(metrics.RUNS, "success") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert written(metrics.RUNS, "success") == before + 2


def test_a_forked_child_writes_its_own_counts():
    """A child of a process whose flusher runs (gunicorn forks its workers) starts its
    own, and does not write its parent's counts again."""
    metrics.count(metrics.BLOCKED)
    metrics.flush()
    before = written(metrics.BLOCKED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:
        code = 2
        try:
            metrics.count(metrics.BLOCKED)
            deadline = time.monotonic() + 2
            while written(metrics.BLOCKED) == before and time.monotonic() < deadline:
                time.sleep(0.02)
            code = 0 if written(metrics.BLOCKED) == before + 1 else 1
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def test_durations_are_counted_as_observe_counts_them():
    """A flush adds a second's durations to the histogram's buckets and sum at once."""
    from prometheus_client import CollectorRegistry, Histogram

    mirror = Histogram("mirror_seconds", "", registry=CollectorRegistry(),
                       buckets=metrics.RUN_SECONDS._upper_bounds[:-1])
    metrics.flush()

    def buckets(histogram):
        return [sample.value for family in histogram.collect() for sample in family.samples
                if not sample.name.endswith("_created")]

    before = buckets(metrics.RUN_SECONDS)
    for ms in (0, 1, 5, 6, 10, 250, 999, 1000, 59_999, 60_000, 60_001, 3_600_000):
        metrics.record_run(SimpleNamespace(status="success", duration_ms=ms, total_cu=0,
                                           nodes=[]))
        mirror.observe(ms / 1000)
    metrics.flush()
    added = [after - old for after, old in zip(buckets(metrics.RUN_SECONDS), before, strict=True)]
    assert added == pytest.approx(buckets(mirror))
