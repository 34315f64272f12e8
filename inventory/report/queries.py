"""Read side: the auditors' reports over the tables, rendered as table, JSON or CSV.

Queries here only read; the CLI opens their engine read-only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from .. import models as m
from ..durations import span
from ..records import METADATA_FIELDS, format_timestamp
from ..render import Column, Report, day, format_table, minute
from ..results import RunResult
from ..rules import expires_within, has_expired, is_stale
from ..store.freshness import last_complete

KEY = ("account", "integration", "type", "name")
CONNECTION_KEYS = (*KEY, *METADATA_FIELDS, "first_seen_at", "last_changed_at", "removed_at")
# As of T, every version listed was open then: when a later sync closed it (valid_to) is
# not part of the inventory at T, and would make the same view differ as syncs run.
VERSION_KEYS = (*KEY, *METADATA_FIELDS, "valid_from")


def _where(row: dict[str, Any]) -> str:
    return f"{row['account']}/{row['integration']}"


@dataclass(frozen=True)
class ConnectionFilter:
    accounts: Sequence[str] = ()
    integrations: Sequence[str] = ()
    types: Sequence[str] = ()
    include_removed: bool = False
    expiring_within: timedelta | None = None
    expired: bool = False
    not_updated_for: timedelta | None = None
    as_of: datetime | None = None


def connections(engine: Engine, f: ConnectionFilter, now: datetime) -> Report:
    """Present connections (or all, or as of a time) with the expiry and age filters.

    Expiry and age are measured from ``as_of`` when given, else from ``now``.
    """
    ref = f.as_of or now
    if f.as_of is not None:
        t: Any = m.ConnectionVersion.__table__
        keys: Sequence[str] = VERSION_KEYS
        conditions = [
            t.c.valid_from <= f.as_of,
            or_(t.c.valid_to.is_(None), t.c.valid_to > f.as_of),
        ]
    else:
        t = m.Connection.__table__
        keys = CONNECTION_KEYS
        conditions = [] if f.include_removed else [t.c.removed_at.is_(None)]
    conditions += _scope(t, f.accounts, f.integrations, f.types)
    expiry = []
    if f.expiring_within is not None:
        expiry.append(expires_within(t.c.token_expiry, ref, f.expiring_within))
    if f.expired:
        expiry.append(has_expired(t.c.token_expiry, ref))
    if expiry:
        conditions.append(or_(*expiry))
    if f.not_updated_for is not None:
        conditions.append(or_(t.c.updated_at < ref - f.not_updated_for, t.c.updated_at.is_(None)))
    stmt = select(*(t.c[k] for k in keys)).where(*conditions).order_by(*(t.c[k] for k in KEY))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    date_column = (
        Column("updated_at", "UPDATED", 10, day)
        if f.not_updated_for
        else Column("token_expiry", "EXPIRES", 10, day)
    )
    table = [
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("type", "TYPE", 12),
        Column("name", "NAME", 16),
        Column("allowed_domain", "DOMAIN", 14, lambda v: v or "(any)"),
        date_column,
    ]
    for row in rows:
        row["where"] = _where(row)
        if row.get("removed_at") is not None:
            row["where"] = "*" + row["where"]
    report = Report(keys, rows, table, "connection")
    if f.not_updated_for is not None:
        dated = [r for r in rows if r["updated_at"] is not None]
        undated = [r for r in rows if r["updated_at"] is None]
        report.rows = dated + undated
        report.sections = [
            (f"not updated for {span(f.not_updated_for)}", dated),
            ("no updated_at known", undated),
        ]
    if any(r.get("removed_at") is not None for r in rows):
        report.notes.append("* removed (removed_at is set)")
    if f.as_of is not None:
        report.notes.append(f"as of {format_timestamp(f.as_of)}")
    return report


def _scope(
    t: Any, accounts: Sequence[str], integrations: Sequence[str], types: Sequence[str] = ()
) -> list[Any]:
    conditions = []
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.integration.in_(integrations))
    if types:
        conditions.append(t.c.type.in_(types))
    return conditions


# --- changes -------------------------------------------------------------------------

CHANGE_KEYS = (
    "id",
    "snapshot_id",
    "detected_at",
    *KEY,
    "change",
    "field",
    "old_value",
    "new_value",
)


@dataclass(frozen=True)
class ChangeFilter:
    accounts: Sequence[str] = ()
    integrations: Sequence[str] = ()
    types: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    changes: Sequence[str] = ()
    snapshot: int | None = None
    as_of: datetime | None = None  # inclusive, as --as-of of connections: the log known at T


def changes(engine: Engine, f: ChangeFilter) -> Report:
    t: Any = m.ConnectionChange.__table__
    conditions = _scope(t, f.accounts, f.integrations, f.types)
    if f.since is not None:
        conditions.append(t.c.detected_at >= f.since)
    if f.until is not None:
        conditions.append(t.c.detected_at < f.until)
    if f.as_of is not None:
        conditions.append(t.c.detected_at <= f.as_of)
    if f.changes:
        conditions.append(t.c.change.in_(f.changes))
    if f.snapshot is not None:
        conditions.append(t.c.snapshot_id == f.snapshot)
    stmt = (
        select(*(t.c[k] for k in CHANGE_KEYS)).where(*conditions).order_by(t.c.detected_at, t.c.id)
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["where"] = _where(row)
        if row["change"] == "modified":
            old, new = row["old_value"], row["new_value"]
            row["detail"] = f"{row['field']}: {_null(old)} -> {_null(new)}"
    table = [
        Column("detected_at", "DETECTED", 16, minute),
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("type", "TYPE", 12),
        Column("name", "NAME", 15),
        Column("change", "CHANGE", 8),
    ]
    return Report(CHANGE_KEYS, rows, table, "change", detail="detail")


def _null(value: str | None) -> str:
    return "(null)" if value is None else repr(value) if value == "" else value


# --- snapshots -----------------------------------------------------------------------

SNAPSHOT_KEYS = (
    "id",
    "run_id",
    "account",
    "integration",
    "started_at",
    "finished_at",
    "seconds",
    "status",
    "connection_count",
    "added",
    "removed",
    "modified",
    "restored",
    "pages",
    "error",
    "superseded_by",
)


def snapshots(
    engine: Engine,
    *,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    failed: bool = False,
    limit: int | None = 20,
    since: datetime | None = None,
    as_of: datetime | None = None,
) -> Report:
    """Snapshots newest first; ``since`` and ``as_of`` bound ``started_at`` (both
    inclusive); ``limit=None`` keeps them all."""
    t: Any = m.Snapshot.__table__
    conditions = _scope(t, accounts, integrations)
    if failed:
        conditions.append(t.c.status != "complete")
    if since is not None:
        conditions.append(t.c.started_at >= since)
    if as_of is not None:
        conditions.append(t.c.started_at <= as_of)
    columns = [t.c[k] for k in SNAPSHOT_KEYS if k != "seconds"]
    stmt = select(*columns).where(*conditions).order_by(t.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["seconds"] = round((row["finished_at"] - row["started_at"]).total_seconds(), 3)
        row["where"] = _where(row)
        row["counts"] = f"+{row['added']} -{row['removed']} ~{row['modified']} ^{row['restored']}"
    table = [
        Column("id", "ID", 6),
        Column("started_at", "STARTED", 16, minute),
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("status", "STATUS", 8),
        Column("connection_count", "CONN", 6),
        Column("counts", "+A -R ~M ^R", 15),
    ]
    return Report(SNAPSHOT_KEYS, rows, table, "snapshot", detail="error")


# --- check ---------------------------------------------------------------------------

CHECK_KEYS = ("kind", *KEY, "at", "detail")


def check(
    engine: Engine,
    targets: Sequence[tuple[str, str]],
    *,
    expiring_within: timedelta,
    max_age: timedelta,
    now: datetime,
) -> tuple[Report, bool]:
    """Problems that should alert for the (account, integration) targets: expired or
    expiring tokens, no recent complete snapshot. No expiry known is listed, not alerted."""
    c: Any = m.Connection.__table__
    scope = or_(*(and_(c.c.account == a, c.c.integration == i) for a, i in targets))
    key_cols = [c.c[k] for k in KEY]
    with engine.connect() as conn:
        present = conn.execute(
            select(*key_cols, c.c.token_expiry)
            .where(
                c.c.removed_at.is_(None),
                scope,
                or_(c.c.token_expiry.is_not(None), c.c.type == "oauth"),
            )
            .order_by(c.c.token_expiry, *key_cols)
        ).all()
        last = last_complete(conn)
    expired: list[dict[str, Any]] = []
    expiring: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for r in present:
        row = {**dict(zip(KEY, r[:4], strict=True)), "at": r.token_expiry}
        if r.token_expiry is None:
            unknown.append({**row, "kind": "no_expiry", "detail": "no expiry known"})
        elif has_expired(r.token_expiry, now):
            expired.append(
                {**row, "kind": "expired", "detail": f"expired {_ago(now - r.token_expiry)} ago"}
            )
        elif expires_within(r.token_expiry, now, expiring_within):
            expiring.append(
                {**row, "kind": "expiring", "detail": f"expires in {_ago(r.token_expiry - now)}"}
            )
    for account, integration in targets:
        when = last.get((account, integration))
        if is_stale(when, now, max_age):
            detail = "never complete" if when is None else f"last {_ago(now - when)} ago"
            stale.append(
                {
                    "kind": "stale",
                    "account": account,
                    "integration": integration,
                    "type": None,
                    "name": None,
                    "at": when,
                    "detail": detail,
                }
            )
    rows = expired + expiring + stale + unknown
    for row in rows:
        row["where"] = _where(row)
    table = [
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("type", "TYPE", 12, lambda v: v or "-"),
        Column("name", "NAME", 16, lambda v: v or "-"),
        Column("at", "WHEN", 10, day),
        Column("detail", "DETAIL", 15),
    ]
    report = Report(CHECK_KEYS, rows, table, "finding")
    report.sections = [
        ("EXPIRED", expired),
        (f"EXPIRING within {span(expiring_within)}", expiring),
        (f"STALE: no complete snapshot within {span(max_age)}", stale),
        ("NO EXPIRY KNOWN (oauth; not an alert)", unknown),
    ]
    failing = bool(expired or expiring or stale)
    report.notes.append(
        f"check: FAILED: {len(expired)} expired, {len(expiring)} expiring, {len(stale)} stale"
        if failing
        else f"check: OK ({len(unknown)} with no expiry known)"
    )
    return report, failing


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


# --- the sync summary ----------------------------------------------------------------


def sync_summary(result: RunResult, fmt: str) -> str:
    from .. import discovery  # the registry's lines; only a sync prints them

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
            "registry": discovery.summary_json(result.registry),
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
    for type_name, places in sorted(result.drift.items()):
        lines.append(
            f"  drift: unknown connection type {type_name!r} in {', '.join(sorted(places))}"
        )
    lines += discovery.summary_lines(result.registry)
    return "\n".join(lines)
