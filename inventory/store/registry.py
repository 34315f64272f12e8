"""The registry's tables (§14): a complete listing applied to ``integrations`` under the
account's registry lock, and every listing's row in ``registry_listings``, failed ones
included. Database errors leave here as DatabaseError, named for the account."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, update

from .. import models as m
from ..registry import RegisteredIntegration, RegistryListing
from ..results import Listing
from .engine import database_errors, is_postgres, lock_key, now

INTEGRATIONS: Table = m.RegistryIntegration.__table__  # type: ignore[assignment]
LISTINGS: Table = m.RegistryListing.__table__  # type: ignore[assignment]


@contextmanager
def _account_transaction(engine: Engine, account: str) -> Iterator[Connection]:
    """One transaction holding the account's registry lock (PostgreSQL advisory lock,
    SQLite's write lock), so two syncs never apply listings of one account at once."""
    with engine.begin() as conn:
        if is_postgres(conn):
            key = lock_key(account, "", salt="registry")
            conn.execute(select(func.pg_advisory_xact_lock(key)))
        yield conn


def apply_listing(
    engine: Engine, run_id: int, started: datetime, fetched: RegistryListing, configured: Set[str]
) -> Listing:
    """Write a complete listing: its row, and the integrations added, removed or restored
    since the last applied one; none when a later-started listing was applied first."""
    result = Listing(
        fetched.account,
        "complete",
        integration_count=len(fetched.integrations),
        not_configured=sum(1 for i in fetched.integrations if i.name not in configured),
        pages=fetched.pages,
    )
    l = LISTINGS.c  # noqa: E741
    doing = f"{fetched.account}/registry: database error while writing the listing"
    with database_errors(engine, doing), _account_transaction(engine, fetched.account) as conn:
        newer = conn.execute(
            select(l.id)
            .where(
                l.account == fetched.account,
                l.status == "complete",
                l.superseded_by.is_(None),
                l.started_at > started,
            )
            .order_by(l.started_at.desc())
            .limit(1)
        ).scalar()
        if newer is not None:
            result.superseded_by = newer
        else:
            result.added, result.removed, result.restored = _apply(
                conn, fetched.account, started, fetched.integrations, configured
            )
        result.listing_id = _insert_listing(conn, run_id, started, result)
    return result


def _apply(
    conn: Connection,
    account: str,
    at: datetime,
    fetched: Sequence[RegisteredIntegration],
    configured: Set[str],
) -> tuple[int, int, int]:
    i = INTEGRATIONS.c
    stored = {
        row.name: row
        for row in conn.execute(
            select(i.id, i.name, i.description, i.removed_at, i.configured).where(
                i.account == account
            )
        )
    }
    added = restored = removed = 0
    for integration in fetched:
        is_configured = integration.name in configured
        row = stored.get(integration.name)
        if row is None:
            conn.execute(
                insert(INTEGRATIONS).values(
                    account=account,
                    name=integration.name,
                    description=integration.description,
                    first_seen_at=at,
                    last_seen_at=at,
                    removed_at=None,
                    configured=is_configured,
                )
            )
            added += 1
            continue
        values: dict[str, Any] = {"last_seen_at": at}
        if row.removed_at is not None:
            values["removed_at"] = None
            restored += 1
        if row.description != integration.description:
            values["description"] = integration.description
        if bool(row.configured) != is_configured:
            values["configured"] = is_configured
        conn.execute(update(INTEGRATIONS).where(i.id == row.id).values(values))
    names = {integration.name for integration in fetched}
    for name, row in stored.items():
        if name not in names and row.removed_at is None:
            conn.execute(update(INTEGRATIONS).where(i.id == row.id).values(removed_at=at))
            removed += 1
    return added, removed, restored


def _insert_listing(conn: Connection, run_id: int, started: datetime, listing: Listing) -> int:
    return int(
        conn.execute(
            insert(LISTINGS)
            .values(
                run_id=run_id,
                account=listing.account,
                started_at=started,
                finished_at=now(),
                status=listing.status,
                integration_count=listing.integration_count,
                added=listing.added,
                removed=listing.removed,
                restored=listing.restored,
                pages=listing.pages,
                error=listing.error,
                superseded_by=listing.superseded_by,
            )
            .returning(LISTINGS.c.id)
        ).scalar_one()
    )


def record_failed_listing(engine: Engine, run_id: int, started: datetime, listing: Listing) -> None:
    """The row of a listing that failed; nothing else changes."""
    doing = f"{listing.account}/registry: cannot record the failed listing"
    with database_errors(engine, doing), engine.begin() as conn:
        listing.listing_id = _insert_listing(conn, run_id, started, listing)
