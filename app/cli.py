"""Operator commands: ``flask --app wsgi token …``."""
from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .store import NotSupported, StoreUnavailable


class _StoreCommands(AppGroup):
    """Commands that use the store: one that cannot be reached is one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StoreUnavailable as error:
            raise click.ClickException(f"the store is unavailable: {error}") from None


token_cli = _StoreCommands("token", help="Create, list, top up and disable API tokens.")

DEV_TOKEN = "dev-token"
DEV_BALANCE = 1_000_000


def _store():
    return current_app.extensions["store"]


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
    """Development only: make 'dev-token' usable with at least 1,000,000 CU."""
    token = _store().ensure_token(DEV_TOKEN, DEV_TOKEN, DEV_BALANCE)
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
    """Whether ``flask …`` is loading the app to run one of its commands (click's context
    is set) rather than a server importing it."""
    return click.get_current_context(silent=True) is not None


def register(app: Flask) -> None:
    app.cli.add_command(token_cli)
    app.cli.add_command(store_cli)
