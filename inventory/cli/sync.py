"""`sync` (one run, then the notifications it queued) and `daemon` (runs on the schedule
until stopped); the live progress display is chosen here."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ..errors import DatabaseError
from . import common
from .common import cli, config_option, format_option, integrations_option, log, state

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..config import Settings
    from ..progress import Progress


@cli.command()
@config_option
@common.accounts_option
@integrations_option
@click.option(
    "--accept-removals", is_flag=True, help="Apply snapshots the mass-removal guard would hold."
)
@click.option(
    "--compare-all",
    is_flag=True,
    help="Compare every stored row, also of integrations whose pages are the same as their "
    "last applied snapshot's (after the database was edited by hand).",
)
@click.option(
    "--no-migrate", is_flag=True, help="Refuse to run on a database that is not at the schema head."
)
@format_option(["table", "json"], help="Closing summary on stdout.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress on stderr (default: when stderr is a terminal and logs are text).",
)
@click.option(
    "--strict-discovery",
    is_flag=True,
    help="Exit 1 when an account's registry (admin) could not be listed.",
)
@click.option(
    "--no-notify",
    is_flag=True,
    help="Leave pending notifications in the outbox (`notify` or the daemon sends them).",
)
def sync(
    config_path: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    accept_removals: bool,
    compare_all: bool,
    no_migrate: bool,
    fmt: str,
    progress: bool | None,
    strict_discovery: bool,
    no_notify: bool,
) -> int:
    """Fetch every configured integration's connections and record what changed."""
    from .. import report, store
    from ..config import load_settings
    from ..sync import run_sync

    settings = load_settings(config_path)
    state.add_secrets(settings)
    engine = store.engine_for(settings)
    try:
        with store.database_errors(engine, "cannot sync"):
            migrated = store.ensure_schema(engine, migrate=not no_migrate)
            if migrated:
                log.info("%s", migrated)
            with common.signals_as_interrupt() as stop, _progress(progress) as observer:
                result = run_sync(
                    settings,
                    engine,
                    accept_removals=accept_removals,
                    compare_all=compare_all,
                    accounts=accounts,
                    integrations=integrations,
                    stop=stop,
                    on_settings=state.add_secrets,
                    progress=observer,
                )
                if settings.notify and not no_notify:
                    _deliver(settings, engine, stop)
        result.migration = migrated
    finally:
        engine.dispose()
    click.echo(report.sync_summary(result, fmt))
    if strict_discovery:
        from ..discovery import strict_exit

        return max(result.exit_code, strict_exit(result.registry))
    return result.exit_code


def _deliver(settings: Settings, engine: Engine, stop: threading.Event) -> None:
    """What is pending in the outbox, once; a delivery problem does not fail the sync."""
    from .. import store
    from ..notify.deliver import deliver_pending

    try:
        with store.database_errors(engine, "notifications not delivered"):
            log.info("%s", deliver_pending(engine, settings, stop=stop).line())
    except DatabaseError as exc:
        log.error("%s; `notify` or the next sync sends them", exc)


@contextmanager
def _progress(wanted: bool | None) -> Iterator[Progress]:
    """The live display on stderr when asked for, or by default when stderr is a terminal
    and the logs are text; otherwise an observer that does nothing (the output stays
    exactly what it is without a display)."""
    from ..progress import NO_PROGRESS

    if wanted is None:
        wanted = state.log_format == "text" and sys.stderr.isatty()
    if not wanted:
        yield NO_PROGRESS
        return
    from ..terminal import LiveProgress

    redact = state.redactor.redact if state.redactor is not None else (lambda text: text)
    with LiveProgress(handler=state.handler, redact=redact) as live:
        yield live


@cli.command()
@config_option
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve /metrics and /healthz on this port (default: daemon.metrics_port; off).",
)
def daemon(config_path: str | None, metrics_port: int | None) -> int:
    """Run syncs on the [schedule] until SIGTERM/SIGINT; SIGHUP re-reads the config."""
    from ..daemon import Daemon

    return Daemon(config_path, metrics_port=metrics_port, on_settings=state.add_secrets).run()
