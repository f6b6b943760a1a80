"""Faults on a real gunicorn: the store read-only, the log disk full or gone, the hard
timeout. Each gives a clear error or a recovered service, never corrupted data.

The disks are small tmpfs mounts, so these tests need root (CI runs as root);
elsewhere they are skipped.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time

import pytest

from tests.helpers import definition
from tests.server import Server

pytestmark = pytest.mark.server

ONE_CU = {"definition": definition("root>a", a={"type": "log", "payload": {"message": "x"}})}


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs, unmounted at the end."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def integrity(store_path) -> tuple[str, int, int]:
    """PRAGMA integrity_check, the dev token's balance, the CU still reserved."""
    with sqlite3.connect(store_path) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        balance = db.execute("SELECT balance FROM tokens WHERE name = 'dev-token'").fetchone()[0]
        reserved = db.execute("SELECT COALESCE(SUM(reserved), 0) FROM runs").fetchone()[0]
    return check, balance, reserved


def test_a_store_that_cannot_be_written_is_a_clear_503_and_the_service_recovers(tmp_path):
    server = Server(tmp_path, STORE_BUSY_MS="300")
    server.flask("token", "seed-dev")
    server.start()
    try:
        assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
        # Another process holds the database: every write waits, then gives up.
        holder = sqlite3.connect(server.env["RUNNER_STORE_PATH"], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            status, body = server.request("POST", "/v1/runs/sync", ONE_CU)
            assert status == 503 and body["code"] == 503000, body
            assert server.request("GET", "/readyz", token=None)[0] == 503
            assert server.request("GET", "/livez", token=None)[0] == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        status, run = server.request("POST", "/v1/runs/sync", ONE_CU)
        assert status == 200 and run["status"] == "success"
        assert server.request("GET", "/readyz", token=None)[0] == 200
    finally:
        server.stop()
    assert integrity(server.env["RUNNER_STORE_PATH"]) == ("ok", 1_000_000 - 2, 0)


def test_a_store_on_a_read_only_disk_at_start_up_stops_it_with_one_line(tmp_path, disk):
    store = disk / "runner.sqlite3"
    server = Server(tmp_path, STORE_PATH=str(store))
    server.flask("token", "seed-dev")
    remount(disk, "ro")  # before gunicorn opens it: the file exists, the disk refuses writes
    try:
        with pytest.raises(RuntimeError, match="gunicorn exited"):
            server.start()
    finally:
        server.stop()
        remount(disk, "rw")
    lines = [line for line in server.log_tail().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "the store is unavailable" in lines[0], server.log_tail()
    assert "Traceback" not in server.log_tail()
    assert integrity(store)[0] == "ok"


def test_a_full_log_disk_does_not_stop_runs(tmp_path, disk):
    server = Server(tmp_path, LOG_FILE=str(disk / "log" / "app.log"))
    server.flask("token", "seed-dev")
    server.start()
    try:
        assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as out, pytest.raises(OSError):  # fill it: ENOSPC
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        for _ in range(5):
            assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
        filler.unlink()
        status, run = server.request("POST", "/v1/runs/sync", ONE_CU)
        assert status == 200
        assert run["runId"] in (disk / "log" / "app.log").read_text()  # logging came back
    finally:
        server.stop()
    assert integrity(server.env["RUNNER_STORE_PATH"])[0] == "ok"


def test_a_deleted_log_directory_does_not_stop_runs(tmp_path):
    server = Server(tmp_path)
    server.flask("token", "seed-dev")
    server.start()
    try:
        assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
        shutil.rmtree(tmp_path / "log")
        status, run = server.request("POST", "/v1/runs/sync", ONE_CU)
        assert status == 200 and run["status"] == "success"
        time.sleep(0.2)
        assert run["runId"] in (tmp_path / "gunicorn.out").read_text()  # stdout still has it
    finally:
        server.stop()


def test_a_request_past_the_hard_timeout_is_charged_only_its_started_attempts(tmp_path):
    """SPEC §3: a worker killed mid-run charges the attempts the run started and releases
    the rest of its reservation (3 reserved here, 1 started)."""
    # Misconfigured on purpose: gunicorn's hard timeout (2 s) below the run deadline.
    server = Server(tmp_path, RUN_DEADLINE_MS="20000")
    server.env["GUNICORN_TIMEOUT"] = "2"
    server.flask("token", "seed-dev")
    server.start()
    slow = {"runId": "run_too_slow", "definition": definition("root>wait", wait={
        "type": "delay", "payload": {"delayMs": 8000}, "retry": {"maxAttempts": 3}})}
    try:
        status, body = server.request("POST", "/v1/runs/sync", slow)
        assert status == 503 and body["code"] == 503000 and body["runId"] == "run_too_slow"
        status, run = server.request("GET", "/v1/runs/run_too_slow")
        assert status == 200 and run["status"] == "failure"
        assert run["error"]["code"] == "ABORTED" and run["totalCu"] == 1
        assert server.request("POST", "/v1/runs/sync", ONE_CU)[0] == 200
        assert "worker timeout: thread" in (tmp_path / "gunicorn.out").read_text()
    finally:
        server.stop()
    assert integrity(server.env["RUNNER_STORE_PATH"]) == ("ok", 1_000_000 - 2, 0)
