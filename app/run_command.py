"""``runner run-workflow FILE``: a workflow file checked and run in this process.

For writing workflows and checking them in CI: the file goes through the API's own
validation (``check_request``) and engine (``Run``) with the service's settings
(RUNNER_*), and its answer is printed as ``POST /v1/runs/sync`` would give it (or as
a table). No server, no token, nothing stored, no compute unit charged (``totalCu``
says what the run would cost).
"""
from __future__ import annotations

import json
import time
from datetime import datetime
from typing import IO, Any

import click
from flask import current_app
from flask.cli import with_appcontext

from . import config, logconfig
from .engine import Run
from .jsonread import TooDeep, loads_strict
from .problems import CODE_MESSAGES, Invalid
from .redact import Redactor
from .runs import new_run_id
from .state import Outcome, dumps
from .validation import Limits, check_request

INVALID = 2  # the exit status of a file that is no valid request (click's, for bad usage)


@click.command("run-workflow")
@click.argument("file", type=click.File("rb"))
@click.option("--payload", metavar="JSON|@FILE",
              help="The trigger data (the root node's result): JSON text, or @ and the name "
                   "of a file holding it (@- reads stdin). Replaces the file's own payload.")
@click.option("--table", is_flag=True,
              help="Print a table of the nodes, their statuses and times instead of JSON.")
@with_appcontext
def run_workflow(file: IO[bytes], payload: str | None, table: bool) -> None:
    """Run the workflow in FILE here, and print its execution state.

    FILE (- for stdin) holds either a whole request body, as POST /v1/runs/sync takes
    it ({"definition": {"nodes": …}, "payload": {…}, …}), or a bare definition
    ({"nodes": …}, as a B3OS workflow's definition is written). It is checked and run
    as the API would (same settings, RUNNER_*), but with no server and no token,
    nothing stored and nothing charged.

    Prints the answer the API would give (JSON), or with --table one line per node.
    Exit status: 0 when the run succeeded, 1 when it did not, 2 when FILE is not a
    valid request (its problems are printed, each under its location).
    """
    settings = current_app.config
    source = getattr(file, "name", "<stdin>")
    body = _request_body(_json(file.read(), source, settings), source)
    if payload is not None:
        body["payload"] = _payload(payload, settings)
    limits = Limits(max_nodes=settings["MAX_NODES"], run_deadline_ms=settings["RUN_DEADLINE_MS"],
                    max_problems=settings["MAX_PROBLEMS"])
    try:
        request = check_request(body, limits)
    except Invalid as problems:
        _print_problems(problems, table)
        click.get_current_context().exit(INVALID)
    outcome = _run(request, {name: settings[name] for name in config.SETTINGS})
    click.echo(_table(json.loads(outcome.text)) if table else outcome.text)
    click.get_current_context().exit(0 if outcome.status == "success" else 1)


def _json(raw: bytes, name: str, settings) -> Any:
    """A file's text as strict JSON (as a request body is read), else a usage error."""
    try:
        return loads_strict(raw.decode("utf-8-sig"), settings["MAX_JSON_DEPTH"])
    except TooDeep:
        raise click.UsageError(f"{name}: JSON nested deeper than "
                               f"{settings['MAX_JSON_DEPTH']} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise click.UsageError(f"{name} is not valid JSON: {error}") from None


def _request_body(value: Any, name: str) -> dict:
    """A request body as the API takes it: a bare definition (``nodes`` and no
    ``definition``) is wrapped."""
    if not isinstance(value, dict):
        raise click.UsageError(f"{name}: expected a JSON object (a request body or a "
                               "definition)")
    if "nodes" in value and "definition" not in value:
        return {"definition": value}
    return value


def _payload(given: str, settings) -> Any:
    if not given.startswith("@"):
        return _json(given.encode(), "--payload", settings)
    with click.open_file(given[1:], "rb") as file:
        return _json(file.read(), given[1:], settings)


def _run(request, settings: dict) -> Outcome:
    """The run's outcome, its answer's text as the API's; its log lines (on stderr)
    redacted as there."""
    redactor = Redactor.for_request(request)
    engine = Run(request, request.run_id or new_run_id(), settings=settings,
                 deadline_ms=settings["RUN_DEADLINE_MS"], redactor=redactor,
                 started=time.monotonic())
    redacting = logconfig.redactor.set(redactor)
    try:
        return engine.run()
    finally:
        logconfig.redactor.reset(redacting)


def _print_problems(problems: Invalid, table: bool) -> None:
    """The 400 answer the API would give: its JSON (stdout), or its problems as lines."""
    if not table:
        click.echo(dumps({"code": problems.code, "message": CODE_MESSAGES[problems.code],
                          "errors": problems.errors}))
        return
    click.echo(f"invalid: {CODE_MESSAGES[problems.code]} ({problems.code})")
    for location, messages in problems.errors.items():
        for message in messages:
            click.echo(f"  {location}: {message}")


COLUMNS = ("NODE", "TYPE", "STATUS", "START", "TIME", "TRIES", "DETAIL")


def _table(answer: dict) -> str:
    """One line per entry of ``executionState`` (start as ms after the root's), then the
    run's status, duration, what it would cost and its error."""
    states = answer["executionState"]
    origin = _epoch_ms(states.get("root", {}).get("startedAt"))
    rows = [COLUMNS]
    for node_id, state in states.items():
        started = _epoch_ms(state.get("startedAt"))
        rows.append((
            node_id, state["type"], state["status"],
            f"+{started - origin}ms" if started is not None and origin is not None else "",
            f"{state['durationMs']}ms" if "durationMs" in state else "",
            str(state.get("attempts", "")), _detail(state)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
             + "  " + row[-1] for row in rows]
    error = answer["error"]
    lines.append(f"{answer['runId']}: {answer['status']} in {answer['durationMs']}ms, "
                 f"{answer['totalCu']} CU" + (f"; {error['code']}: {error['message']}"
                                              if error else ""))
    return "\n".join(line.rstrip() for line in lines)


def _detail(state: dict) -> str:
    if state.get("error"):
        return f"{state['error']['code']}: {state['error']['message']}"
    if state.get("reason"):
        return state["reason"]
    if state["type"] == "if" and isinstance(state.get("result"), dict):
        return f"branch {state['result'].get('branch')}"
    return ""


def _epoch_ms(stamp: str | None) -> int | None:
    """An answer's ``…T10:00:00.123Z`` as milliseconds since the epoch."""
    if not stamp:
        return None
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
