"""A PostgreSQL server for the tests, and a fresh database for each test that asks.

``RUNNER_TEST_DATABASE_URL`` (``postgresql://user@host:port/db``, a role allowed to
create databases) names an existing server; without it a throwaway cluster is made
once per test session (``initdb`` into a temporary folder, a free port, a Unix socket
folder of its own) and removed at the end. PostgreSQL refuses to run as root: as root,
its programs run as the ``postgres`` user.

A test that stops and restarts its server (``pause``/``resume``) asks for a cluster of
its own (``Server.throwaway()``), whatever ``RUNNER_TEST_DATABASE_URL`` says.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.server import free_port

USER = "runner"


def _bindir() -> str | None:
    """Where initdb is: on PATH, else the newest of Debian's per-version folders."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda path: int(Path(path).parent.parent.name))
    return os.path.dirname(versions[-1]) if versions else None


class Server:
    """A PostgreSQL server reached at ``url``; ``stop`` removes a cluster made here."""

    def __init__(self, url: str, cluster: Path | None = None, run=None):
        self.url, self.cluster, self._run = url, cluster, run

    @classmethod
    def start(cls) -> Server | None:
        """The given server, a new throwaway cluster, or None when neither can be had."""
        given = os.environ.get("RUNNER_TEST_DATABASE_URL")
        return cls(given) if given else cls.throwaway()

    @classmethod
    def throwaway(cls) -> Server | None:
        """A new cluster of this test's own (which it may pause), or None without initdb."""
        bindir = _bindir()
        if bindir is None:
            return None
        as_root = os.geteuid() == 0
        folder = Path(tempfile.mkdtemp(prefix="runner-pg-"))
        sockets = folder / "sockets"
        sockets.mkdir()
        if as_root:
            for path in (folder, sockets):
                shutil.chown(path, "postgres", "postgres")

        def run(*args: str) -> None:
            command = [os.path.join(bindir, args[0]), *args[1:]]
            subprocess.run(["runuser", "-u", "postgres", "--", *command] if as_root else command,
                           check=True, capture_output=True, cwd=folder)

        port = free_port()
        run("initdb", "-D", str(folder / "data"), "-U", USER, "-A", "trust", "-E", "UTF8",
            "--no-sync")
        server = cls(f"postgresql://{USER}@127.0.0.1:{port}/postgres", folder, run)
        server._options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                           "-c full_page_writes=off -c max_connections=300")
        server.resume()
        return server

    def pause(self) -> None:
        """Stop the cluster as a crash would (its clients' connections drop); keep its data."""
        self._run("pg_ctl", "-D", str(self.cluster / "data"), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start the cluster (again), on the same port, and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.cluster / "data"), "-l", str(self.cluster / "log"),
                  "-w", "-t", "60", "-o", self._options, "start")

    def stop(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(subprocess.CalledProcessError):  # paused already
                self.pause()
            shutil.rmtree(self.cluster, ignore_errors=True)

    def postmaster_pid(self) -> int | None:
        """The main process of a cluster made here (the root of its process tree, to
        measure the database's CPU); None for a given server, which may be elsewhere."""
        if self.cluster is None:
            return None
        return int((self.cluster / "data" / "postmaster.pid").read_text().split()[0])

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = "runner_test_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return urlunsplit(urlsplit(self.url)._replace(path="/" + name))

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
