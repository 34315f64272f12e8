"""`db check`: invariants the tables must satisfy after any crash, kill or overlap.

Each check is one query that returns the offending rows; an empty result is a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, case, func, or_, select

from . import models as m
from . import store
from .fields import CLIENT_TYPE
from .store.current import current_mismatches
from .store.verify import mismatch_problem


@dataclass(frozen=True)
class Finding:
    check: str
    detail: str


def _snapshot_counts(conn: Connection) -> list[Finding]:
    """A complete, applied snapshot's counts equal the events it recorded of connections
    (its counts are of connections; its OAuth clients' events are beside them)."""
    c, s = m.ConnectionChange, m.Snapshot
    connection = c.type != CLIENT_TYPE
    modified_keys = (
        select(c.snapshot_id, c.type, c.name)
        .where(c.change == "modified", connection)
        .except_(select(c.snapshot_id, c.type, c.name).where(c.change == "restored"))
        .subquery()
    )
    per_kind = (
        select(
            c.snapshot_id.label("sid"),
            func.sum(case((c.change == "added", 1), else_=0)).label("added"),
            func.sum(case((c.change == "removed", 1), else_=0)).label("removed"),
            func.sum(case((c.change == "restored", 1), else_=0)).label("restored"),
        )
        .where(connection)
        .group_by(c.snapshot_id)
        .subquery()
    )
    modified = (
        select(modified_keys.c.snapshot_id.label("sid"), func.count().label("modified"))
        .group_by(modified_keys.c.snapshot_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            s.id,
            s.status,
            s.added,
            s.removed,
            s.modified,
            s.restored,
            func.coalesce(per_kind.c.added, 0),
            func.coalesce(per_kind.c.removed, 0),
            func.coalesce(modified.c.modified, 0),
            func.coalesce(per_kind.c.restored, 0),
        )
        .outerjoin(per_kind, per_kind.c.sid == s.id)
        .outerjoin(modified, modified.c.sid == s.id)
        .order_by(s.id)
    )
    findings = []
    for sid, status, *numbers in rows:
        stored, recorded = tuple(numbers[:4]), tuple(int(n) for n in numbers[4:])
        if status != "complete" and any(recorded):
            findings.append(
                Finding("snapshot counts", f"snapshot {sid} is {status} but has events")
            )
        elif stored != recorded:
            findings.append(
                Finding(
                    "snapshot counts",
                    f"snapshot {sid}: added/removed/modified/restored {stored} "
                    f"but connection_changes say {recorded}",
                )
            )
    return findings


def _current(conn: Connection) -> list[Finding]:
    """A present connection has exactly one current version and holds its values; a
    removed one has none (the same check as `db verify`, worded per key)."""
    versions: list[tuple[tuple[str, str, str, str], str]] = []
    values: list[Finding] = []
    removed: set[tuple[str, str, str, str]] = set()
    for x in current_mismatches(conn):
        key = (x.account, x.integration, x.type, x.name)
        where = f"{x.account}/{x.integration} {x.type} {x.name!r}"
        if x.kind == "value":
            problem = mismatch_problem(x)
            values.append(
                Finding(
                    "current values",
                    f"{problem.chain} {problem.table} row {problem.row} column "
                    f"{problem.column} {problem.problem}",
                )
            )
        elif x.kind == "orphan":
            versions.append((key, f"{where} has a current version but no row"))
        elif x.kind == "removed":
            if key not in removed:  # one line per connection, however many versions
                removed.add(key)
                versions.append((key, f"{where} is removed with {x.current} current versions"))
        else:
            count = 0 if x.kind == "no version" else x.current
            versions.append((key, f"{where} is present with {count} current versions"))
    versions.sort(key=lambda pair: pair[0])
    return [Finding("current versions", text) for _, text in versions] + values


def _version_ranges(conn: Connection) -> list[Finding]:
    """Validity ranges are well-formed and never overlap for one key."""
    v = m.ConnectionVersion
    later = m.ConnectionVersion.__table__.alias("later")
    bad = conn.execute(
        select(v.id).where(v.valid_to.is_not(None), v.valid_to < v.valid_from).order_by(v.id)
    )
    findings = [Finding("version ranges", f"version {vid} ends before it starts") for (vid,) in bad]
    overlaps = conn.execute(
        select(v.id, later.c.id)
        .join(
            later,
            and_(
                later.c.account == v.account,
                later.c.integration == v.integration,
                later.c.type == v.type,
                later.c.name == v.name,
                later.c.id > v.id,
                or_(v.valid_to.is_(None), later.c.valid_from < v.valid_to),
                or_(later.c.valid_to.is_(None), v.valid_from < later.c.valid_to),
            ),
        )
        .order_by(v.id)
    )
    findings += [
        Finding("version ranges", f"versions {a} and {b} of one connection overlap")
        for a, b in overlaps
    ]
    return findings


def _present_counts(conn: Connection) -> list[Finding]:
    """An integration has as many present rows as its last applied snapshot fetched: only
    applying a snapshot writes them (a sync whose pages are that snapshot's reads none)."""
    s, c = m.Snapshot, m.Connection
    newest = (
        select(s.account, s.integration, func.max(s.started_at).label("at"))
        .where(*store.APPLIED)
        .group_by(s.account, s.integration)
        .subquery()
    )
    last = (
        select(s.account, s.integration, s.id, s.connection_count)
        .join(
            newest,
            and_(
                newest.c.account == s.account,
                newest.c.integration == s.integration,
                newest.c.at == s.started_at,
            ),
        )
        .where(*store.APPLIED)
        .subquery()
    )
    present = (
        select(c.account, c.integration, func.count().label("n"))
        .where(c.removed_at.is_(None))
        .group_by(c.account, c.integration)
        .subquery()
    )
    n = func.coalesce(present.c.n, 0)
    rows = conn.execute(
        select(last.c.account, last.c.integration, n, last.c.id, last.c.connection_count)
        .outerjoin(
            present,
            and_(present.c.account == last.c.account, present.c.integration == last.c.integration),
        )
        .where(n != last.c.connection_count)
        .order_by(last.c.account, last.c.integration)
    )
    return [
        Finding(
            "present counts",
            f"{a}/{i} has {count} present connections but its last applied snapshot {sid} "
            f"fetched {fetched} (rows changed outside zis-inventory? `sync --compare-all`)",
        )
        for a, i, count, sid, fetched in rows
    ]


def _runs(conn: Connection) -> list[Finding]:
    """No run is left 'running' by a process that is gone."""
    r = m.SyncRun
    rows = conn.execute(select(r.id, r.host, r.pid).where(r.status == "running").order_by(r.id))
    return [
        Finding(
            "runs",
            f"run {rid} is 'running' but its process is gone (the next sync marks it failed)",
        )
        for rid, host, pid in rows
        if not store.run_alive(conn, rid, host, pid)
    ]


CHECKS: tuple[Callable[[Connection], list[Finding]], ...] = (
    _snapshot_counts,
    _current,
    _version_ranges,
    _present_counts,
    _runs,
)


def check_database(engine: Engine) -> list[Finding]:
    findings: list[Finding] = []
    with engine.connect() as conn:
        for run_check in CHECKS:
            findings += run_check(conn)
    return findings
