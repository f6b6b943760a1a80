"""deploy/README.md's install steps on a stock Debian host, run as written (in a scratch
root: tests/deploy_root.py), down to a run through nginx."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.deploy_root import Scratch, missing_tools, parse_unit, readme_steps

MISSING = missing_tools()
needs_a_debian_host = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")
DEFAULT_SITE_OFF = "rm -f /etc/nginx/sites-enabled/default\n"


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def scratch():
    """A scratch root, a stock Debian host with the code in /opt/runner; the steps'
    user ``runner`` is removed afterwards when the test created it."""
    had_user = user_exists("runner")
    scratch = Scratch(Path(tempfile.mkdtemp(prefix="deploy-")))
    try:
        scratch.prepare()
        yield scratch
    finally:
        scratch.stop()
        if not had_user and user_exists("runner"):
            subprocess.run(["userdel", "runner"], check=False)
        shutil.rmtree(scratch.root, ignore_errors=True)


def report(scratch: Scratch, done: subprocess.CompletedProcess) -> str:
    nginx_log = scratch.root / "var" / "log" / "nginx" / "error.log"
    return (f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            f"\n--- journal\n{scratch.journal()[-3000:]}\n--- nginx\n"
            f"{nginx_log.read_text()[-2000:] if nginx_log.exists() else ''}")


@pytest.mark.server
@needs_a_debian_host
def test_the_steps_as_written_serve_a_run_through_nginx(scratch):
    steps = readme_steps()
    assert DEFAULT_SITE_OFF in steps and "useradd" in steps and "token create" in steps
    done = scratch.run(steps)
    assert done.returncode == 0, report(scratch, done)
    ready, run = done.stdout.strip().splitlines()[-2:]  # the last step's two answers
    assert json.loads(ready) == {"status": "ok"}
    run = json.loads(run)
    assert run["status"] == "success", report(scratch, done)
    assert run["executionState"]["hello"]["result"]["message"] == "Hello, Ada"
    assert 'conflicting server name "_"' not in done.stderr  # nginx -t's warning

    # The service ran as its user, with the settings of /etc/runner/runner.env.
    runner = pwd.getpwnam("runner")
    store = scratch.path("/var/lib/runner/runner.sqlite3")
    log = scratch.path("/var/log/runner/app.log")
    assert store.stat().st_uid == log.stat().st_uid == runner.pw_uid
    finished = [json.loads(line) for line in log.read_text().splitlines()
                if '"run finished"' in line]
    assert [line["runId"] for line in finished] == [run["runId"]]
    # Debian's default site is disabled, not deleted.
    assert scratch.path("/etc/nginx/sites-available/default").exists()
    assert not os.path.lexists(scratch.path("/etc/nginx/sites-enabled/default"))


@pytest.mark.server
@needs_a_debian_host
def test_with_debian_default_site_left_enabled_no_request_reaches_the_service(scratch):
    """The step that disables Debian's default site is needed: without it, nginx warns
    and the default site answers every request (the check's 404)."""
    done = scratch.run(readme_steps().replace(DEFAULT_SITE_OFF, ""))
    assert done.returncode != 0, report(scratch, done)
    assert 'conflicting server name "_" on 0.0.0.0:80, ignored' in done.stderr
    assert "404" in done.stderr  # curl -f: the default site's answer to /readyz


def test_the_unit_lets_the_service_write_where_its_settings_point():
    """ProtectSystem=strict leaves only ReadWritePaths writable: the store, the log and
    the metrics directory of runner.env and the unit must lie there."""
    root = Path(__file__).resolve().parent.parent / "deploy"
    service = parse_unit((root / "runner.service").read_text())["Service"]
    assert service["EnvironmentFile"] == ["/etc/runner/runner.env"]
    writable = [Path(path) for line in service["ReadWritePaths"] for path in line.split()]
    settings = dict(line.split("=", 1) for line in (root / "runner.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    settings.update(line.split("=", 1) for line in service["Environment"])
    places = [Path(settings["RUNNER_STORE_PATH"]).parent, Path(settings["RUNNER_LOG_FILE"]).parent,
              Path(settings["PROMETHEUS_MULTIPROC_DIR"])]
    for place in places:
        assert any(place == path or path in place.parents for path in writable), place

