"""The outbox side: in the snapshot's own transaction, the one message it causes for each
configured sink, and the expiry-warning ledger; at a run's end, its findings that belong to
no connection. Reads what it needs from the tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import models as m
from ..config import Settings, Sink
from ..notify.messages import (
    ChangeEvent,
    ExpiryEvent,
    FindingLike,
    Message,
    SnapshotFacts,
    encode,
    expiry_event,
    new_webhook_id,
    run_findings_message,
    snapshot_message,
)
from ..rules import has_expired
from .findings import FindingEvents

S, C, N = m.Snapshot, m.ConnectionChange, m.Notification
E, K = m.ExpiryWarning, m.Connection
DEFAULT_THRESHOLDS = (30, 14, 7, 1)


F = TypeVar("F", bound=FindingLike)


def of_connections(found: Iterable[F]) -> list[F]:
    """The findings about a connection: told in the snapshot's message. The others
    (ZIS009, ZIS010: about an integration) are told once per run (``enqueue_run``)."""
    return [f for f in found if f.type is not None]


def of_integrations(found: Iterable[F]) -> list[F]:
    return [f for f in found if f.type is None]


def enqueue_snapshot(
    conn: Connection,
    settings: Settings | None,
    snapshot_id: int,
    found: FindingEvents,
    now: datetime,
    clients: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> None:
    """Write the one message snapshot ``snapshot_id`` causes (``clients``: the OAuth
    clients it added, removed, modified and restored, which the snapshot's counts of
    connections leave out; the message counts both), one row per sink that its filters
    leave something for, and record the expiry warnings it gives, in the caller's
    transaction (the snapshot's own: a rolled-back snapshot queues nothing). Without
    sinks, the ledger is still kept, so that a sink added later gets only what happens
    after."""
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
        settings.notifications.expiry_warning_days if settings is not None else DEFAULT_THRESHOLDS
    )
    _remember_sinks(conn, sinks, now)
    expiry = expiry_warnings(conn, snap.account, snap.integration, thresholds, now)
    if not sinks:  # only the expiry ledger above is kept
        return
    message = _snapshot_message(conn, snap, found, expiry, max(thresholds, default=0), clients)
    _insert(conn, sinks, message, now)


def enqueue_run(
    conn: Connection,
    settings: Settings,
    run_id: int,
    found: Sequence[FindingEvents],
    now: datetime,
) -> None:
    """One message per sink for a run's findings about no connection (the ones
    ``enqueue_snapshot`` leaves out), from what each of its committed snapshots found."""
    if not settings.notify:
        return
    where = lambda f: (f.account, f.integration, f.rule)  # noqa: E731 (not commit order)
    opened = sorted((f for one in found for f in of_integrations(one.opened)), key=where)
    resolved = sorted((f for one in found for f in of_integrations(one.resolved)), key=where)
    if not (opened or resolved):
        return
    _insert(conn, settings.notify, run_findings_message(run_id, now, opened, resolved), now)


def _insert(conn: Connection, sinks: Sequence[Sink], message: Message, now: datetime) -> None:
    rows = [
        _row(sink, message, payload, now)
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


def _snapshot_message(
    conn: Connection,
    snap: Any,
    found: FindingEvents,
    expiry: list[ExpiryEvent],
    widest: int,
    clients: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Message:
    """The snapshot's message: its status beside the previous snapshot's (a failure
    repeated every tick is sent when it starts, and again only when it has events),
    its changes (none listed for a first inventory: a summary by type), the findings
    about connections it opened and resolved, the expiry thresholds it crossed."""
    where = (S.account == snap.account, S.integration == snap.integration)
    previous = conn.execute(
        select(S.status)
        .where(*where, S.id < snap.id, S.superseded_by.is_(None))
        .order_by(S.id.desc())
        .limit(1)
    ).scalar()
    stored = (snap.added, snap.removed, snap.modified, snap.restored)
    counts = tuple(a + b for a, b in zip(stored, clients, strict=True))
    first = False
    types: dict[str, int] = {}
    changes: list[ChangeEvent] = []
    if snap.status == "complete":
        applied_before = conn.execute(
            select(S.id)
            .where(*where, S.id < snap.id, S.status == "complete", S.superseded_by.is_(None))
            .limit(1)
        ).scalar()
        first = applied_before is None
    if first:
        by_type = (
            select(K.type, func.count())
            .where(
                K.account == snap.account,
                K.integration == snap.integration,
                K.removed_at.is_(None),
            )
            .group_by(K.type)
        )
        types = {type_name: count for type_name, count in conn.execute(by_type)}
    elif snap.status == "complete" and any(counts):
        changes = [
            ChangeEvent(*row)
            for row in conn.execute(
                select(C.change, C.type, C.name, C.field, C.old_value, C.new_value)
                .where(C.snapshot_id == snap.id)
                .order_by(C.id)
            )
        ]
    facts = SnapshotFacts(
        snap.account,
        snap.integration,
        snap.id,
        snap.started_at,
        snap.status,
        snap.connection_count,
        counts,
        snap.error,
        previous,
        first,
        types,
        widest,
    )
    return snapshot_message(
        facts, changes, of_connections(found.opened), of_connections(found.resolved), expiry
    )


def expiry_warnings(
    conn: Connection,
    account: str,
    integration: str,
    thresholds: Sequence[int],
    now: datetime,
) -> list[ExpiryEvent]:
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
            has_expired(K.token_expiry, horizon),
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
    warnings: list[ExpiryEvent] = []
    ledger: list[dict[str, Any]] = []
    for type_name, name, expiry in sorted(present, key=lambda r: (r.token_expiry, r.type, r.name)):
        crossed = {t for t in days if has_expired(expiry, now + timedelta(days=t))}
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
            warnings.append(expiry_event(type_name, name, expiry, tightest, now))
    if ledger:
        conn.execute(insert(E), ledger)
    return warnings
