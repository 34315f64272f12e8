"""`db`: migrate the schema (upgrade), show its revision (current), check the tables'
invariants (check), verify the hash chains (verify) and print their heads (heads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError
from . import common
from .common import EXIT_FAILED, EXIT_OK, cli, config_option, format_option

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..config import Settings


@cli.group()
def db() -> None:
    """Database schema: upgrade, show, check invariants, verify the hash chains."""


@contextmanager
def _database(config_path: str | None, doing: str) -> Iterator[tuple[Settings, Engine]]:
    """Settings (no accounts needed) and an engine on a reachable database; a database
    error inside becomes a DatabaseError saying ``doing``."""
    from .. import store
    from ..config import load_settings

    settings = load_settings(config_path, require_accounts=False)
    engine = store.engine_for(settings)
    try:
        store.check_reachable(engine)
        with store.database_errors(engine, doing):
            yield settings, engine
    finally:
        engine.dispose()


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str | None) -> int:
    """Create or migrate the database schema to the head revision."""
    from .. import store

    with _database(config_path, "cannot migrate the schema") as (settings, engine):
        before, after = store.upgrade(engine)
    where = store.safe_url(settings.database_url)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: migrated from {before or 'empty'} to {after}")
    return EXIT_OK


@db.command("current")
@config_option
def db_current(config_path: str | None) -> int:
    """Show the database's schema revision and the head this version expects."""
    from .. import store

    with _database(config_path, "cannot read the schema revision") as (settings, engine):
        current = store.current_revision(engine)
    head = store.head_revision()
    state = "up to date" if current == head else "needs 'db upgrade'"
    click.echo(
        f"{store.safe_url(settings.database_url)}: "
        f"revision {current or 'none (empty)'}, head {head}: {state}"
    )
    return EXIT_OK


@db.command("check")
@config_option
@format_option()
def db_check(config_path: str | None, fmt: str) -> int:
    """Check the tables' invariants; exit 1 when one is broken."""
    from ..integrity import check_database
    from ..report.integrity import check_output

    with common.reader(config_path) as (_, engine):
        findings = check_database(engine)
    click.echo(check_output(findings, fmt))
    return EXIT_FAILED if findings else EXIT_OK


@db.command("verify")
@config_option
@format_option()
@click.option(
    "--heads",
    "heads_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Also prove nothing up to these heads (a `db heads` output) was rewritten or removed.",
)
def db_verify(config_path: str | None, fmt: str, heads_path: str | None) -> int:
    """Recompute every snapshot hash chain; exit 1 naming each first broken link."""
    from pathlib import Path

    from ..report.integrity import verify_output
    from ..store import verify

    heads = None
    if heads_path is not None:
        try:
            heads = verify.read_heads(Path(heads_path).read_text())
        except (ValueError, OSError) as exc:
            raise ConfigError(f"--heads {heads_path}: {exc}") from None
    with common.reader(config_path) as (_, engine):
        result = verify.verify(engine, heads)
    click.echo(verify_output(result, fmt))
    return EXIT_FAILED if result.problems else EXIT_OK


@db.command("heads")
@config_option
def db_heads(config_path: str | None) -> int:
    """Print every chain's head and one digest over them (JSON), to keep elsewhere."""
    import json

    from ..store.chain import chain_heads

    with common.reader(config_path) as (_, engine), engine.connect() as conn:
        heads, digest = chain_heads(conn)
    click.echo(json.dumps({"heads": heads, "digest": digest}, indent=2))
    return EXIT_OK
