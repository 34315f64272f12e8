"""`evidence` (write the auditors' pack: report.html, CSVs and a manifest of hashes) and
`evidence verify` (check a pack against its manifest)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from . import common
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    accounts_option,
    cli,
    config_option,
    database_option,
    integrations_option,
)
from .params import BackFromAsOf, Duration, Instant


@cli.group("evidence", invoke_without_command=True)
@config_option
@database_option
@accounts_option
@integrations_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Folder to write the pack into; it must not exist or be empty.",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="The population as of TIME and the end of the period (default: now).",
)
@click.option(
    "--since",
    type=BackFromAsOf(),
    metavar="WHEN",
    help="Start of the period: a time, or a duration back from --as-of (90d). "
    "Default: the first snapshot.",
)
@click.option(
    "--max-age",
    type=Duration(),
    default="2d",
    show_default=True,
    metavar="DURATION",
    help="An integration whose last complete snapshot is older (at --as-of) is stale.",
)
@click.pass_context
def evidence_command(
    ctx: click.Context,
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    out: Path | None,
    as_of: datetime | None,
    since: timedelta | datetime | None,
    max_age: timedelta,
) -> int:
    """Write the evidence pack for auditors: report.html, CSVs and a manifest of hashes."""
    if ctx.invoked_subcommand is not None:
        if out is not None or as_of is not None or since is not None:
            raise click.UsageError(f"evidence {ctx.invoked_subcommand} takes only its DIR")
        return EXIT_OK
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    from .. import evidence

    now = common.now()
    at = as_of if as_of is not None else now
    start = at - since if isinstance(since, timedelta) else since
    if at > now:
        raise click.UsageError("--as-of is in the future: the pack would change as syncs run")
    if start is not None and start > at:
        raise click.UsageError("--since is after --as-of")
    try:
        evidence.check_out_dir(out)
    except evidence.PackError as exc:
        raise click.UsageError(str(exc)) from None
    scope = evidence.Scope(at, start, accounts, integrations, max_age)
    with common.reader(config_path, database=database) as (settings, engine):
        pack = evidence.gather(engine, settings, scope, now, _config_read(config_path))
    parameters: dict[str, Any] = {
        "out": str(out),
        "as_of": at,
        "since": start,
        "accounts": list(accounts),
        "integrations": list(integrations),
        "max_age": max_age,
        "config": config_path,
    }
    command = evidence.command_line(out, pack)
    try:
        digest = evidence.write_pack(out, pack, parameters, command)
    except evidence.PackError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(evidence.written_summary(out, pack, digest))
    return EXIT_OK


def _config_read(config_path: str | None) -> str | None:
    """The configuration file a command read (--config, $INVENTORY_CONFIG or
    ./inventory.toml), as an absolute path; None when there was none."""
    import os

    from ..config import config_path as find

    path, _ = find(config_path)
    return os.path.abspath(path) if path.is_file() else None


@evidence_command.command("verify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def evidence_verify(folder: Path) -> int:
    """Check every file of an evidence pack against its manifest; exit 1 naming a changed,
    missing or extra file."""
    from ..evidence import verify

    verdict = verify(folder)
    click.echo("\n".join(verdict.lines))
    return EXIT_OK if verdict.ok else EXIT_FAILED
