"""The command line: parse arguments, load the configuration once, map errors to exit codes.

Exit status: 0 success; 1 a snapshot failed or was held, or the database is unusable;
2 a configuration or usage error (nothing was done).

Heavy libraries (SQLAlchemy, Alembic, httpx, pydantic, APScheduler, prometheus-client,
rich) are imported inside the commands that need them, so --help, --version and the
reports start quickly; tests/test_cli.py checks what importing this module loads.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from . import __version__, logs, render, types
from .durations import is_duration, parse_duration
from .errors import ConfigError, DatabaseError, InventoryError
from .render import FORMATS

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .config import Settings
    from .progress import Progress

log = logging.getLogger("inventory")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SEVERITIES = [s.value for s in types.SEVERITIES]


def format_option(
    choices: Sequence[str] = FORMATS, help: str = "Output format."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--format`` option (into ``fmt``, default ``table``) with a command's choices."""
    return click.option(
        "--format", "fmt", type=click.Choice(choices), default="table", show_default=True, help=help
    )


class _State:
    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.redactor: logs.RedactingFilter | None = None
        self.log_format = "text"

    def add_secrets(self, settings: Settings) -> None:
        if self.redactor is not None:
            self.redactor.add(settings.secrets())


_state = _State()

config_option = click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Configuration file (default: $INVENTORY_CONFIG, else ./inventory.toml).",
)

database_option = click.option(
    "--database",
    "database",
    metavar="URL",
    help="Read this database (before $INVENTORY_DATABASE_URL and database.url); with no "
    "password in the URL, the configured URL's (same database) or libpq's (PGPASSWORD).",
)

accounts_option = click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="SUBDOMAIN",
    help="Only this account (repeatable).",
)
integrations_option = click.option(
    "--integration",
    "integrations",
    multiple=True,
    metavar="NAME",
    help="Only this integration (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zis-inventory")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe log messages written to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or one JSON object per line.",
)
def cli(log_level: str, log_format: str) -> None:
    """zis-inventory: an inventory of Zendesk Integration Services connections."""
    _state.handler, _state.redactor = logs.setup(log_level.upper(), log_format)
    _state.log_format = log_format


@cli.command()
@config_option
@accounts_option
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
    from . import report, store
    from .config import load_settings
    from .sync import run_sync

    settings = load_settings(config_path)
    _state.add_secrets(settings)
    engine = store.engine_for(settings)
    try:
        migrated = store.ensure_schema(engine, migrate=not no_migrate)
        if migrated:
            log.info("%s", migrated)
        with _signals_as_interrupt() as stop, _progress(progress) as observer:
            result = run_sync(
                settings,
                engine,
                accept_removals=accept_removals,
                compare_all=compare_all,
                accounts=accounts,
                integrations=integrations,
                stop=stop,
                on_settings=_state.add_secrets,
                progress=observer,
            )
            if settings.notify and not no_notify:
                _deliver(settings, engine, stop)
        result.migration = migrated
    finally:
        engine.dispose()
    click.echo(report.sync_summary(result, fmt))
    if strict_discovery:
        from .discovery import strict_exit

        return max(result.exit_code, strict_exit(result.registry))
    return result.exit_code


def _deliver(settings: Settings, engine: Engine, stop: threading.Event) -> None:
    """What is pending in the outbox, once; a delivery problem does not fail the sync."""
    from sqlalchemy.exc import SQLAlchemyError

    from . import store
    from .notify.deliver import deliver_pending

    try:
        log.info("%s", deliver_pending(engine, settings, stop=stop).line())
    except SQLAlchemyError as exc:
        log.error(
            "notifications not delivered: %s; `notify` or the next sync sends them",
            store.describe_db_error(engine, exc),
        )


@contextmanager
def _progress(wanted: bool | None) -> Iterator[Progress]:
    """The live display on stderr when asked for, or by default when stderr is a terminal
    and the logs are text; otherwise an observer that does nothing (the output stays
    exactly what it is without a display)."""
    from .progress import NO_PROGRESS

    if wanted is None:
        wanted = _state.log_format == "text" and sys.stderr.isatty()
    if not wanted:
        yield NO_PROGRESS
        return
    from .terminal import LiveProgress

    redact = _state.redactor.redact if _state.redactor is not None else (lambda text: text)
    with LiveProgress(handler=_state.handler, redact=redact) as live:
        yield live


