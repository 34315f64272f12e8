"""`findings`: what is wrong in the inventory (rules ZIS001-ZIS013) as a report or as
OCSF events, exit 1 at fail_on; `--explain` shows one rule."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from .. import __version__
from ..errors import DatabaseError, InventoryError
from ..render import FORMATS
from . import common
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    SEVERITIES,
    accounts_option,
    cli,
    config_option,
    database_option,
    format_option,
    integrations_option,
)
from .params import Instant

if TYPE_CHECKING:
    from ..config import Settings


@cli.command("findings")
@config_option
@database_option
@accounts_option
@integrations_option
@format_option(
    [*FORMATS, "ocsf"],
    help="table, json, csv, or ocsf (one OCSF Compliance Finding JSON object per line).",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="Evaluate the rules over the inventory as it was at TIME (from connection_versions).",
)
@click.option(
    "--rule", "rules", multiple=True, metavar="ID", help="Only this rule (repeatable): ZIS001."
)
@click.option(
    "--severity",
    type=click.Choice(SEVERITIES),
    metavar="LEVEL",
    help="Only findings at or above LEVEL: low, medium, high, critical.",
)
@click.option("--include-suppressed", is_flag=True, help="Also list suppressed findings (apart).")
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "none"]),
    metavar="LEVEL",
    help="Exit 1 on an unsuppressed finding at or above LEVEL, or never (none); "
    "default: findings.fail_on.",
)
@click.option(
    "--explain",
    metavar="ID",
    help="Show a rule's rationale, remediation and the parameters in force, and exit.",
)
def findings_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    fmt: str,
    as_of: datetime | None,
    rules: tuple[str, ...],
    severity: str | None,
    include_suppressed: bool,
    fail_on: str | None,
    explain: str | None,
) -> int:
    """List what is wrong in the inventory (rules ZIS001-ZIS013); exit 1 at fail_on."""
    import json

    from ..config import load_settings
    from ..report import findings
    from ..report.verdicts import findings_verdict
    from ..rules import RULES_BY_ID

    for rule_id in (*rules, *([explain] if explain else [])):
        if rule_id not in RULES_BY_ID:
            raise click.UsageError(f"unknown rule {rule_id!r} (known: {', '.join(RULES_BY_ID)})")
    if explain:
        settings = load_settings(config_path, require_accounts=False, resolve_tokens=False)
        click.echo(findings.explain(explain, settings, _registry_known(settings)))
        return EXIT_OK
    now = common.now()
    with common.reader(config_path, database=database) as (settings, engine):
        listed = findings.findings_report(
            engine,
            settings,
            as_of=as_of,
            accounts=accounts,
            integrations=integrations,
            include_suppressed=include_suppressed,
            rules=rules,
            min_severity=severity,
            now=now,
        )
    level = fail_on or settings.findings.fail_on
    if fmt == "ocsf":
        for event in findings.ocsf_events(listed.rows, as_of or now, __version__):
            click.echo(json.dumps(event, sort_keys=True))
        return EXIT_FAILED if findings.failing(listed.rows, level) else EXIT_OK
    failed = findings_verdict(listed, level)
    click.echo(listed.render(fmt))
    return EXIT_FAILED if failed else EXIT_OK


def _registry_known(settings: Settings) -> bool | None:
    """Whether the database has discovery's integrations table (None: cannot tell)."""
    from .. import store
    from ..store.schema import has_table

    try:
        engine = store.engine_for(settings, readonly=True)
    except InventoryError:
        return None
    try:
        return has_table(engine, "integrations")
    except DatabaseError:
        return None
    finally:
        engine.dispose()
