"""`notify` (deliver what the outbox holds that is due, or --test one sink) and
`notifications` (the delivery log)."""

from __future__ import annotations

from datetime import datetime

import click

from ..errors import ConfigError
from . import common
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    TABLE_JSON_CSV,
    accounts_option,
    cli,
    config_option,
    database_option,
    format_option,
    integrations_option,
)
from .params import Instant, Since, csv_choice


@cli.command("notify")
@config_option
@click.option(
    "--test",
    "test_sink",
    metavar="SINK",
    help="Send a test message to this [[notify]] sink and show its answer; nothing else.",
)
def notify_command(config_path: str | None, test_sink: str | None) -> int:
    """Deliver the notifications that are due (for cron set-ups), or --test one sink."""
    from .. import store
    from ..config import load_settings

    settings = load_settings(
        config_path, require_accounts=False, resolve_tokens=False, resolve_sinks=True
    )
    common.state.add_secrets(settings)
    if test_sink is not None:
        from ..notify.deliver import send_test

        sink = settings.sink(test_sink)
        if sink is None:
            names = ", ".join(s.name for s in settings.notify) or "none"
            raise ConfigError(f"--test {test_sink}: not a configured sink (configured: {names})")
        answer = send_test(settings, test_sink)
        state = "ok" if answer.ok else "FAILED"
        click.echo(f"{sink.name} ({sink.kind}, {sink.shown_url}): {answer.describe()}: {state}")
        return EXIT_OK if answer.ok else EXIT_FAILED
    if not settings.notify:
        click.echo("notifications: no [[notify]] sink configured")
        return EXIT_OK
    from ..notify.deliver import deliver_pending

    engine = store.engine_for(settings)
    try:
        store.require_schema(engine)
        with (
            store.database_errors(engine, "cannot deliver notifications"),
            common.signals_as_interrupt() as stop,
        ):
            result = deliver_pending(engine, settings, stop=stop)
    finally:
        engine.dispose()
    click.echo(result.line())
    return EXIT_OK


@cli.command("notifications")
@config_option
@database_option
@accounts_option
@integrations_option
@click.option(
    "--status",
    "statuses",
    callback=csv_choice(("pending", "sent", "dead")),
    metavar="STATUS[,STATUS]",
    help="Only these statuses: pending, sent, dead.",
)
@click.option("--sink", "sinks", multiple=True, metavar="NAME", help="Only this sink (repeatable).")
@click.option(
    "--since",
    type=Since(),
    metavar="WHEN",
    help="Only messages created since: a duration (7d, 12h) or a time.",
)
@click.option(
    "--as-of",
    type=Instant(),
    metavar="TIME",
    help="The log as it stood at TIME: messages created by then, their attempts up to then.",
)
@format_option(help=TABLE_JSON_CSV)
def notifications_command(
    config_path: str | None,
    database: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    statuses: tuple[str, ...],
    sinks: tuple[str, ...],
    since: datetime | None,
    as_of: datetime | None,
    fmt: str,
) -> int:
    """List the delivery log (the notifications outbox), oldest first."""
    from ..report.notifications import notifications_report

    with common.reader(config_path, database=database) as (_, engine):
        out = notifications_report(
            engine,
            status=statuses,
            sinks=sinks,
            since=since,
            as_of=as_of,
            accounts=accounts,
            integrations=integrations,
        )
    click.echo(out.render(fmt))
    return EXIT_OK
