"""gunicorn settings, production and ``make run`` alike. Environment overrides:
BIND or PORT, WEB_CONCURRENCY, GUNICORN_RELOAD=1, RUNNER_RUN_DEADLINE_MS,
RUNNER_MAX_CONCURRENT_RUNS (default: the workers but one).

Sync workers read a request from one client at a time: a few idle, half-sent
connections hold every worker. In production gunicorn sits behind a buffering
proxy (deploy/nginx.conf); it says so at start-up when it listens beyond this host.
"""
import ipaddress
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import traceback

# -- Server socket --------------------------------------------------------------
bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
backlog = 2048

# -- Request limits ---------------------------------------------------------------
# Above nginx's (large_client_header_buffers 4 8k in deploy/nginx.conf), so that nginx
# refuses a long request line or header first, with its JSON answer. 8190 is the most
# gunicorn allows for the line; a header grows past nginx's limit by the
# X-Forwarded-For nginx appends to. gunicorn's own refusals are JSON too (post_fork).
limit_request_line = 8190
limit_request_field_size = 16384

# -- Workers --------------------------------------------------------------------
# "sync" is the only worker whose `timeout` bounds a single request: it tells the
# master it is alive only between requests, so a run stuck past `timeout` gets the
# worker killed (SIGABRT, then SIGKILL). One request per worker process also keeps
# runs from sharing memory or the GIL.
worker_class = "sync"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))

# -- Metrics ----------------------------------------------------------------------
# prometheus-client's multiprocess mode: every worker writes its samples to files
# in this directory, which must be known before any worker starts (emptied in
# on_starting; files of exited workers are marked dead in child_exit).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.abspath("var/metrics"))

# -- Timeouts -------------------------------------------------------------------
# The hard limit must stay above the run deadline (60 s by default), so a run
# always ends by its own deadline and answers before gunicorn kills it; both
# limits, and when the store takes a run for dead, follow it in app/config.py.
# (Imported after PROMETHEUS_MULTIPROC_DIR is set: the app's metrics read it.)
from app import config as _config  # noqa: E402

try:
    _settings = _config.load()
except _config.SettingError:  # on_starting refuses to start with the setting's one line
    _settings = _config.defaults()
# GUNICORN_TIMEOUT overrides it (the fault tests use a short one on purpose).
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or _config.hard_timeout_s(_settings))
# A restart (HUP, deploy) lets runs in flight finish: at least the run deadline.
graceful_timeout = int(_config.graceful_timeout_s(_settings))
keepalive = 5

# -- Recycling ------------------------------------------------------------------
# Fresh workers now and then bound any slow leak; jitter keeps them from all
# restarting at once. A worker's start costs about 0.5 s of CPU (it imports the app
# after the fork, so that a HUP serves new code): every 2,000 requests that was 0.25 ms
# of CPU per run, 15 % of a small run's; every 10,000, 0.05 ms.
max_requests = 10000
max_requests_jitter = 1000

# -- Development -----------------------------------------------------------------
reload = os.environ.get("GUNICORN_RELOAD") == "1"

# -- Control socket ---------------------------------------------------------------
# gunicorn ≥ 24 listens on ~/.gunicorn/gunicorn.ctl by default; several instances
# on one host (make run, tests, blue/green) would fight over it, and we manage the
# server with signals.
control_socket_disable = True

# -- Logging --------------------------------------------------------------------
# gunicorn's own messages are JSON lines on stdout; the app adds the shared log
# file in each worker (see post_fork), where each run leaves one summary line.
# Access lines repeat what that line says, at a cost per request: they are off
# unless GUNICORN_ACCESS_LOG=1.
errorlog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logconfig.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stdout"}},
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {
            "level": "INFO" if os.environ.get("GUNICORN_ACCESS_LOG") == "1" else "WARNING",
            "handlers": ["stdout"], "propagate": False},
    },
}



# -- Hooks ------------------------------------------------------------------------
def _with_store(server, action, needed=False):
    """Run ``action(store)`` in the master; a store that is unavailable only costs a warning
    (the clean-up of orphaned runs catches up later), unless ``needed``: then it raises."""
    from app import config
    from app.store import StoreUnavailable, open_store

    settings = config.load()
    # busy_ms: the master must not hang; the host's name, as its workers write it in runs.
    store = open_store(config.database_url(settings), busy_ms=2000, host=settings["HOST_ID"])
    try:
        return action(store)
    except StoreUnavailable as error:
        if needed:
            raise
        server.log.warning("store unavailable in the master: %s", error)
        return 0
    finally:
        store.close()


