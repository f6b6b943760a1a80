"""code-transform's memory limits, measured on real helper processes (SPEC §3).

Each case runs ``code_transform.run`` in a fresh Python process (standing in
for a worker) and reads the largest resident size of its children from the
kernel (``RUSAGE_CHILDREN``), so a helper that died is measured too. The
figure also covers the worker's own size when it started the helper (a child
starts as a copy), so it can only overstate the helper's peak.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.nodes import v8helper

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

WORKER = """
import json, resource, sys, time
from app.nodes import code_transform, v8helper
from app.nodes.base import NodeContext, NodeError
code, seconds, settings = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
ctx = NodeContext(run_id="run_test", node_id="ct", deadline=time.monotonic() + seconds,
                  settings=settings)
started = time.monotonic()
try:
    output = code_transform.run({"code": code, "input": json.loads(sys.stdin.read()),
                                 "timeout": int(seconds * 1000)}, ctx)["output"]
    result = {"output": output}
except NodeError as error:
    result = error.as_dict()
result["seconds"] = time.monotonic() - started
v8helper.kill_idle()
result["peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(result))
"""


def worker(code: str, seconds: float = 10.0, input_: object = None, **settings) -> dict:
    """``{output}`` or the error, with ``seconds`` taken and the helpers' ``peak`` RSS."""
    done = subprocess.run([sys.executable, "-c", WORKER, code, str(seconds),
                           json.dumps(settings)], input=json.dumps(input_ or {}), cwd=ROOT,
                          capture_output=True, text=True, timeout=seconds + 30)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


BOMBS = {
    # V8 does not check its heap limit inside fill(): 1.1 GB before the OS limit.
    "array fill": "return new Array(1e8).fill(1.5)",
    "huge array fill": "return new Array(2**30).fill(0).length",
    "string split": "return 'x'.repeat(2**28).split('').length",
    "string concatenation": "let s = ''; for (let i = 0; ; i++) {"
                            " s += 'abcdefghij'.repeat(1000) + i;"
                            " if (i % 1000 === 0) s.charCodeAt(s.length - 1); }",
    "object graph": "const a = []; for (let i = 0; ; i++)"
                    " a.push({i, s: 'v' + i, o: {x: [i, i + 1]}});",
    "map": "const m = new Map(); for (let i = 0; ; i++) m.set(i, 'k' + i);",
}


@pytest.mark.parametrize("body", BOMBS.values(), ids=BOMBS.keys())
def test_a_helper_stays_within_its_process_limit(body):
    result = worker(f"function transform(input) {{ {body} }}")
    assert result.get("code") == "CODE_ERROR", result
    assert "memory" in result["message"]
    assert result["peak"] <= v8helper.PROCESS_MIB * MIB, result["peak"] / MIB
    assert result["seconds"] < 8, result  # promptly: its time limit is 10 s


def test_the_limits_are_settings():
    grow = "function transform(input) { const a = []; while (true) a.push('x' + a.length) }"
    result = worker(grow, CODE_HEAP_MIB=32, CODE_PROCESS_MIB=160)
    assert result.get("code") == "CODE_ERROR" and "32 MiB" in result["message"]
    assert "160 MiB" in result["message"]
    assert result["peak"] <= 160 * MIB


@pytest.mark.parametrize("value", [
    ['"\\' * 50] * 40_000,  # 8 MB of JSON: the 4 MiB input budget, escaped
    [{"id": i, "name": f"name {i}", "tags": ["a", "b"], "price": i * 1.5}
     for i in range(60_000)],
], ids=["escapes", "records"])
def test_a_large_input_fits_within_the_limits(value):
    result = worker("function transform(input) { return input.map(x => typeof x).length }",
                    input_=value)
    assert result.get("output") == len(value), result
    assert result["peak"] <= v8helper.PROCESS_MIB * MIB


# -- the systemd unit ----------------------------------------------------------------


def unit() -> dict[str, list[str]]:
    """``deploy/runner.service`` as ``{key: [values]}`` (comments left out)."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "runner.service").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_bounds_memory_tasks_and_privileges():
    service = unit()
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["PrivateTmp"] == ["yes"]
    assert re.fullmatch(r"\d+", service["TasksMax"][0])
    size = re.fullmatch(r"(\d+)([MG])", service["MemoryMax"][0])
    assert size, service["MemoryMax"]
    # A worker and its helpers, at their limits, must fit: at least one of them.
    per_worker = 64 + v8helper.MAX_HELPERS * v8helper.PROCESS_MIB
    assert int(size[1]) * (1024 if size[2] == "G" else 1) >= per_worker


def test_the_unit_can_write_where_the_service_writes():
    """The paths are set in the unit and in its EnvironmentFile (deploy/runner.env)."""
    service = unit()
    writable = service["ReadWritePaths"][0].split()
    environment = dict(value.split("=", 1) for value in service["Environment"])
    for line in (ROOT / "deploy" / "runner.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            environment[name] = value
    written = [Path(environment["RUNNER_STORE_PATH"]).parent,
               Path(environment["RUNNER_LOG_FILE"]).parent,
               Path(environment["PROMETHEUS_MULTIPROC_DIR"])]
    for path in written:
        assert any(path.is_relative_to(allowed) for allowed in writable), (path, writable)
