"""When each integration's last complete snapshot started: what staleness (rules.is_stale)
is judged from, by the findings, `check` and the evidence pack alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select

from .. import models as m
from ..types import SnapshotStatus

SNAPSHOTS = cast(Table, m.Snapshot.__table__)


def last_complete(conn: Connection, *conditions: Any) -> dict[tuple[str, str], datetime]:
    """(account, integration) -> the start of its last complete snapshot, among the
    snapshots ``conditions`` (on the snapshots table) select."""
    s = SNAPSHOTS.c
    rows = conn.execute(
        select(s.account, s.integration, func.max(s.started_at))
        .where(s.status == SnapshotStatus.COMPLETE, *conditions)
        .group_by(s.account, s.integration)
    )
    return {(account, integration): at for account, integration, at in rows}