def on_starting(server):
    """Before any worker: schema up to date, runs orphaned by a crash aborted, old runs gone."""
    # The app's code (Flask, V8 bindings, …) is imported once here, in the master, so a
    # worker — and every worker that replaces a recycled or killed one — starts without
    # importing it: 0.15 s of CPU less per start. No app is created: that stays per worker.
    import app.factory  # noqa: F401
    from app import config
    from app.store import SchemaTooNew, StoreUnavailable

    # SPEC §8: one token alone can never occupy every worker of the host. Here, where
    # the worker count is known (-w included), before the workers read the settings.
    os.environ.setdefault("RUNNER_MAX_CONCURRENT_RUNS", str(max(1, server.cfg.workers - 1)))
    try:
        retention = config.load()["RUN_RETENTION_DAYS"] * 86400
    except ValueError as error:  # a setting that does not parse: one line, no traceback
        _refuse_to_start(server, error)
    for warning in config.unknown_variables():  # a typo'd RUNNER_ variable is ignored
        server.log.warning(warning)
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)

    def start(store):
        store.migrate()
        store.prune(retention)
        return store.abort_orphans()

    # A store that cannot be reached, or that newer code migrated, stops the start-up with
    # one line (a service manager restarts it); one that goes away later gets 503s.
    try:
        aborted = _with_store(server, start, needed=True)
    except StoreUnavailable as error:
        _refuse_to_start(server, f"the store is unavailable: {error}")
    except SchemaTooNew as error:
        _refuse_to_start(server, error)
    if aborted:
        server.log.warning("aborted %d run(s) left running by a previous start", aborted)


def _refuse_to_start(server, error):
    server.log.error("cannot start: %s", error)
    sys.exit(1)


def when_ready(server):
    """Warn when listening beyond this host: bare sync workers are easy to stall."""
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        if isinstance(address, tuple) and not ipaddress.ip_address(address[0]).is_loopback:
            server.log.warning(
                "listening on %s, beyond this host: put gunicorn behind a buffering proxy "
                "(deploy/nginx.conf); sync workers read one client at a time, so a few "
                "idle, half-sent connections would hold every worker", listener)


def child_exit(server, worker):
    """A worker is gone (killed, hard timeout, recycled): its unfinished runs are aborted."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    aborted = _with_store(server, lambda store: store.abort_runs_of_worker(worker.pid))
    if aborted:
        server.log.warning("worker %s exited mid-run: aborted %d run(s)", worker.pid, aborted)


def post_fork(server, worker):
    """Logging handlers (the shared file among them) belong to each worker process;
    gunicorn's own error answers (bad request line, headers too large) are JSON."""
    from gunicorn import util

    from app import config, logconfig

    logconfig.configure(config.load())
    util.write_error = _write_json_error


def _write_json_error(sock, status, reason, message):
    """gunicorn's error page, in the app's envelope instead of HTML (``message`` may
    hold what the client sent: it is logged by gunicorn, not echoed)."""
    import json
    import uuid

    from gunicorn import util

    body = json.dumps({"code": status * 1000, "message": reason,
                       "requestId": uuid.uuid4().hex}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_worker_init(worker):
    """On SIGTERM a worker takes no further request: it stops listening at once when a
    request is under way (``_stop_listening``) and exits once it has answered it. A
    node thread that outlives its cancelled attempt (a bug burning CPU after the
    answer) makes the worker stop the same way, and gunicorn starts a fresh one."""
    from app import pool

    stop = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        stop(signum, frame)  # gunicorn's: worker.alive = False
        if worker.in_request:
            _stop_listening(worker)

    worker.in_request = False
    signal.signal(signal.SIGTERM, on_term)
    pool.on_stuck = lambda: os.kill(os.getpid(), signal.SIGTERM)
    worker.log.info("worker ready (pid: %s)", worker.pid)


def pre_request(worker, req):
    worker.in_request = True
    if not worker.alive:  # told to stop between accepting this connection and now
        _stop_listening(worker)


def post_request(worker, req, environ, resp):
    worker.in_request = False


def _stop_listening(worker):
    """Close this worker's copy of the listening socket. On TERM gunicorn's master closes
    its own at once and idle workers exit at once; a worker busy with a run would
    otherwise keep the socket listening until that run ends, and the connections the
    kernel accepts meanwhile wait unanswered, then are reset (measured: a probe sent
    0.3 s after TERM hung 3.7 s, then "connection reset"). Once every process has closed
    it, the port refuses connections at once, and nginx passes a request on to another
    host. Only while a request is under way: the worker then leaves its loop without
    touching the listener again (an idle one may be inside select() or accept())."""
    for listener in worker.sockets:
        listener.close()


def worker_exit(server, worker):
    """The worker's metrics of its last second are written before it goes (it writes
    them at most once a second, app/metrics.py)."""
    from app import metrics

    metrics.flush()


def worker_abort(worker):
    """On the hard timeout (SIGABRT): log every thread's stack, to see what hung."""
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in frames.items():
        stack = "".join(traceback.format_stack(frame))
        worker.log.error("worker timeout: thread %s (%s)\n%s", names.get(ident, "?"),
                         ident, stack)
