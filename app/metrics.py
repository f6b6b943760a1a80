"""Prometheus metrics, correct across gunicorn workers, written at most once a second.

In production ``PROMETHEUS_MULTIPROC_DIR`` is set by gunicorn.conf.py before
any worker starts: each worker writes its samples to files there, and a scrape
adds them up in a registry built for that scrape. Without it (tests, the Flask
CLI), the process's own default registry is served.

Each write of a sample takes a lock and stores it in a memory-mapped file: done
for every run, they cost almost 4 % of its CPU. So a process keeps what it counts
in memory (``record_run``, ``count``, ``add_running``) and writes it to the
samples at most once a second, from a daemon thread of its own (started at the
first count, again in a forked child). The first count after a quiet second is
written at once; the rest of that second's at its end. A process also writes
what it holds before it serves a scrape or any read of the default registry, and
when it exits (atexit, and gunicorn's ``worker_exit``). So ``/metrics`` shows
another worker's runs, and its runs in progress (a gauge, sampled the same way:
a run shorter than a second may never show), up to a second late; a worker
killed outright (SIGKILL) loses its last second.
"""
from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
from collections import defaultdict

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


class _WrittenFirst:
    """A collector registered before the metrics: whoever reads the default registry
    (its scrape, a test) sees this process's counts written."""

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        flush()
        return []


REGISTRY.register(_WrittenFirst())

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

FLUSH_INTERVAL_S = 1.0
# Histogram.observe's bucket: the first upper bound at or above the value (the last is +Inf).
# A flush adds many observations to a bucket and the sum at once, as observe adds one:
# through the histogram's own values (_buckets, _sum), which observe writes.
_BOUNDS = RUN_SECONDS._upper_bounds

log = logging.getLogger(__name__)

# What this process counted and has not written: (metric, label values) → amount; for
# RUN_SECONDS, (RUN_SECONDS, bucket index) → observations and (RUN_SECONDS, None) → sum.
_pending: defaultdict = defaultdict(int)
_running = 0  # runs in progress in this process
_written_running = 0  # the gauge's value as last written
_dirty = False  # counted since the last flush
_flusher: threading.Thread | None = None
_lock = threading.Lock()  # _pending, _running, _dirty and _flusher, briefly
_flush_lock = threading.Lock()  # one flush at a time (the gauge written in order)
_wake = threading.Event()


def record_run(outcome) -> None:
    """Count one finished run (``state.Outcome``); a loop's body instances count as nodes."""
    seconds = outcome.duration_ms / 1000
    with _lock:
        pending = _pending
        pending[RUNS, (outcome.status,)] += 1
        pending[RUN_SECONDS, bisect.bisect_left(_BOUNDS, seconds)] += 1
        pending[RUN_SECONDS, None] += seconds
        pending[CU, ()] += outcome.total_cu
        for node in outcome.nodes:  # (type, status)
            pending[NODES, node] += 1
        if not _dirty:
            _changed()


def count(metric: Counter, *labels: str) -> None:
    """One more of the counter ``metric`` with these label values."""
    with _lock:
        _pending[metric, labels] += 1
        if not _dirty:
            _changed()


def add_running(change: int) -> None:
    """Runs in progress in this process (runner_runs_in_progress): 1 more as one starts,
    -1 as it ends."""
    global _running
    with _lock:
        _running += change
        if not _dirty:
            _changed()


def _changed() -> None:
    """The first count since a flush (``_lock`` held): the flusher writes it."""
    global _dirty, _flusher
    _dirty = True
    if _flusher is None:
        _flusher = threading.Thread(target=_flush_forever, name="metrics", daemon=True)
        _flusher.start()
    _wake.set()


def _flush_forever() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        try:
            flush()
        except Exception:  # a full disk, say: the thread must go on counting
            log.exception("metrics not written")
        time.sleep(FLUSH_INTERVAL_S)


def flush() -> None:
    """Write what this process counted since the last flush to the samples."""
    global _pending, _dirty, _written_running
    with _flush_lock:
        with _lock:
            if not _dirty:
                return
            counts, _pending, _dirty = _pending, defaultdict(int), False
            running = _running
        for (metric, labels), amount in counts.items():
            if metric is RUN_SECONDS:  # a bucket's observations, or their sum (None)
                (metric._sum if labels is None else metric._buckets[labels]).inc(amount)
            else:
                (metric.labels(*labels) if labels else metric).inc(amount)
        if running != _written_running:
            IN_PROGRESS.set(running)
            _written_running = running


def _reset_after_fork() -> None:
    """A forked child counts afresh (its parent writes its own counts) and starts its
    own flusher; a lock the parent's flusher held at the fork would never be released."""
    global _pending, _running, _written_running, _dirty, _flusher, _lock, _flush_lock, _wake
    _pending, _running, _written_running, _dirty, _flusher = defaultdict(int), 0, 0, False, None
    _lock, _flush_lock, _wake = threading.Lock(), threading.Lock(), threading.Event()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(flush)


def exposition() -> bytes:
    """Every metric in Prometheus text format, summed over live and dead workers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        flush()  # this process's counts, at least, are current
        registry = CollectorRegistry()  # a fresh one per scrape, as the client asks
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
