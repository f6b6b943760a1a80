"""The ground floor of the app can be used without the web layer (issue 12, item 4)."""
from __future__ import annotations

import subprocess
import sys

from tests.server import ROOT


def test_the_expression_language_loads_neither_flask_nor_the_store():
    code = ("import sys, app.expressions\n"
            "loaded = [m for m in ('flask', 'werkzeug', 'sqlite3') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