@contextmanager
def _signals_as_interrupt() -> Iterator[threading.Event]:
    """SIGTERM behaves like Ctrl-C: the run stops, a transaction in flight rolls back,
    and the run is marked failed."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def _handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    from .daemon import Daemon

    return Daemon(config_path, metrics_port=metrics_port, on_settings=_state.add_secrets).run()


# --- reports -----------------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Duration(click.ParamType[Any]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Instant(click.ParamType[Any]):
    """RFC 3339 (2026-06-01T00:00:00Z) or a date (2026-06-01, midnight UTC)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        from .records import parse_timestamp

        text = str(value).strip()
        try:
            if _DATE_RE.match(text):
                return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return parse_timestamp(text)
        except ValueError:
            self.fail(
                f"{value!r} is not a date (2026-06-01) or an RFC 3339 time (2026-06-01T12:00:00Z)",
                param,
                ctx,
            )


class Since(click.ParamType[Any]):
    """A duration back from now (7d) or a point in time."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        if is_duration(str(value)):
            return _now() - Duration().convert(value, param, ctx)
        try:
            return Instant().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not a duration (7d, 12h, 90m), a date or an RFC 3339 time",
                param,
                ctx,
            )


def _now() -> datetime:
    return datetime.now(UTC)


def _csv_choice(
    allowed: Sequence[str],
) -> Callable[[click.Context, click.Parameter, str | None], tuple[str, ...]]:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
        if not value:
            return ()
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        wrong = [v for v in items if v not in allowed]
        if wrong:
            raise click.BadParameter(
                f"{', '.join(wrong)} (choose from {', '.join(allowed)})", ctx, param
            )
        return items

    return convert


TABLE_JSON_CSV = "table (80 columns), json (an array of objects) or csv (with a header row)."


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        config_option,
        database_option,
        accounts_option,
        integrations_option,
        format_option(help=TABLE_JSON_CSV),
    ]
    for option in reversed(options):
        func = option(func)
    return func


type_option = click.option(
    "--type", "types", multiple=True, metavar="TYPE", help="Only this connection type (repeatable)."
)


@contextmanager
def _reader(
    config_path: str | None, *, require_accounts: bool = False, database: str | None = None
) -> Iterator[tuple[Settings, Engine]]:
    """Settings (without tokens) and a read-only engine on a database at the schema head
    (``database``: --database, in place of the configured one)."""
    from dataclasses import replace

    from . import store
    from .config import load_settings

    settings = load_settings(config_path, require_accounts=require_accounts, resolve_tokens=False)
    if database is not None:
        if not database.strip():
            raise ConfigError("--database: must not be empty")
        url = store.named_database(database, settings.database_url)
        settings = replace(settings, database_url=url)
    engine = store.engine_for(settings, readonly=True)
    try:
        store.require_schema(engine)
        yield settings, engine
    finally:
        engine.dispose()


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
    from . import report

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
    with _reader(config_path, database=database) as (_, engine):
        click.echo(report.connections(engine, filters, _now()).render(fmt))
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
    callback=_csv_choice(("added", "removed", "modified", "restored")),
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
    from . import report

    filters = report.ChangeFilter(
        accounts, integrations, types, since, until, kinds, snapshot, as_of
    )
    with _reader(config_path, database=database) as (_, engine):
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
    from . import report

    with _reader(config_path, database=database) as (_, engine):
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
    from . import report
    from .config import select_targets
    from .report.findings import failing, findings_report

    now = _now()
    with _reader(config_path, require_accounts=True, database=database) as (settings, engine):
        targets = [
            (a.subdomain, i.name) for a, i in select_targets(settings, accounts, integrations)
        ]
        found, expiry_failing = report.check(
            engine, targets, expiring_within=expiring_within, max_age=max_age, now=now
        )
        level = fail_on or settings.findings.fail_on
        listed = findings_report(
            engine,
            settings,
            as_of=None,
            accounts=accounts,
            integrations=integrations,
            include_suppressed=False,
            now=now,
        )
    bad = failing(listed.rows, level)
    if bad:
        found.notes.append(
            f"findings: FAILED: {len(bad)} unsuppressed at or above {level} "
            "(python -m inventory findings)"
        )
    click.echo(found.render(fmt))
    return EXIT_FAILED if expiry_failing or bad else EXIT_OK


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
    """List what is wrong in the inventory (rules ZIS001-ZIS010); exit 1 at fail_on."""
    import json

    from .config import load_settings
    from .report import findings
    from .rules import RULES_BY_ID

    for rule_id in (*rules, *([explain] if explain else [])):
        if rule_id not in RULES_BY_ID:
            raise click.UsageError(f"unknown rule {rule_id!r} (known: {', '.join(RULES_BY_ID)})")
    if explain:
        settings = load_settings(config_path, require_accounts=False, resolve_tokens=False)
        click.echo(findings.explain(explain, settings, _registry_known(settings)))
        return EXIT_OK
    now = _now()
    with _reader(config_path, database=database) as (settings, engine):
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
    bad = findings.failing(listed.rows, level)
    if fmt == "ocsf":
        for event in findings.ocsf_events(listed.rows, as_of or now, __version__):
            click.echo(json.dumps(event, sort_keys=True))
        return EXIT_FAILED if bad else EXIT_OK
    if level == "none":
        listed.notes.append("findings: fail_on none: never fails")
    elif bad:
        listed.notes.append(f"findings: FAILED: {len(bad)} unsuppressed at or above {level}")
    else:
        listed.notes.append(f"findings: OK (none unsuppressed at or above {level})")
    click.echo(listed.render(fmt))
    return EXIT_FAILED if bad else EXIT_OK


def _registry_known(settings: Settings) -> bool | None:
    """Whether the database has discovery's integrations table (None: cannot tell)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from . import store

    try:
        engine = store.engine_for(settings, readonly=True)
    except InventoryError:
        return None
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("integrations")
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


