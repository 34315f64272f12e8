"""The auditors' reports: `connections`, `clients` (the OAuth clients), `changes`,
`snapshots`, and `check` (exit 1 on an expired or expiring token, a stale integration or
a finding at fail_on)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from . import common
from .common import EXIT_FAILED, EXIT_OK, SEVERITIES, cli, report_options
from .params import Duration, Instant, Since, csv_choice

type_option = click.option(
    "--type", "types", multiple=True, metavar="TYPE", help="Only this connection type (repeatable)."
)


@cli.command("connections")
@report_options
@type_option
@click.option("--include-removed", is_flag=True, help="Also list removed connections (marked *).")
@click.option(
    "--expiring-within",
    type=Duration(),
    metavar="DURATION",
    help="Only tokens expiring within this time (30d, 12h, 90m).",
)
@click.option(
    "--expired", is_flag=True, help="Only tokens already expired (with --expiring-within: either)."
)
@click.option(
    "--not-updated-for",
    type=Duration(),
    metavar="DURATION",
    help="Only connections whose updated_at is older (those with none are listed apart).",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="The inventory as it was at TIME (from connection_versions).",
)
def connections_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    types: tuple[str, ...],
    include_removed: bool,
    expiring_within: timedelta | None,
    expired: bool,
    not_updated_for: timedelta | None,
    as_of: datetime | None,
) -> int:
    """List connections: present ones, or as they were at a time."""
    from .. import report

    if as_of is not None and include_removed:
        raise click.UsageError(
            "--as-of and --include-removed cannot be combined: "
            "as of a time, a connection either existed or not"
        )
    filters = report.ConnectionFilter(
        accounts,
        integrations,
        types,
        include_removed,
        expiring_within,
        expired,
        not_updated_for,
        as_of,
    )
    with common.reader(config_path, database=database) as (_, engine):
        click.echo(report.connections(engine, filters, common.now()).render(fmt))
    return EXIT_OK


@cli.command("clients")
@report_options
@click.option("--include-removed", is_flag=True, help="Also list removed clients (marked *).")
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="The OAuth clients as they were at TIME (from oauth_client_versions).",
)
def clients_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    include_removed: bool,
    as_of: datetime | None,
) -> int:
    """List the OAuth clients ZIS keeps (never their client id or secret): present ones,
    or as they were at a time."""
    from .. import report

    if as_of is not None and include_removed:
        raise click.UsageError(
            "--as-of and --include-removed cannot be combined: "
            "as of a time, a client either existed or not"
        )
    with common.reader(config_path, database=database) as (_, engine):
        rows = report.clients(
            engine,
            accounts=accounts,
            integrations=integrations,
            include_removed=include_removed,
            as_of=as_of,
        )
        click.echo(rows.render(fmt))
    return EXIT_OK


@cli.command("changes")
@report_options
@type_option
@click.option(
    "--since",
    type=Since(),
    metavar="WHEN",
    help="From this time on: a duration back from now (7d) or a date/time.",
)
@click.option(
    "--until",
    type=Since(),
    metavar="WHEN",
    help="Before this time: a duration back from now or a date/time.",
)
@click.option(
    "--change",
    "kinds",
    callback=csv_choice(("added", "removed", "modified", "restored")),
    metavar="KINDS",
    help="Only these kinds, comma-separated: added,removed,modified,restored.",
)
@click.option(
    "--snapshot",
    type=click.IntRange(min=1),
    metavar="ID",
    help="Only the changes of this snapshot.",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="Up to and including TIME: the log as it stood at TIME (as connections --as-of).",
)
def changes_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    types: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    kinds: tuple[str, ...],
    snapshot: int | None,
    as_of: datetime | None,
) -> int:
    """List the change log (connection_changes), oldest first."""
    from .. import report

    filters = report.ChangeFilter(
        accounts, integrations, types, since, until, kinds, snapshot, as_of
    )
    with common.reader(config_path, database=database) as (_, engine):
        click.echo(report.changes(engine, filters).render(fmt))
    return EXIT_OK


@cli.command("snapshots")
@report_options
@click.option("--failed", is_flag=True, help="Only snapshots that failed or were held.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many, newest first.",
)
@click.option("--all", "every", is_flag=True, help="Every snapshot (no --limit).")
@click.option(
    "--since",
    type=Since(),
    metavar="WHEN",
    help="Only snapshots started at or after this: a duration back from now (7d) or a time.",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="Only snapshots started at or before TIME.",
)
def snapshots_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    failed: bool,
    limit: int,
    every: bool,
    since: datetime | None,
    as_of: datetime | None,
) -> int:
    """List recent snapshots with status, counts, pages, duration and error."""
    from .. import report

    with common.reader(config_path, database=database) as (_, engine):
        click.echo(
            report.snapshots(
                engine,
                accounts=accounts,
                integrations=integrations,
                failed=failed,
                limit=None if every else limit,
                since=since,
                as_of=as_of,
            ).render(fmt)
        )
    return EXIT_OK


@cli.command("check")
@report_options
@click.option(
    "--expiring-within",
    type=Duration(),
    default="14d",
    show_default=True,
    metavar="DURATION",
    help="Alert on tokens expiring within this time.",
)
@click.option(
    "--max-age",
    type=Duration(),
    default="2d",
    show_default=True,
    metavar="DURATION",
    help="Alert on configured integrations with no complete snapshot this recent.",
)
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "none"]),
    metavar="LEVEL",
    help="Also fail on unsuppressed findings at or above LEVEL (low, medium, high, critical) "
    "or never (none); default: findings.fail_on.",
)
def check_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    expiring_within: timedelta,
    max_age: timedelta,
    fail_on: str | None,
) -> int:
    """Exit 1 when a token has expired or expires soon, an integration is stale, or a
    finding is at or above fail_on."""
    from ..report.verdicts import check_verdict

    now = common.now()
    with common.reader(config_path, require_accounts=True, database=database) as (settings, engine):
        found, failed = check_verdict(
            engine,
            settings,
            accounts=accounts,
            integrations=integrations,
            expiring_within=expiring_within,
            max_age=max_age,
            fail_on=fail_on,
            now=now,
        )
    click.echo(found.render(fmt))
    return EXIT_FAILED if failed else EXIT_OK
