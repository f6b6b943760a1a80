"""Operator commands: ``runner …`` (the console script), the same as ``flask --app wsgi …``.

A command finds its store as the service does: ``RUNNER_DATABASE_URL``, else the SQLite
file at ``RUNNER_STORE_PATH`` (default ``var/runner.sqlite3``), a relative path being
relative to the current directory. It never makes a directory for a store: an SQLite
store whose directory does not exist is an error naming the path tried (the command
runs elsewhere than the service, or without its settings), except for ``token
seed-dev``, which sets up a development store. A command logs to stderr only: the
service's log file needs not be writable by whoever runs it.
"""
from __future__ import annotations

import os

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo

from . import config
from .store import NotSupported, SchemaTooNew, StoreUnavailable
from .version import __version__


class _StoreCommands(AppGroup):
    """Commands that use the store: one that cannot be reached is one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StoreUnavailable as error:
            raise click.ClickException(f"the store is unavailable: {error}") from None
        except SchemaTooNew as error:
            raise click.ClickException(str(error)) from None


token_cli = _StoreCommands("token", help="Create, list, top up and disable API tokens.")

DEV_TOKEN = "dev-token"
DEV_BALANCE = 1_000_000


def _store(create: bool = False):
    """The store, its schema up to date; ``create``: an SQLite store may be made in a
    directory that does not exist yet."""
    store = current_app.extensions["store"]
    if not current_app.extensions.get("store_migrated"):
        if not create:
            _check_location(current_app.config)
        store.migrate()
        current_app.extensions["store_migrated"] = True
    return store


def _check_location(settings) -> None:
    """An SQLite store's directory exists, and the command runs as the store's owner (or
    as an owner may); else a one-line error naming the path."""
    kind, where = config.parse_database_url(config.database_url(settings))
    if kind != "sqlite":
        return
    path = os.path.abspath(where)
    named = ("RUNNER_DATABASE_URL" if settings.get("DATABASE_URL")
             else f"RUNNER_STORE_PATH={settings['STORE_PATH']}")
    if not os.path.isdir(os.path.dirname(path)):
        raise click.ClickException(
            f"no store at {path}: its directory does not exist ({named}, relative to the "
            "current directory). Run the command where the service runs, or set "
            "RUNNER_DATABASE_URL or RUNNER_STORE_PATH to the service's store.")
    # root writing a store another user owns would leave root's files beside it (the
    # journal), which the service could not open afterwards.
    if os.path.exists(path) and os.geteuid() == 0 and os.stat(path).st_uid != 0:
        raise click.ClickException(
            f"the store {path} belongs to another user: run the command as that user "
            "(sudo -u <user> …), so that every file of the store stays theirs.")


@token_cli.command("create")
@click.argument("name")
@click.option("--balance", type=click.IntRange(0), default=0, show_default=True,
              help="Starting compute-unit balance.")
def create(name: str, balance: int) -> None:
    """Create a token and print its secret (shown only this once)."""
    if any(t.name == name for t in _store().tokens()):
        raise click.ClickException(f"a token named {name!r} exists already")
    click.echo(_store().create_token(name, balance))


@token_cli.command("list")
def list_tokens() -> None:
    """List tokens with their balances."""
    tokens = _store().tokens()
    click.echo(f"{'NAME':<24} {'BALANCE':>12}  STATE")
    for token in tokens:
        state = "enabled" if token.enabled else "disabled"
        click.echo(f"{token.name:<24} {token.balance:>12}  {state}")


@token_cli.command("top-up")
@click.argument("name")
@click.argument("amount", type=click.IntRange(1))
def top_up(name: str, amount: int) -> None:
    """Add AMOUNT compute units to a token's balance."""
    token = _store().top_up(name, amount)
    if token is None:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"{name}: balance {token.balance}")


@token_cli.command("disable")
@click.argument("name")
def disable(name: str) -> None:
    """Disable a token (its requests get 403)."""
    if not _store().set_enabled(name, False):
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"{name}: disabled")


@token_cli.command("enable")
@click.argument("name")
def enable(name: str) -> None:
    """Enable a disabled token again."""
    if not _store().set_enabled(name, True):
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"{name}: enabled")


@token_cli.command("seed-dev")
def seed_dev() -> None:
    """Development only: make 'dev-token' usable with at least 1,000,000 CU (the store
    is created, with its directory, if need be)."""
    token = _store(create=True).ensure_token(DEV_TOKEN, DEV_TOKEN, DEV_BALANCE)
    click.echo(f"{DEV_TOKEN}: balance {token.balance}")


store_cli = _StoreCommands("store", help="Maintain the store.")


@store_cli.command("backup")
@click.argument("target", type=click.Path(dir_okay=False))
def backup(target: str) -> None:
    """Write a consistent copy of the store to TARGET while the service runs."""
    try:
        _store().backup(target)
    except NotSupported as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"backed up to {target}")


@store_cli.command("prune")
def prune() -> None:
    """Delete finished runs older than RUNNER_RUN_RETENTION_DAYS now."""
    deleted = _store().prune(current_app.config["RUN_RETENTION_DAYS"] * 86400)
    click.echo(f"deleted {deleted} run(s)")


def building_for_a_command() -> bool:
    """Whether ``flask …`` or ``runner …`` is loading the app to run one of its commands
    (click's context is set) rather than a server importing it (``flask run`` serves)."""
    context = click.get_current_context(silent=True)
    return context is not None and context.info_name != "run"


def warn_unknown_variables() -> None:
    """A ``RUNNER_`` variable that names no setting, on stderr (``config.unknown_variables``)."""
    for warning in config.unknown_variables():
        click.echo(f"warning: {warning}", err=True)


def _commands() -> list[click.Command]:
    from .run_command import run_workflow

    return [token_cli, store_cli, run_workflow]


def register(app: Flask) -> None:
    for command in _commands():
        app.cli.add_command(command)


def _app_for_a_command() -> Flask:
    from . import create_app

    try:
        return create_app()
    except config.SettingError as error:  # one line, no traceback
        raise click.ClickException(f"cannot start: {error}") from None


def main() -> None:
    """The ``runner`` console script (setup.cfg): the commands of ``flask --app wsgi``,
    wherever it is run from; the app is built only for a command that needs it."""
    group = click.Group("runner", commands=_commands(), help=(
        "The workflow runner's commands: tokens, the store, and running a workflow file. "
        "Settings come from RUNNER_* variables, as for the service; relative paths "
        "(RUNNER_STORE_PATH, default var/runner.sqlite3) are relative to the current "
        "directory."))
    click.version_option(__version__, prog_name="runner")(group)
    group.main(prog_name="runner",
               obj=ScriptInfo(create_app=_app_for_a_command, set_debug_flag=False))
