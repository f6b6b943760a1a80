"""The durable floor for ``make bench-http``: a bare Flask endpoint doing exactly the work
no design of a run can avoid, and nothing else.

Per request: read the JSON body; reserve (one ``BEGIN IMMEDIATE`` transaction: an
``UPDATE`` of the balance row and an ``INSERT`` of the run's row); charge and store (a
second one: an ``UPDATE`` of the balance and an ``UPDATE`` of the run's row with its
~1.5 KB answer text); append one log line to the log file with a single ``os.write``
(``O_APPEND``); answer a small JSON object.

The store is one SQLite file in WAL mode shared by every worker, each through a
connection of its own opened after gunicorn's fork, with the service's settings
(app/store/sqlite_connection.py): ``synchronous`` from ``RUNNER_SQLITE_SYNCHRONOUS``
(``NORMAL`` by default), the same busy timeout. Its file and the log file are the
server's own, ``RUNNER_STORE_PATH`` and ``RUNNER_LOG_FILE`` (tests/server.py puts both in
the server's work directory); its tables have names of their own.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time

from flask import Flask, jsonify, request

STORE_PATH = os.environ.get("RUNNER_STORE_PATH", "var/runner.sqlite3")
LOG_PATH = os.environ.get("RUNNER_LOG_FILE") or "var/log/app.log"
SYNCHRONOUS = os.environ.get("RUNNER_SQLITE_SYNCHRONOUS", "NORMAL")
if SYNCHRONOUS not in ("NORMAL", "FULL"):
    raise ValueError(f"RUNNER_SQLITE_SYNCHRONOUS must be NORMAL or FULL, not {SYNCHRONOUS!r}")
BUSY_S = 5.0  # as the service's store waits for a lock
# A run's stored answer is about this long (the 5-node workflow's body is).
ANSWER = json.dumps({"status": "success", "result": "x" * 1400, "runId": "%s"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_balance (
    id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, reserved INTEGER NOT NULL,
    used INTEGER NOT NULL);
INSERT OR IGNORE INTO floor_balance VALUES (1, 1000000000000, 0, 0);
CREATE TABLE IF NOT EXISTS floor_runs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, started_ms INTEGER NOT NULL,
    finished_ms INTEGER, answer TEXT);
"""

app = Flask(__name__)
_opened: dict[int, tuple[sqlite3.Connection, int]] = {}  # by process id: a fork opens anew


def _store() -> tuple[sqlite3.Connection, int]:
    """This process's connection to the store and its descriptor of the log file."""
    opened = _opened.get(os.getpid())
    if opened is None:
        if os.path.dirname(STORE_PATH):
            os.makedirs(os.path.dirname(STORE_PATH), exist_ok=True)
        conn = sqlite3.connect(STORE_PATH, timeout=BUSY_S, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        if os.path.dirname(LOG_PATH):
            os.makedirs(os.path.dirname(LOG_PATH), exist_ok=True)
        log = os.open(LOG_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        opened = _opened[os.getpid()] = (conn, log)
    return opened


@app.post("/v1/runs/sync")
def run():
    """The durable minimum of a run: two transactions and one log line."""
    body = request.get_json()
    conn, log = _store()
    run_id = "run_" + os.urandom(13).hex()
    started = int(time.time() * 1000)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE floor_balance SET reserved = reserved + 1 WHERE id = 1")
    conn.execute("INSERT INTO floor_runs (id, status, started_ms) VALUES (?, 'running', ?)",
                 (run_id, started))
    conn.execute("COMMIT")
    answer = ANSWER % run_id
    finished = int(time.time() * 1000)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE floor_balance SET reserved = reserved - 1, used = used + 1 "
                 "WHERE id = 1")
    conn.execute("UPDATE floor_runs SET status = 'success', finished_ms = ?, answer = ? "
                 "WHERE id = ?", (finished, answer, run_id))
    conn.execute("COMMIT")
    # The service's line for a finished run, as long (a request id as it makes one).
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(finished // 1000))
    os.write(log, f'{{"ts": "{stamp}.{finished % 1000:03d}Z", "level": "INFO", '
                  f'"logger": "app.runs", "message": "run finished", "pid": {os.getpid()}, '
                  f'"requestId": "{os.urandom(16).hex()}", "runId": "{run_id}", '
                  f'"status": "success", "durationMs": {finished - started}}}\n'.encode())
    return jsonify({"runId": run_id, "status": "success",
                    "nodes": len(body["definition"]["nodes"])})