@cli.group()
def db() -> None:
    """Database schema: upgrade, show, check invariants, verify the hash chains."""


@contextmanager
def _database(config_path: str | None) -> Iterator[tuple[Settings, Engine]]:
    """Settings (no accounts needed) and an engine on a reachable database."""
    from . import store
    from .config import load_settings

    settings = load_settings(config_path, require_accounts=False)
    engine = store.engine_for(settings)
    try:
        store.check_reachable(engine)
        yield settings, engine
    finally:
        engine.dispose()


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str | None) -> int:
    """Create or migrate the database schema to the head revision."""
    from . import store

    with _database(config_path) as (settings, engine):
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
    from . import store

    with _database(config_path) as (settings, engine):
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
    from .integrity import check_database

    with _reader(config_path) as (_, engine):
        findings = check_database(engine)
    rows = [{"check": f.check, "detail": f.detail} for f in findings]
    # A finding is read whole: the detail names the rows (up to 255-character names).
    table = [render.Column("check", "CHECK", 16), render.Column("detail", "DETAIL", 1000)]
    out = render.Report(("check", "detail"), rows, table, "problem")
    out.notes.append("db check: OK" if not findings else "db check: FAILED")
    click.echo(out.render(fmt))
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
    import json
    from pathlib import Path

    from .store import verify

    heads = None
    if heads_path is not None:
        try:
            heads = verify.read_heads(Path(heads_path).read_text())
        except (ValueError, OSError) as exc:
            raise ConfigError(f"--heads {heads_path}: {exc}") from None
    with _reader(config_path) as (_, engine):
        result = verify.verify(engine, heads)
    rows = verify.problem_rows(result.problems)
    summary = (
        f"db verify: OK ({len(result.chains)} chains, {result.snapshots} snapshots)"
        if not rows
        else f"db verify: FAILED ({len(rows)} problems)"
    )
    if fmt == "json":
        body = {
            "ok": not rows,
            "chains": verify.chain_rows_of(result.chains),
            "snapshots": result.snapshots,
            "problems": rows,
        }
        click.echo(json.dumps(body, indent=2))
        return EXIT_FAILED if rows else EXIT_OK
    keys = ("chain", "snapshot", "table", "row", "column", "problem")
    table = [
        render.Column("chain", "CHAIN", 24),
        render.Column("snapshot", "SNAPSHOT", 8),
        render.Column("table", "TABLE", 19),
        render.Column("row", "ROW", 8),
        render.Column("column", "COLUMN", 19),
        render.Column("problem", "PROBLEM", 1000),
    ]
    out = render.Report(keys, rows, table, "problem")
    if fmt == "csv":
        click.echo(out.render(fmt))
    else:
        starts = sorted(result.chains, key=lambda c: (c.account, c.integration))
        out.notes += [verify.chain_start(c) for c in starts]
        out.notes.append(summary)
        click.echo(out.render(fmt))
    return EXIT_FAILED if rows else EXIT_OK


@db.command("heads")
@config_option
def db_heads(config_path: str | None) -> int:
    """Print every chain's head and one digest over them (JSON), to keep elsewhere."""
    import json

    from .store.chain import chain_heads

    with _reader(config_path) as (_, engine), engine.connect() as conn:
        heads, digest = chain_heads(conn)
    click.echo(json.dumps({"heads": heads, "digest": digest}, indent=2))
    return EXIT_OK


