"""What every command shares: the click group and its global options, the logging state,
exit codes, the option builders, the clock and the read-only engine of the reports.

Heavy libraries (SQLAlchemy, Alembic, httpx, pydantic, APScheduler, prometheus-client,
rich) are imported inside the commands that need them, so --help, --version and the
reports start quickly; tests/test_cli.py checks what importing the CLI loads.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from .. import __version__, logs, types
from ..errors import ConfigError
from ..render import FORMATS

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..config import Settings

log = logging.getLogger("inventory")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SEVERITIES = [s.value for s in types.SEVERITIES]
TABLE_JSON_CSV = "table (80 columns), json (an array of objects) or csv (with a header row)."


class State:
    """The logging set up by the group's options, and the secrets its redactor masks."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.redactor: logs.RedactingFilter | None = None
        self.log_format = "text"

    def add_secrets(self, settings: Settings) -> None:
        if self.redactor is not None:
            self.redactor.add(settings.secrets())


state = State()


def now() -> datetime:
    """The commands' clock; commands call it as ``common.now()`` so a test can set it."""
    return datetime.now(UTC)


def format_option(
    choices: Sequence[str] = FORMATS, help: str = "Output format."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--format`` option (into ``fmt``, default ``table``) with a command's choices."""
    return click.option(
        "--format", "fmt", type=click.Choice(choices), default="table", show_default=True, help=help
    )


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


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config, --database, --account, --integration and --format (table/json/csv)."""
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
    state.handler, state.redactor = logs.setup(log_level.upper(), log_format)
    state.log_format = log_format


@contextmanager
def reader(
    config_path: str | None,
    *,
    require_accounts: bool = False,
    database: str | None = None,
    doing: str = "cannot read",
) -> Iterator[tuple[Settings, Engine]]:
    """Settings (without tokens) and a read-only engine on a database at the schema head
    (``database``: --database, in place of the configured one); a database error inside
    becomes a DatabaseError saying ``doing``."""
    from dataclasses import replace

    from .. import store
    from ..config import load_settings

    settings = load_settings(config_path, require_accounts=require_accounts, resolve_tokens=False)
    if database is not None:
        if not database.strip():
            raise ConfigError("--database: must not be empty")
        url = store.named_database(database, settings.database_url)
        settings = replace(settings, database_url=url)
    engine = store.engine_for(settings, readonly=True)
    try:
        with store.database_errors(engine, doing):
            store.require_schema(engine)
            yield settings, engine
    finally:
        engine.dispose()


@contextmanager
def signals_as_interrupt() -> Iterator[threading.Event]:
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


def error(message: str) -> None:
    """An error line on stderr, with every known secret masked."""
    if state.redactor is not None:
        message = state.redactor.redact(message)
    click.echo(message, err=True)
