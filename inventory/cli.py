"""The command line: parse arguments, load the configuration once, map errors to exit codes.

Exit status: 0 success; 1 a snapshot failed or was held, or the database is unusable;
2 a configuration or usage error (nothing was done).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from types import FrameType
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, logs, store
from .config import Settings, load_settings
from .errors import ConfigError, DatabaseError, InventoryError
from .sync import RunResult, run_sync

log = logging.getLogger("inventory")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _State:
    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.redactor: logs.RedactingFilter | None = None

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


@cli.command()
@config_option
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="SUBDOMAIN",
    help="Only this account (repeatable).",
)
@click.option(
    "--integration",
    "integrations",
    multiple=True,
    metavar="NAME",
    help="Only this integration (repeatable).",
)
@click.option(
    "--accept-removals", is_flag=True, help="Apply snapshots the mass-removal guard would hold."
)
@click.option(
    "--no-migrate", is_flag=True, help="Refuse to run on a database that is not at the schema head."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Closing summary on stdout.",
)
def sync(
    config_path: str | None,
    accounts: tuple[str, ...],
    integrations: tuple[str, ...],
    accept_removals: bool,
    no_migrate: bool,
    fmt: str,
) -> int:
    """Fetch every configured integration's connections and record what changed."""
    settings = load_settings(config_path)
    _state.add_secrets(settings)
    engine = store.make_engine(
        settings.database_url, busy_timeout=settings.database.busy_timeout_seconds
    )
    try:
        migrated = store.ensure_schema(engine, migrate=not no_migrate)
        if migrated:
            log.info("%s", migrated)
        with _signals_as_interrupt() as stop:
            result = run_sync(
                settings,
                engine,
                accept_removals=accept_removals,
                accounts=accounts,
                integrations=integrations,
                stop=stop,
            )
        result.migration = migrated
    finally:
        engine.dispose()
    click.echo(render_summary(result, fmt))
    return result.exit_code


def render_summary(result: RunResult, fmt: str) -> str:
    if fmt == "json":
        data: dict[str, Any] = {
            "run_id": result.run_id,
            "status": result.status,
            "migration": result.migration,
            "drift": {k: sorted(v) for k, v in sorted(result.drift.items())},
            "snapshots": [
                {k: (round(v, 3) if k == "seconds" else v) for k, v in asdict(s).items()}
                for s in result.snapshots
            ],
        }
        return json.dumps(data, indent=2)
    headers = [
        "ACCOUNT",
        "INTEGRATION",
        "STATUS",
        "ADDED",
        "REMOVED",
        "MODIFIED",
        "RESTORED",
        "CONNECTIONS",
        "PAGES",
        "SECONDS",
    ]
    rows = [
        [
            s.account,
            s.integration,
            s.status,
            str(s.added),
            str(s.removed),
            str(s.modified),
            str(s.restored),
            str(s.connection_count),
            str(s.pages),
            f"{s.seconds:.2f}",
        ]
        for s in result.snapshots
    ]
    lines = format_table(headers, rows)
    complete = sum(1 for s in result.snapshots if s.status == "complete")
    lines.append(
        f"run {result.run_id}: {result.status} "
        f"({complete} of {len(result.snapshots)} snapshots complete)"
    )
    for s in result.snapshots:
        if s.error:
            lines.append(f"  {s.status}: {s.error}")
        elif s.superseded_by is not None:
            lines.append(
                f"  {s.account}/{s.integration}: not applied, snapshot {s.superseded_by} "
                "saw the account later"
            )
    if result.migration:
        lines.append(f"  {result.migration}")
    if result.drift:
        for type_name, places in sorted(result.drift.items()):
            lines.append(
                f"  drift: unknown connection type {type_name!r} in {', '.join(sorted(places))}"
            )
    return "\n".join(lines)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


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


@cli.group()
def db() -> None:
    """Database schema: upgrade to the current revision, or show it."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str | None) -> int:
    """Create or migrate the database schema to the head revision."""
    settings = load_settings(config_path, require_accounts=False)
    engine = store.make_engine(
        settings.database_url, busy_timeout=settings.database.busy_timeout_seconds
    )
    try:
        store.check_reachable(engine)
        before, after = store.upgrade(engine)
    finally:
        engine.dispose()
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
    settings = load_settings(config_path, require_accounts=False)
    engine = store.make_engine(
        settings.database_url, busy_timeout=settings.database.busy_timeout_seconds
    )
    try:
        store.check_reachable(engine)
        current = store.current_revision(engine)
    finally:
        engine.dispose()
    head = store.head_revision()
    state = "up to date" if current == head else "needs 'db upgrade'"
    click.echo(
        f"{store.safe_url(settings.database_url)}: "
        f"revision {current or 'none (empty)'}, head {head}: {state}"
    )
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
    except SQLAlchemyError as exc:
        _error(f"database error: {type(exc).__name__}: {_first_line(exc)}")
        return EXIT_FAILED
    except InventoryError as exc:
        _error(f"error: {exc}")
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
