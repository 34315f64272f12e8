"""What the evidence pack holds, read in one read-only transaction: the scope, the report
commands' rows for it, the chain heads and each integration's freshness."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, func, select

from .. import models as m
from .. import report, store
from ..config import Settings
from ..render import Report
from ..report.findings import findings_report
from ..report.notifications import notifications_report
from ..rules import is_stale
from ..store.chain import chain_heads
from ..store.freshness import last_complete


@dataclass(frozen=True)
class Scope:
    """What the pack covers: the population as of ``as_of`` and the period
    ``since <= t <= as_of`` (``since`` None: from the start of the history)."""

    as_of: datetime
    since: datetime | None
    accounts: tuple[str, ...] = ()
    integrations: tuple[str, ...] = ()
    max_age: timedelta = timedelta(days=2)


@dataclass(frozen=True)
class Pack:
    """Everything the files of the pack show, as of one database state."""

    scope: Scope
    period_start: datetime | None
    generated_at: datetime
    generated_by: str
    host: str
    database_url: str
    schema_revision: str | None
    chain: tuple[list[dict[str, Any]], str]  # (the heads, their digest)
    freshness: list[dict[str, Any]]
    connections: Report
    clients: Report  # the OAuth clients as of the time (§17)
    changes: Report
    findings: Report
    snapshots: Report
    notifications: Report
    config: str | None = None  # the configuration file read, absolute
    database: str = ""  # the database, as store.portable_url writes it (no password)


def gather(
    engine: Engine, settings: Settings, scope: Scope, now: datetime, config: str | None = None
) -> Pack:
    """Every query of the pack, in one read transaction. ``config``: the configuration
    file it was read with (absolute), which the commands that print its CSVs again name."""
    with _one_read(engine) as conn:
        pinned = cast(Engine, _Pinned(engine, conn))
        connections = report.connections(
            pinned,
            report.ConnectionFilter(scope.accounts, scope.integrations, as_of=scope.as_of),
            now,
        )
        clients = report.clients(
            pinned, accounts=scope.accounts, integrations=scope.integrations, as_of=scope.as_of
        )
        changes = report.changes(
            pinned,
            report.ChangeFilter(
                scope.accounts, scope.integrations, since=scope.since, as_of=scope.as_of
            ),
        )
        snapshots = report.snapshots(
            pinned,
            accounts=scope.accounts,
            integrations=scope.integrations,
            limit=None,
            since=scope.since,
            as_of=scope.as_of,
        )
        findings = _findings(pinned, settings, scope)
        notifications = _notifications(pinned, scope)
        heads = _chain_heads(conn)
        revision = store.current_revision(pinned)
        freshness = _freshness(conn, settings, scope)
        start = scope.since if scope.since is not None else _history_start(conn, scope)
    return Pack(
        scope=scope,
        period_start=start,
        generated_at=now,
        generated_by=_user(),
        host=socket.gethostname(),
        database_url=store.safe_url(settings.database_url),
        schema_revision=revision,
        chain=heads,
        freshness=freshness,
        connections=connections,
        clients=clients,
        changes=changes,
        findings=findings,
        snapshots=snapshots,
        notifications=notifications,
        config=config,
        database=store.portable_url(settings.database_url),
    )


@contextmanager
def _one_read(engine: Engine) -> Iterator[Connection]:
    """A connection in one read transaction: REPEATABLE READ on PostgreSQL, a deferred
    BEGIN on SQLite (WAL keeps its snapshot while a sync writes)."""
    with engine.connect() as conn:
        if store.is_postgres(conn):
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SELECT 1")
        else:
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


class _Pinned:
    """Stands in for the Engine that the report functions take, lending them the one open
    connection, so that every file of the pack reads the same transaction."""

    def __init__(self, engine: Engine, conn: Connection) -> None:
        self._engine = engine
        self._conn = conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        yield self._conn

    begin = connect

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _findings(engine: Engine, settings: Settings, scope: Scope) -> Report:
    return findings_report(
        engine,
        settings,
        as_of=scope.as_of,
        accounts=scope.accounts,
        integrations=scope.integrations,
        include_suppressed=True,
    )


def _notifications(engine: Engine, scope: Scope) -> Report:
    return notifications_report(
        engine,
        status=(),
        sinks=(),
        since=scope.since,
        as_of=scope.as_of,
        accounts=scope.accounts,
        integrations=scope.integrations,
    )


def _chain_heads(conn: Connection) -> tuple[list[dict[str, Any]], str]:
    heads, digest = chain_heads(conn)
    return list(heads), str(digest)


def _scope_conditions(t: Any, scope: Scope) -> list[Any]:
    conditions = []
    if scope.accounts:
        conditions.append(t.c.account.in_(scope.accounts))
    if scope.integrations:
        conditions.append(t.c.integration.in_(scope.integrations))
    return conditions


def _history_start(conn: Connection, scope: Scope) -> datetime | None:
    s: Any = m.Snapshot.__table__
    first = conn.execute(
        select(func.min(s.c.started_at)).where(
            s.c.started_at <= scope.as_of, *_scope_conditions(s, scope)
        )
    ).scalar()
    return cast(datetime | None, first)


def _freshness(conn: Connection, settings: Settings, scope: Scope) -> list[dict[str, Any]]:
    """Every integration in scope (configured or seen), its last snapshot as of T and its
    last complete one: ``state`` is ok, stale (no complete one within max_age), failed,
    held or never."""
    s: Any = m.Snapshot.__table__
    seen = [s.c.started_at <= scope.as_of, *_scope_conditions(s, scope)]
    # The last by started_at (what the snapshot saw), not by id: a long fetch that failed
    # may be written after a later one that completed.
    order = func.row_number().over(
        partition_by=(s.c.account, s.c.integration), order_by=(s.c.started_at.desc(), s.c.id.desc())
    )
    ranked = (
        select(
            s.c.account, s.c.integration, s.c.started_at, s.c.status, s.c.error, order.label("n")
        )
        .where(*seen)
        .subquery()
    )
    latest = {
        (r.account, r.integration): r for r in conn.execute(select(ranked).where(ranked.c.n == 1))
    }
    complete = last_complete(conn, *seen)
    keys = set(latest)
    for account in settings.accounts:
        for integration in account.integrations:
            key = (account.subdomain, integration.name)
            if (not scope.accounts or key[0] in scope.accounts) and (
                not scope.integrations or key[1] in scope.integrations
            ):
                keys.add(key)
    rows = []
    for key in sorted(keys):
        row = latest.get(key)
        done = complete.get(key)
        if row is None:
            state = "never"
        elif row.status != "complete":
            state = str(row.status)
        elif is_stale(done, scope.as_of, scope.max_age):
            state = "stale"
        else:
            state = "ok"
        rows.append(
            {
                "account": key[0],
                "integration": key[1],
                "last_at": row.started_at if row else None,
                "last_status": row.status if row else None,
                "last_complete_at": done,
                "state": state,
                "error": row.error if row else None,
            }
        )
    return rows


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a container
        return str(os.getuid())
