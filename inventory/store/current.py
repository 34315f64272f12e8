"""The connections against their current versions, value by value (§13): the one query
that `db verify` and `db check` both report from, each in its own words."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select

from ..canonical import METADATA
from .chain import CONNECTIONS, VERSIONS

COMPARED = (*METADATA, "last_changed_at")  # connections' columns; versions': valid_from


@dataclass(frozen=True)
class Mismatch:
    """A connections row and the current connection_versions rows of its key that
    disagree: what `db verify` and `db check` both report, found by one query."""

    kind: str  # "no version" | "several versions" | "removed" | "value" | "orphan"
    account: str
    integration: str
    type: str
    name: str
    connection: int | None  # the connections row (None for an orphan version)
    version: int | None  # the current version it concerns
    current: int  # how many current versions the key has
    column: str | None = None  # for "value": the connections column that differs


def current_mismatches(conn: Connection) -> list[Mismatch]:
    """Present connections that differ, value by value, from their current version (the
    version's valid_from is the connection's last_changed_at), have none or several;
    removed connections that still have one; current versions with no connection."""
    c, v = CONNECTIONS.c, VERSIONS.c
    key = and_(
        v.account == c.account,
        v.integration == c.integration,
        v.type == c.type,
        v.name == c.name,
        v.valid_to.is_(None),
    )
    pairs = [(c[name], v["valid_from" if name == "last_changed_at" else name]) for name in COMPARED]
    differs = or_(*(a.is_distinct_from(b) for a, b in pairs))
    other = VERSIONS.alias("other")
    current = (
        select(func.count())
        .where(
            other.c.account == c.account,
            other.c.integration == c.integration,
            other.c.type == c.type,
            other.c.name == c.name,
            other.c.valid_to.is_(None),
        )
        .scalar_subquery()
    )
    rows = conn.execute(
        select(c.id, c.account, c.integration, c.type, c.name, c.removed_at, v.id)
        .add_columns(*(a for a, _ in pairs), *(b for _, b in pairs), current)
        .outerjoin(VERSIONS, key)
        .where(
            or_(
                and_(c.removed_at.is_(None), or_(v.id.is_(None), differs, current > 1)),
                and_(c.removed_at.is_not(None), v.id.is_not(None)),
            )
        )
        .order_by(c.id, v.id)
    )
    found: list[Mismatch] = []
    seen: set[int] = set()
    n = len(COMPARED)
    for row in rows:
        cid, account, integration, type_, name, removed_at, vid = row[:7]
        ours, theirs, count = row[7 : 7 + n], row[7 + n : 7 + 2 * n], row[-1]
        where = (account, integration, type_, name, cid, vid, count)
        if removed_at is not None:
            found.append(Mismatch("removed", *where))
        elif vid is None:
            found.append(Mismatch("no version", *where))
        else:
            if count > 1 and cid not in seen:
                found.append(Mismatch("several versions", *where))
            seen.add(cid)
            found += [
                Mismatch("value", *where, column=column)
                for column, a, b in zip(COMPARED, ours, theirs, strict=True)
                if a != b
            ]
    orphans = conn.execute(
        select(v.id, v.account, v.integration, v.type, v.name)
        .where(
            v.valid_to.is_(None),
            ~select(c.id)
            .where(
                c.account == v.account,
                c.integration == v.integration,
                c.type == v.type,
                c.name == v.name,
            )
            .exists(),
        )
        .order_by(v.id)
    )
    found += [Mismatch("orphan", a, i, t, name, None, vid, 1) for vid, a, i, t, name in orphans]
    return found
