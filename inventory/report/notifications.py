"""The delivery log (the notifications table) as a Report: what the `notifications`
command renders and the evidence pack includes. The payload is not listed: it is in the
table for SQL, and the summary line says what it was about.

As of a time T the log is a fixed view, the same whatever is delivered later: the messages
created at or before T, their delivery columns rebuilt from the attempts recorded at or
before T (``notification_attempts`` keeps every one), not the row's latest state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, select

from .. import models as m
from ..batches import batched
from ..render import Column, Report, minute

NOTIFICATION_KEYS = (
    "id",
    "created_at",
    "sink",
    "event",
    "account",
    "integration",
    "snapshot_id",
    "status",
    "attempts",
    "last_attempt_at",
    "last_status",
    "last_error",
    "next_attempt_at",
    "sent_at",
    "webhook_id",
    "summary",
)
STATUSES = ("pending", "sent", "dead")


def notifications_report(
    engine: Engine,
    *,
    status: Sequence[str] = (),
    sinks: Sequence[str] = (),
    since: datetime | None = None,
    as_of: datetime | None = None,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
) -> Report:
    """The notifications created at or after ``since`` (and at or before ``as_of``, as
    they stood then), oldest first, of these statuses, sinks, accounts and integrations
    (all when empty)."""
    n = m.Notification
    columns = [getattr(n, k) for k in NOTIFICATION_KEYS if k != "summary"]
    stmt = select(*columns, n.payload).order_by(n.id)
    if status and as_of is None:  # as of a time: the status then, filtered below
        stmt = stmt.where(n.status.in_(list(status)))
    if sinks:
        stmt = stmt.where(n.sink.in_(list(sinks)))
    if accounts:
        stmt = stmt.where(n.account.in_(list(accounts)))
    if integrations:
        stmt = stmt.where(n.integration.in_(list(integrations)))
    if since is not None:
        stmt = stmt.where(n.created_at >= since)
    if as_of is not None:
        stmt = stmt.where(n.created_at <= as_of)
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for r in conn.execute(stmt):
            row = dict(r._mapping)
            row["summary"] = _summary(row.pop("payload"))
            row["where"] = f"{row['account'] or '-'}/{row['integration'] or '-'}"
            rows.append(row)
        if as_of is not None:
            _as_of(conn, rows, as_of)
    if status and as_of is not None:
        rows = [r for r in rows if r["status"] in status]
    table = [
        Column("id", "ID", 6),
        Column("created_at", "CREATED", 16, minute),
        Column("sink", "SINK", 14),
        Column("event", "EVENT", 15),
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("status", "STATUS", 7),
        Column("attempts", "TRIES", 5),
        Column("last_status", "HTTP", 4, lambda v: "-" if v is None else str(v)),
    ]
    report = Report(NOTIFICATION_KEYS, rows, table, "notification", detail="last_error")
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    report.notes.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return report


def _as_of(conn: Connection, rows: list[dict[str, Any]], at: datetime) -> None:
    """Each row's delivery state at ``at``, from its attempts answered by then: their
    count, the last one's time, HTTP status and error; sent or dead once one was, else
    pending. When the next attempt was due then is not recorded: left empty."""
    a = m.NotificationAttempt
    tried: dict[int, list[Row[Any]]] = {}
    ids = [r["id"] for r in rows]
    for chunk in batched(ids, 500):
        for attempt in conn.execute(
            select(a.notification_id, a.attempted_at, a.status, a.error, a.outcome)
            .where(a.notification_id.in_(chunk), a.attempted_at <= at)
            .order_by(a.notification_id, a.attempted_at, a.id)
        ):
            tried.setdefault(attempt.notification_id, []).append(attempt)
    for row in rows:
        attempts = tried.get(row["id"], [])
        last = attempts[-1] if attempts else None
        sent = [t.attempted_at for t in attempts if t.outcome == "sent"]
        outcomes = {t.outcome for t in attempts}
        row.update(
            # sent and dead are final; a retry answered after a send (a lease taken over)
            # does not undo it
            status="sent" if sent else "dead" if "dead" in outcomes else "pending",
            attempts=len(attempts),
            last_attempt_at=last.attempted_at if last is not None else None,
            last_status=last.status if last is not None else None,
            last_error=last.error if last is not None else None,
            next_attempt_at=None,
            sent_at=sent[0] if sent else None,
        )


def _summary(payload: str) -> str | None:
    try:
        value = json.loads(payload).get("summary")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
