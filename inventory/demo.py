"""`python -m inventory demo`: a sample account on the fake ZIS server (connections and
OAuth clients), two syncs into a SQLite file with realistic changes in between (one of
them an OAuth client's token_url redirected to another host), then what the tables say."""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import models as m
from . import store
from .config import (
    Account,
    AdminCredential,
    DatabaseSettings,
    Integration,
    ScheduleSettings,
    Settings,
    SyncSettings,
)
from .discovery import discover
from .render import format_table
from .report import sync_summary
from .results import RunResult
from .secret import Secret
from .sync import run_sync
from .testing import (
    ACCOUNT,
    FakeZisServer,
    add_sample_clients,
    change_account,
    redirect_client,
    sample_account,
    sample_registry,
)

LOOK_FURTHER = """\
Look further with any SQLite client, e.g. `sqlite3 {db}`:

  -- what exists now, by integration and type
  SELECT integration, type, count(*) FROM connections
   WHERE removed_at IS NULL GROUP BY integration, type;

  -- OAuth tokens expiring within 30 days
  SELECT integration, name, token_expiry FROM connections
   WHERE removed_at IS NULL AND token_expiry IS NOT NULL
     AND token_expiry < datetime('now', '+30 days') ORDER BY token_expiry;

  -- every change, newest first
  SELECT detected_at, integration, type, name, change, field, old_value, new_value
    FROM connection_changes ORDER BY id DESC;

  -- OAuth clients by the host their token_url sends the client secret to
  SELECT integration, name, token_url FROM oauth_clients
   WHERE removed_at IS NULL ORDER BY token_url;

  -- open findings, the most severe first
  SELECT rule, severity, integration, type, name, detail FROM findings
   WHERE resolved_at IS NULL
   ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1
            WHEN 'medium' THEN 2 ELSE 3 END, rule;

  -- integrations the registry lists that nobody inventories
  SELECT account, name, description FROM integrations
   WHERE removed_at IS NULL AND NOT configured;

  -- the inventory as it was after the first sync
  SELECT integration, type, name, allowed_domain FROM connection_versions
   WHERE valid_from <= (SELECT finished_at FROM sync_runs WHERE id = 1)
     AND (valid_to IS NULL OR valid_to > (SELECT finished_at FROM sync_runs WHERE id = 1));
"""


def _prepare_file(path: Path) -> str | None:
    """Replace a previous demo's database; refuse to touch anything else."""
    if not path.exists():
        return None
    tables: set[str] = set()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        pass
    if "sync_runs" not in tables and path.stat().st_size > 0:
        return f"{path} exists and is not a zis-inventory database; choose another --database"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return None


def run_demo(database_path: str, echo: Callable[[str], Any]) -> int:
    path = Path(database_path)
    refusal = _prepare_file(path)
    if refusal:
        echo(f"demo: {refusal}")
        return 2
    now = datetime.now(UTC).replace(microsecond=0)
    # The summaries below say what the per-snapshot log lines would; keep stderr quiet.
    loggers = [logging.getLogger(name) for name in ("inventory.sync", "inventory.discovery")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        first, second = _two_syncs(path, now, echo)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    echo(LOOK_FURTHER.format(db=path))
    return max(first.exit_code, second.exit_code)


def _changes(engine: Any, run_id: int) -> tuple[list[str], list[list[str]]]:
    c, s = m.ConnectionChange, m.Snapshot
    query = (
        select(c.integration, c.type, c.name, c.change, c.field, c.old_value, c.new_value)
        .join(s, s.id == c.snapshot_id)
        .where(s.run_id == run_id)
        .order_by(c.id)
    )
    with engine.connect() as conn:
        rows = [[v if v is not None else "" for v in row] for row in conn.execute(query)]
    return ["INTEGRATION", "TYPE", "NAME", "CHANGE", "FIELD", "OLD", "NEW"], rows


def _critical(engine: Any, run_id: int) -> tuple[list[str], list[list[str]]]:
    """The critical findings the run's snapshots opened."""
    f, s = m.Finding, m.Snapshot
    started = select(s.started_at).where(s.run_id == run_id)
    query = (
        select(f.rule, f.integration, f.type, f.name, f.detail)
        .where(f.severity == "critical", f.first_seen_at.in_(started))
        .order_by(f.id)
    )
    with engine.connect() as conn:
        rows = [[v if v is not None else "" for v in row] for row in conn.execute(query)]
    return ["RULE", "INTEGRATION", "TYPE", "NAME", "DETAIL"], rows


def _two_syncs(
    path: Path, now: datetime, echo: Callable[[str], Any]
) -> tuple[RunResult, RunResult]:
    with FakeZisServer() as server:
        integrations = []
        for name, items in sample_account(now).items():
            token = "demo-" + secrets.token_urlsafe(24)
            server.add_integration(ACCOUNT, name, token, items)
            integrations.append(Integration(ACCOUNT, name, Secret(token)))
        add_sample_clients(server)
        admin = "demo-admin-" + secrets.token_urlsafe(24)
        server.add_registry(ACCOUNT, sample_registry(), oauth=admin)
        account = Account(
            ACCOUNT, server.base_url(ACCOUNT), tuple(integrations), AdminCredential(Secret(admin))
        )
        settings = Settings(
            source="(demo)",
            database_url=f"sqlite:///{path}",
            database=DatabaseSettings(),
            sync=SyncSettings(concurrency=3),
            schedule=ScheduleSettings(),
            accounts=(account,),
        )
        engine = store.make_engine(settings.database_url)
        try:
            store.ensure_schema(engine, migrate=True)
            echo(f"A fake ZIS server is serving account '{ACCOUNT}' at {server.url}.\n")
            echo(
                f"1. First sync into {path}: every connection (and OAuth client) is recorded "
                "as added.\n"
            )
            first = run_sync(settings, engine)
            echo(sync_summary(first, "table") + "\n")
            echo("2. Meanwhile, in the account:")
            for line in [*change_account(server, now), redirect_client(server)]:
                echo(f"   - {line}")
            echo("\n3. Second sync: only what changed is written.\n")
            second = run_sync(settings, engine)
            echo(sync_summary(second, "table") + "\n")
            echo("4. What connection_changes recorded in the second sync:\n")
            echo("\n".join(format_table(*_changes(engine, second.run_id))) + "\n")
            echo(
                "5. The redirected token_url is a critical finding (ZIS012): whoever holds the"
                "\n   new host gets the client secret at the next token refresh.\n"
            )
            echo("\n".join(format_table(*_critical(engine, second.run_id))) + "\n")
            echo(
                "6. The registry (admin credentials) lists an integration nobody inventories;"
                "\n   `python -m inventory discover` says so and prints what to configure:\n"
            )
            echo(discover(settings, (), "table")[0] + "\n")
        finally:
            engine.dispose()
    return first, second
