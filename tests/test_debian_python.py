"""The service on Debian 12's own python3 (3.11.2), as deploy/README.md installs it."""
from __future__ import annotations

import os
import subprocess
import sysconfig

import pytest

from tests.server import ROOT

DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason=f"no {DEBIAN_PYTHON}")
def test_debian_pythons_regular_expressions_find_the_holes():
    """Python 3.11.2's re module matched a possessive quantifier wrongly: the pattern that
    found the end of a hole found none, and every {{…}} was "unterminated"."""
    code = ("from app.expressions import parse\n"
            "template = parse('Hi {{root.result.name}}, {{ \"}}\" || x.y }}!')\n"
            "print([hole.source for hole in template.holes])")
    done = subprocess.run([DEBIAN_PYTHON, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}"})
    if "ModuleNotFoundError" in done.stderr or "ImportError" in done.stderr:
        pytest.skip(f"{DEBIAN_PYTHON} cannot load the test environment's packages")
    assert done.stdout.strip() == str(["{{root.result.name}}", '{{ "}}" || x.y }}']), done.stderr
