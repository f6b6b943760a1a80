"""Shared fixtures: an app on a temporary SQLite store, a client, a funded token."""
from __future__ import annotations

import pytest

from app import create_app
from tests import pg
from tests.helpers import DEV_AUTH
from tests.http_support import guard_loopback, serve


@pytest.fixture
def app(tmp_path):
    app = create_app({
        "TESTING": True,
        "STORE_PATH": str(tmp_path / "runner.sqlite3"),
        "LOG_FILE": str(tmp_path / "log" / "app.log"),
    })
    app.extensions["store"].ensure_token("dev", DEV_AUTH["Authorization"].split()[1], 1_000_000)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def test_nodes(monkeypatch):
    """Register the test-only node types of ``tests.testnodes``."""
    from app.nodes import NODE_TYPES
    from tests import testnodes

    for name, node_type in testnodes.TEST_TYPES.items():
        monkeypatch.setitem(NODE_TYPES, name, node_type)
    testnodes.barrier.reset()
    testnodes.events.clear()
    testnodes.attempt_times.clear()
    testnodes.release.clear()
    yield testnodes
    testnodes.release.set()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any outbound connection to an address that is not loopback fails the test."""
    guard_loopback(monkeypatch)


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1 (``tests.http_support.LocalServer``)."""
    with serve() as srv:
        yield srv


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the session (``tests.pg``); the test is skipped without one."""
    server = pg.Server.start()
    if server is None:
        pytest.skip("no PostgreSQL: install Debian's postgresql or set RUNNER_TEST_DATABASE_URL")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)
