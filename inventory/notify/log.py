"""The delivery log (the notifications table) as a Report: what the `notifications`
command renders and the evidence pack includes. The payload is not listed: it is in the
table for SQL, and the summary line says what it was about."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from .. import models as m
from ..report import Column, Report, minute

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
) -> Report:
    """The notifications created at or after ``since``, oldest first, of these statuses
    and sinks (all when empty)."""
    n = m.Notification
    columns = [getattr(n, k) for k in NOTIFICATION_KEYS if k != "summary"]
    stmt = select(*columns, n.payload).order_by(n.id)
    if status:
        stmt = stmt.where(n.status.in_(list(status)))
    if sinks:
        stmt = stmt.where(n.sink.in_(list(sinks)))
    if since is not None:
        stmt = stmt.where(n.created_at >= since)
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for r in conn.execute(stmt):
            row = dict(r._mapping)
            row["summary"] = _summary(row.pop("payload"))
            row["where"] = f"{row['account'] or '-'}/{row['integration'] or '-'}"
            rows.append(row)
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


def _summary(payload: str) -> str | None:
    try:
        value = json.loads(payload).get("summary")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
