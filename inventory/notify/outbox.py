"""The outbox side: in the snapshot's own transaction, the messages it causes for each
configured sink, and the expiry-warning ledger. Reads what it needs from the tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import models as m
from ..config import Settings, Sink
from .messages import (
    ChangeEvent,
    FindingLike,
    Message,
    encode,
    expiry_message,
    failure_message,
    finding_message,
    first_inventory_message,
    new_webhook_id,
    snapshot_message,
)

S, C, N = m.Snapshot, m.ConnectionChange, m.Notification
E, K = m.ExpiryWarning, m.Connection


def enqueue_snapshot(
    conn: Connection,
    settings: Settings | None,
    snapshot_id: int,
    opened_findings: Sequence[FindingLike],
    now: datetime,
) -> None:
    """Write the notifications snapshot ``snapshot_id`` causes, one row per (sink,
    message), and record the expiry warnings it gives, in the caller's transaction (the
    snapshot's own: a rolled-back snapshot queues nothing). Without sinks, the ledger is
    still kept, so that a sink added later gets only what happens after."""
    snap = conn.execute(
        select(
            S.id,
            S.account,
            S.integration,
            S.started_at,
            S.status,
            S.connection_count,
            S.added,
            S.removed,
            S.modified,
            S.restored,
            S.error,
            S.superseded_by,
        ).where(S.id == snapshot_id)
    ).one()
    if snap.superseded_by is not None:
        return  # recorded, not applied: it tells nothing new
    sinks = settings.notify if settings is not None else ()
    thresholds = (
        settings.notifications.expiry_warning_days if settings is not None else [30, 14, 7, 1]
    )
    _remember_sinks(conn, sinks, now)
    messages = _snapshot_messages(conn, snap, bool(sinks))
    messages += expiry_warnings(conn, snap.account, snap.integration, snapshot_id, thresholds, now)
    if sinks:  # (without sinks only the expiry ledger above is kept)
        messages += [finding_message(f, snapshot_id, snap.started_at) for f in opened_findings]
    rows = [
        _row(sink, message, payload, now)
        for message in messages
        for sink in sinks
        if (payload := message.for_sink(sink)) is not None
    ]
    if rows:
        conn.execute(insert(N), rows)


def _row(sink: Sink, message: Message, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    webhook_id = new_webhook_id()
    return {
        "sink": sink.name,
        "event": message.event,
        "account": message.account,
        "integration": message.integration,
        "snapshot_id": message.snapshot_id,
        "payload": encode({**payload, "id": webhook_id}),
        "created_at": now,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "webhook_id": webhook_id,
    }


def _remember_sinks(conn: Connection, sinks: Sequence[Sink], now: datetime) -> None:
    if not sinks:
        return
    known = set(conn.execute(select(m.NotifySink.name)).scalars())
    new = [{"name": s.name, "first_configured_at": now} for s in sinks if s.name not in known]
    if not new:
        return
    # Two integrations written at once (PostgreSQL) may both see a new sink first.
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(dialect_insert(m.NotifySink).on_conflict_do_nothing(), new)


def _snapshot_messages(conn: Connection, snap: Any, wanted: bool) -> list[Message]:
    """The failure transition (a failure repeated every tick tells once when it starts
    and once when it recovers), then the snapshot's changes or its first-inventory
    summary."""
    if not wanted:
        return []
    where = (snap.account, snap.integration)
    previous = conn.execute(
        select(S.status)
        .where(
            S.account == where[0],
            S.integration == where[1],
            S.id < snap.id,
            S.superseded_by.is_(None),
        )
        .order_by(S.id.desc())
        .limit(1)
    ).scalar()
    counts = (snap.added, snap.removed, snap.modified, snap.restored)
    out: list[Message] = []
    if snap.status in ("failed", "held"):
        if previous != snap.status:
            out.append(
                failure_message(
                    snap.status, *where, snap.id, snap.started_at, snap.status, snap.error, None
                )
            )
        return out
    if previous in ("failed", "held"):
        out.append(
            failure_message(
                "recovered", *where, snap.id, snap.started_at, snap.status, None, previous
            )
        )
    applied_before = conn.execute(
        select(S.id)
        .where(
            S.account == where[0],
            S.integration == where[1],
            S.id < snap.id,
            S.status == "complete",
            S.superseded_by.is_(None),
        )
        .limit(1)
    ).scalar()
    if applied_before is None:
        out.append(
            first_inventory_message(*where, snap.id, snap.started_at, snap.connection_count, counts)
        )
        return out
    if not any(counts):
        return out
    changes = [
        ChangeEvent(*row)
        for row in conn.execute(
            select(C.change, C.type, C.name, C.field, C.old_value, C.new_value)
            .where(C.snapshot_id == snap.id)
            .order_by(C.id)
        )
    ]
    if changes:
        out.append(
            snapshot_message(
                *where, snap.id, snap.started_at, snap.connection_count, counts, changes
            )
        )
    return out


def expiry_warnings(
    conn: Connection,
    account: str,
    integration: str,
    snapshot_id: int | None,
    thresholds: Sequence[int],
    now: datetime,
) -> list[Message]:
    """The ledger (§11): each (connection, token_expiry, threshold) once, crossed with
    ``<=`` so a missed day delays a warning and never skips it; when several are new at
    once, one warning for the tightest and the wider ones recorded as given; a new
    token_expiry (a refreshed token) starts over. Threshold 0 is "expired"."""
    days = sorted({0, *thresholds})
    horizon = now + timedelta(days=days[-1])
    present = conn.execute(
        select(K.type, K.name, K.token_expiry).where(
            K.account == account,
            K.integration == integration,
            K.removed_at.is_(None),
            K.token_expiry.is_not(None),
            K.token_expiry <= horizon,
        )
    ).all()
    if not present:
        return []
    oldest = min(row.token_expiry for row in present)
    given: dict[tuple[str, str, datetime], set[int]] = {}
    for type_name, name, expiry, threshold in conn.execute(
        select(E.type, E.name, E.token_expiry, E.threshold).where(
            E.account == account, E.integration == integration, E.token_expiry >= oldest
        )
    ):
        given.setdefault((type_name, name, expiry), set()).add(threshold)
    messages: list[Message] = []
    ledger: list[dict[str, Any]] = []
    for type_name, name, expiry in sorted(present, key=lambda r: (r.token_expiry, r.type, r.name)):
        crossed = {t for t in days if expiry <= now + timedelta(days=t)}
        before = given.get((type_name, name, expiry), set())
        new = crossed - before
        if not new:
            continue
        tightest = min(new)
        # A threshold wider than one already given (added to the configuration later)
        # is recorded, not warned about.
        notify = not before or tightest < min(before)
        for threshold in sorted(new):
            ledger.append(
                {
                    "account": account,
                    "integration": integration,
                    "type": type_name,
                    "name": name,
                    "threshold": threshold,
                    "token_expiry": expiry,
                    "warned_at": now,
                    "notified": notify and threshold == tightest,
                }
            )
        if notify:
            messages.append(
                expiry_message(
                    account, integration, snapshot_id, now, type_name, name, expiry, tightest
                )
            )
    if ledger:
        conn.execute(insert(E), ledger)
    return messages
