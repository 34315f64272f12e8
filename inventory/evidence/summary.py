"""The numbers of the pack's summary: the population by account and type, tokens by expiry
week, changes by ISO week and kind, open findings by severity, integrations needing care."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import types
from ..rules import has_expired
from .read import Pack

KINDS = ("added", "removed", "modified", "restored")
SEVERITIES = tuple(s.value for s in reversed(types.SEVERITIES))  # the highest first
EXPIRY_HORIZON = timedelta(days=180)
WEEK = timedelta(days=7)


def summary(pack: Pack) -> dict[str, Any]:
    """The numbers of the summary cards (the HTML shows these, the tests read them)."""
    rows = pack.connections.rows
    by_account_type = Counter((r["account"], r["type"]) for r in rows)
    attention = [f for f in pack.freshness if f["state"] != "ok"]
    return {
        "connections": len(rows),
        "accounts": sorted({a for a, _ in by_account_type}),
        "types": sorted({t for _, t in by_account_type}),
        "by_account_type": by_account_type,
        "by_account": Counter(r["account"] for r in rows),
        "by_type": Counter(r["type"] for r in rows),
        "expiry": expiry_buckets(rows, pack.scope.as_of),
        "changes": _distinct_changes(pack.changes.rows),
        "open_findings": open_by_severity(pack.findings.rows),
        "attention": attention,
        "integrations": len(pack.freshness),
    }


@dataclass(frozen=True)
class Expiry:
    weeks: list[tuple[datetime, int]]  # (start of the week, tokens expiring in it)
    expired: int
    later: int  # beyond the horizon
    unknown: int  # OAuth with no expiry known

    @property
    def within(self) -> int:
        return sum(n for _, n in self.weeks)


def expiry_buckets(rows: Sequence[dict[str, Any]], as_of: datetime) -> Expiry:
    """OAuth tokens (and any connection with an expiry) by expiry week from ``as_of``:
    week i holds ``as_of + 7i days < expiry <= as_of + 7(i+1) days``, up to 180 days."""
    count = -(-EXPIRY_HORIZON.days // 7)
    weeks = [0] * count
    expired = later = unknown = 0
    for row in rows:
        expiry = row.get("token_expiry")
        if expiry is None:
            if row["type"] == "oauth":
                unknown += 1
        elif has_expired(expiry, as_of):
            expired += 1
        elif expiry > as_of + EXPIRY_HORIZON:
            later += 1
        else:
            weeks[min(count - 1, (expiry - as_of - timedelta(microseconds=1)) // WEEK)] += 1
    return Expiry([(as_of + i * WEEK, n) for i, n in enumerate(weeks)], expired, later, unknown)


def _distinct_changes(rows: Sequence[dict[str, Any]]) -> list[tuple[datetime, str]]:
    """One (detected_at, kind) per connection changed by a snapshot: a modified connection
    counts once however many fields changed, as the snapshots' counts do."""
    seen = {
        (r["snapshot_id"], r["account"], r["integration"], r["type"], r["name"], r["change"]): r[
            "detected_at"
        ]
        for r in rows
    }
    return [(at, key[-1]) for key, at in seen.items()]


def weekly_changes(
    changes: Sequence[tuple[datetime, str]], start: datetime | None, end: datetime
) -> list[tuple[datetime, Counter[str]]]:
    """Changes per ISO week (Monday 00:00 UTC) from the week of ``start`` to that of ``end``."""
    first = _monday(start if start is not None else end)
    count = (_monday(end) - first) // WEEK + 1
    weeks: list[Counter[str]] = [Counter() for _ in range(count)]
    for at, kind in changes:
        index = (_monday(at) - first) // WEEK
        if 0 <= index < count:
            weeks[index][kind] += 1
    return [(first + i * WEEK, c) for i, c in enumerate(weeks)]


def _monday(value: datetime) -> datetime:
    day = value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def open_by_severity(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Findings neither resolved nor suppressed, by severity."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for row in rows:
        if row.get("resolved_at") is not None or _suppressed(row):
            continue
        severity = str(row.get("severity") or "unknown")
        counts[severity] = counts.get(severity, 0) + 1
    return counts


def _suppressed(row: dict[str, Any]) -> bool:
    for key in ("suppressed", "suppressed_by", "suppression", "suppression_reason"):
        if row.get(key):
            return True
    return row.get("status") == "suppressed"
