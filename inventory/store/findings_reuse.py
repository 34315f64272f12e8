"""The one shortcut of ``findings.update_findings`` (spec §10): keeping the connection
rules' result for an integration, instead of reading every row again after each
snapshot, and judging again only the rows a snapshot changed.

The connection rules are pure functions of an integration's rows, one row at a time, the
rules' settings, the suppressions and the time. After a full evaluation,
``findings_evaluations`` keeps when it read the rows (its snapshot), a digest of the
settings and suppressions, and the first instant its result could differ by time alone (a
token reaching its expiry or the expiring window, an ``updated_at`` turning
``max_age_days`` old, a suppression ending; at the latest ``sync.full_compare_interval``
later). A later update keeps that result when the digest is the same, the time is before
that instant, and no snapshot since the kept one changed a row other than the snapshot
being written, whose changed keys the caller names: the rules then judge those rows only
(none when it changed nothing), and the kept result moves to this snapshot, its instant
brought forward by the rows judged. Anything else, or ``ENABLED = False`` (the tests'
oracle), evaluates every rule over every row.

Rows edited by hand in ``connections`` are not seen by the connection rules until the
next full evaluation: the same bound as the sync's own digest shortcut (§10).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import models as m

ENABLED = True  # False: every update evaluates every rule (the tests' oracle)
FORMAT = 1  # part of the digest: raise it when a rule's code changes what it reports

STATE = cast(Table, m.FindingsEvaluation.__table__)
SNAPSHOTS = cast(Table, m.Snapshot.__table__)


def settings_digest(parts: Iterable[Any]) -> str:
    """A digest of what the connection rules' result depends on besides rows and time:
    their settings and the suppressions, as reprs of plain values."""
    return hashlib.sha256(repr((FORMAT, *parts)).encode("utf-8", "replace")).hexdigest()


class Kept(NamedTuple):
    """A full evaluation's result that still stands."""

    evaluated_at: datetime
    valid_until: datetime


def standing(
    conn: Connection,
    account: str,
    integration: str,
    digest: str,
    now: datetime,
    snapshot_id: int | None = None,
) -> Kept | None:
    """The last full evaluation of the connection rules, when its result still holds at
    ``now`` for every row no snapshot since then changed, except the snapshot
    ``snapshot_id`` (the one being written, whose changed rows the caller judges again);
    None when every row must be judged again."""
    if not ENABLED:
        return None
    s = STATE.c
    state = conn.execute(
        select(s.snapshot_id, s.evaluated_at, s.valid_until, s.rules_digest).where(
            s.account == account, s.integration == integration
        )
    ).one_or_none()
    if state is None or state.rules_digest != digest:
        return None
    if not state.evaluated_at <= now < state.valid_until:
        return None
    # Another snapshot since then that changed a row: read them all again.
    n = SNAPSHOTS.c
    since = select(func.count()).where(
        n.account == account,
        n.integration == integration,
        n.id > state.snapshot_id,
        n.status == "complete",
        n.superseded_by.is_(None),
        n.added + n.removed + n.modified + n.restored > 0,
    )
    if snapshot_id is not None:
        since = since.where(n.id != snapshot_id)
    changed = conn.execute(since).scalar_one()
    return Kept(state.evaluated_at, state.valid_until) if changed == 0 else None


def keep(
    conn: Connection,
    account: str,
    integration: str,
    snapshot_id: int,
    digest: str,
    now: datetime,
    until: datetime | None,
    evaluated_at: datetime | None = None,
) -> None:
    """Record an evaluation at ``now`` that covers ``snapshot_id``'s rows and stands until
    ``until`` (None: it cannot be kept, a rule cannot say when its result changes); a
    kept result moved on keeps its full evaluation's ``evaluated_at``."""
    values = {
        "snapshot_id": snapshot_id,
        "evaluated_at": now if evaluated_at is None else evaluated_at,
        "valid_until": now if until is None else max(until, now),
        "rules_digest": digest,
    }
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(STATE).values(account=account, integration=integration, **values)
    conn.execute(
        statement.on_conflict_do_update(index_elements=["account", "integration"], set_=values)
    )
