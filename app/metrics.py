"""Prometheus metrics, correct across gunicorn workers.

In production ``PROMETHEUS_MULTIPROC_DIR`` is set by gunicorn.conf.py before
any worker starts: each worker writes its samples to files there, and a scrape
adds them up in a registry built for that scrape. Without it (tests, the Flask
CLI), the process's own default registry is served.
"""
from __future__ import annotations

import collections
import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # The CLI may run before gunicorn has made the directory; values live in files there.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

RUNS = Counter("runner_runs_total", "Finished runs by status.", ["status"])
RUN_SECONDS = Histogram("runner_run_duration_seconds", "Wall time of runs.",
                        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
NODES = Counter("runner_node_executions_total", "Nodes by type and final status.",
                ["type", "status"])
CU = Counter("runner_compute_units_charged_total", "Compute units charged.")
BLOCKED = Counter("runner_outbound_blocked_total",
                  "Node attempts refused with BLOCKED_DESTINATION.")
REFUSED = Counter("runner_requests_refused_total",
                  "Requests refused (400, 401, 402, 403, 413, 415, 429), by HTTP status.",
                  ["status"])
IN_PROGRESS = Gauge("runner_runs_in_progress", "Runs executing now.",
                    multiprocess_mode="livesum")


def record_run(outcome) -> None:
    """Count one finished run (``state.Outcome``); a loop's body instances count as nodes."""
    RUNS.labels(outcome.status).inc()
    RUN_SECONDS.observe(outcome.duration_ms / 1000)
    CU.inc(outcome.total_cu)
    # One write per (type, status), however many nodes share it: each costs a lock.
    for (node_type, status), count in collections.Counter(outcome.nodes).items():
        NODES.labels(node_type, status).inc(count)


def exposition() -> bytes:
    """Every metric in Prometheus text format, summed over live and dead workers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()  # a fresh one per scrape, as the client asks
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
