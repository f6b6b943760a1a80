"""Which way the app's imports run: the contracts of setup.cfg (checked by `make lint`)
cover every module, and the ground floor loads without the web layer."""
from __future__ import annotations

import configparser
import pkgutil
import subprocess
import sys

import app
from tests.server import ROOT


def test_the_expression_language_loads_neither_flask_nor_the_store():
    code = ("import sys, app.expressions\n"
            "loaded = [m for m in ('flask', 'werkzeug', 'sqlite3') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_every_module_is_placed_either_on_the_ground_floor_or_above_it():
    # The ground-floor contract lists the modules above it by name: a new module
    # must be placed, or the contract would not see the ground floor import it.
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    contract = config["importlinter:contract:ground"]
    placed = set(contract["source_modules"].split()) | set(contract["forbidden_modules"].split())
    modules = {f"app.{info.name}" for info in pkgutil.iter_modules(app.__path__)}
    assert modules - placed == set()