@cli.command()
@config_option
@format_option()
@click.option(
    "--send-test",
    is_flag=True,
    help="Also send a test message to each [[notify]] sink and show its answer.",
)
def doctor(config_path: str | None, fmt: str, send_test: bool) -> int:
    """Check configuration, tokens, database, schema and one request per integration."""
    from .config import load_settings
    from .doctor import diagnose

    settings = load_settings(config_path)
    _state.add_secrets(settings)
    probes = diagnose(settings, send_test=send_test)
    rows = [{"subject": p.subject, "ok": p.ok, "detail": p.detail} for p in probes]
    table = [
        render.Column("subject", "CHECK", 24),
        render.Column("ok", "OK", 3, lambda v: "ok" if v else "NO"),
        render.Column("detail", "DETAIL", 49),
    ]
    out = render.Report(("subject", "ok", "detail"), rows, table, "check")
    failing = [p for p in probes if not p.ok]
    out.notes.append("doctor: OK" if not failing else f"doctor: {len(failing)} problem(s)")
    click.echo(out.render(fmt))
    return EXIT_FAILED if failing else EXIT_OK


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
    from . import store
    from .config import load_settings

    settings = load_settings(
        config_path, require_accounts=False, resolve_tokens=False, resolve_sinks=True
    )
    _state.add_secrets(settings)
    if test_sink is not None:
        from .notify.deliver import send_test

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
    from .notify.deliver import deliver_pending

    engine = store.engine_for(settings)
    try:
        store.require_schema(engine)
        with _signals_as_interrupt() as stop:
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
    callback=_csv_choice(("pending", "sent", "dead")),
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
    from .report.notifications import notifications_report

    with _reader(config_path, database=database) as (_, engine):
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


@cli.command()
@click.option(
    "--database",
    "database_path",
    default="demo.db",
    show_default=True,
    metavar="PATH",
    help="SQLite file the demo writes (replaced if it is a previous demo's).",
)
def demo(database_path: str) -> int:
    """Run the demo: a fake ZIS account on loopback, two syncs, and what changed."""
    from .demo import run_demo

    return run_demo(database_path, echo=click.echo)


@cli.command("discover")
@config_option
@accounts_option
@format_option(
    ["table", "json"],
    help="table, with a TOML snippet for the integrations not configured, or json.",
)
def discover_command(config_path: str | None, accounts: tuple[str, ...], fmt: str) -> int:
    """List each account's integrations from the ZIS registry (admin credentials), say
    which are configured, and print a TOML snippet for the others."""
    from .config import load_settings
    from .discovery import discover

    settings = load_settings(config_path, resolve_tokens=False, resolve_admin=True)
    _state.add_secrets(settings)
    out, code = discover(settings, accounts, fmt)
    click.echo(out)
    return code


class _BackFromAsOf(click.ParamType[Any]):
    """A duration back from --as-of (90d) or a point in time; resolved by the command."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | datetime:
        if isinstance(value, timedelta | datetime):
            return value
        if is_duration(str(value)):
            return Duration().convert(value, param, ctx)
        try:
            return Instant().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not a duration (90d, 12h, 90m), a date or an RFC 3339 time",
                param,
                ctx,
            )


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
    type=_BackFromAsOf(),
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
    from . import evidence

    now = _now()
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
    with _reader(config_path, database=database) as (settings, engine):
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

    from .config import config_path as find

    path, _ = find(config_path)
    return os.path.abspath(path) if path.is_file() else None


@evidence_command.command("verify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def evidence_verify(folder: Path) -> int:
    """Check every file of an evidence pack against its manifest; exit 1 naming a changed,
    missing or extra file."""
    from .evidence import verify

    verdict = verify(folder)
    click.echo("\n".join(verdict.lines))
    return EXIT_OK if verdict.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (never raises for expected errors)."""
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m inventory",
            standalone_mode=False,
        )
        return rv if isinstance(rv, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C (and our SIGTERM) into Abort
        _error("interrupted; the run is marked failed and nothing partial was written")
        return EXIT_FAILED
    except ConfigError as exc:
        _error(f"configuration error: {exc}")
        return EXIT_USAGE
    except DatabaseError as exc:
        _error(f"database error: {exc}")
        return EXIT_FAILED
    except InventoryError as exc:
        _error(f"error: {exc}")
        return EXIT_FAILED
    except Exception as exc:
        sqlalchemy = sys.modules.get("sqlalchemy.exc")  # not loaded: not one of its errors
        if sqlalchemy is None or not isinstance(exc, sqlalchemy.SQLAlchemyError):
            raise
        _error(f"database error: {type(exc).__name__}: {_first_line(exc)}")
        return EXIT_FAILED
    finally:
        if _state.handler is not None:
            logs.teardown(_state.handler)
            _state.handler = _state.redactor = None


def _error(message: str) -> None:
    if _state.redactor is not None:
        message = _state.redactor.redact(message)
    click.echo(message, err=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
