"""`python -m inventory demo`: a sample account on the fake ZIS server, two syncs into a
SQLite file with realistic changes in between, then what the tables say."""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
    Secret,
    Settings,
    SyncSettings,
)
from .discovery import discover
from .records import format_timestamp
from .report import format_table, sync_summary
from .sync import RunResult, run_sync
from .testing import FakeZisServer, registry_item, sample_item

ACCOUNT = "acme"

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

  -- integrations the registry lists that nobody inventories
  SELECT account, name, description FROM integrations
   WHERE removed_at IS NULL AND NOT configured;

  -- the inventory as it was after the first sync
  SELECT integration, type, name, allowed_domain FROM connection_versions
   WHERE valid_from <= (SELECT finished_at FROM sync_runs WHERE id = 1)
     AND (valid_to IS NULL OR valid_to > (SELECT finished_at FROM sync_runs WHERE id = 1));
"""


def _stamp(when: datetime) -> str:
    return format_timestamp(when)


def sample_account(now: datetime) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Three integrations, all four types, 36 connections, a few tokens near expiry."""
    soon, later, gone = now + timedelta(days=5), now + timedelta(days=200), now - timedelta(days=3)
    old = _stamp(now - timedelta(days=400))

    def item(type_name: str, name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        fields.setdefault("created_at", old)
        fields.setdefault("updated_at", old)
        return type_name, sample_item(type_name, name, **fields)

    def oauth(name: str, expiry: datetime | None, **fields: Any) -> tuple[str, dict[str, Any]]:
        value = _stamp(expiry) if expiry else ""
        return "oauth", sample_item("oauth", name, token_expiry=value, **fields)

    billing = [
        item("api_key", "stripe_key", header_name="Authorization", allowed_domain="api.stripe.com"),
        item("api_key", "taxjar_key", allowed_domain="api.taxjar.com"),
        item("api_key", "avalara_key", allowed_domain="*.avalara.net"),
        item("basic_auth", "netsuite_user", allowed_domain="*.netsuite.com"),
        item("basic_auth", "sap_gateway", allowed_domain="sap.acme-corp.example"),
        item("basic_auth", "legacy_erp", allowed_domain=""),
        item("bearer_token", "chargebee_token", allowed_domain="acme.chargebee.com"),
        item("bearer_token", "recurly_token", allowed_domain="v3.recurly.com"),
        oauth("xero", soon, oauth_url_subdomain="login.xero.com", created_by="maria.lopez"),
        oauth("quickbooks", later, created_by="maria.lopez"),
        oauth("zendesk", None, created_by="zendesk_admin", oauth_url_subdomain="acme"),
        item("bearer_token", "paddle_token", allowed_domain="api.paddle.com"),
    ]
    crm = [
        item("api_key", "hubspot_key", allowed_domain="api.hubapi.com"),
        item("api_key", "pipedrive_key", allowed_domain="*.pipedrive.com"),
        item("api_key", "clearbit_key", allowed_domain="*.example.com"),
        item("basic_auth", "dynamics_svc", allowed_domain="acme.crm.dynamics.com"),
        item("basic_auth", "sugar_svc", allowed_domain="sugar.acme-corp.example"),
        item("bearer_token", "intercom_token", allowed_domain="api.intercom.io"),
        item("bearer_token", "close_token", allowed_domain="api.close.com"),
        item("bearer_token", "copper_token", allowed_domain=""),
        oauth("salesforce", soon + timedelta(days=4), created_by="dev.ops"),
        oauth("hubspot_oauth", later, created_by="dev.ops"),
        oauth("zoho", gone, created_by="former.admin"),
        oauth("zendesk", None, created_by="zendesk_admin"),
    ]
    alerts = [
        item(
            "api_key",
            "pagerduty_key",
            header_name="Authorization",
            allowed_domain="events.pagerduty.com",
        ),
        item("api_key", "opsgenie_key", allowed_domain="api.opsgenie.com"),
        item("api_key", "datadog_key", header_name="DD-API-KEY", allowed_domain="*.datadoghq.com"),
        item("basic_auth", "jira_bot", allowed_domain="acme.atlassian.net"),
        item("basic_auth", "statuspage_bot", allowed_domain="api.statuspage.io"),
        item("bearer_token", "slack_bot", allowed_domain="slack.com"),
        item("bearer_token", "teams_webhook", allowed_domain="*.webhook.office.com"),
        item("bearer_token", "discord_bot", allowed_domain="discord.com"),
        oauth("slack_oauth", later, created_by="it.admin"),
        oauth("github_app", soon + timedelta(days=20), created_by="it.admin"),
        oauth("linear", later, created_by="it.admin"),
        oauth("zendesk", None, created_by="zendesk_admin"),
    ]
    return {"billing_sync": billing, "crm_bridge": crm, "slack_alerts": alerts}


def sample_registry() -> list[dict[str, Any]]:
    """The account's registry: the three integrations, and one nobody configured."""
    return [
        registry_item("billing_sync", "Invoices and payments from the billing systems"),
        registry_item("crm_bridge", "CRM contacts and deals on tickets"),
        registry_item("legacy_ftp_export", "Nightly ticket export to the old ERP over FTP"),
        registry_item("slack_alerts", "Ticket alerts to Slack and the paging tools"),
    ]


def change_account(server: FakeZisServer, now: datetime) -> list[str]:
    """The changes between the two syncs; returns what was done, in words."""
    stamp = _stamp(now)
    server.update(
        ACCOUNT,
        "billing_sync",
        "oauth",
        "xero",
        token_expiry=_stamp(now + timedelta(days=60)),
        access_token="ZIS-SENTINEL-SECRET-rotated",
    )
    server.put(
        ACCOUNT,
        "crm_bridge",
        "api_key",
        sample_item(
            "api_key", "gong_key", allowed_domain="api.gong.io", created_at=stamp, updated_at=stamp
        ),
    )
    server.delete(ACCOUNT, "slack_alerts", "basic_auth", "statuspage_bot")
    server.update(
        ACCOUNT,
        "crm_bridge",
        "api_key",
        "clearbit_key",
        allowed_domain="person.clearbit.com",
        updated_at=stamp,
    )
    return [
        "billing_sync: the xero OAuth token was refreshed (new expiry)",
        "crm_bridge:   a new API key gong_key was created",
        "slack_alerts: the basic_auth connection statuspage_bot was deleted",
        "crm_bridge:   clearbit_key's allowed_domain narrowed from *.example.com "
        "to person.clearbit.com",
    ]


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


def _two_syncs(
    path: Path, now: datetime, echo: Callable[[str], Any]
) -> tuple[RunResult, RunResult]:
    with FakeZisServer() as server:
        integrations = []
        for name, items in sample_account(now).items():
            token = "demo-" + secrets.token_urlsafe(24)
            server.add_integration(ACCOUNT, name, token, items)
            integrations.append(Integration(ACCOUNT, name, Secret(token)))
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
            echo(f"1. First sync into {path}: every connection is recorded as added.\n")
            first = run_sync(settings, engine)
            echo(sync_summary(first, "table") + "\n")
            echo("2. Meanwhile, in the account:")
            for line in change_account(server, now):
                echo(f"   - {line}")
            echo("\n3. Second sync: only what changed is written.\n")
            second = run_sync(settings, engine)
            echo(sync_summary(second, "table") + "\n")
            echo("4. What connection_changes recorded in the second sync:\n")
            echo("\n".join(format_table(*_changes(engine, second.run_id))) + "\n")
            echo(
                "5. The registry (admin credentials) lists an integration nobody inventories;"
                "\n   `python -m inventory discover` says so and prints what to configure:\n"
            )
            echo(discover(settings, (), "table")[0] + "\n")
        finally:
            engine.dispose()
    return first, second
