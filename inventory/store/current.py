"""The present rows against their current versions, value by value (§13): connections
against connection_versions, OAuth clients against oauth_client_versions; the one query
per pair that `db verify` and `db check` both report from, each in its own words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Table, and_, case, func, or_, select

from .. import models as m
from ..canonical import CLIENT_METADATA, METADATA
from .chain import CLIENT_VERSIONS, CONNECTIONS, VERSIONS


@dataclass(frozen=True)
class Pair:
    """A present-state table and its history: the columns keying a row within an
    integration, and those compared (the present last_changed_at against valid_from)."""

    current: Table
    versions: Table
    key: tuple[str, ...]
    compared: tuple[str, ...]
    type: str | None  # the key's type when the key has none (OAuth clients)


PAIRS = (
    Pair(CONNECTIONS, VERSIONS, ("type", "name"), (*METADATA, "last_changed_at"), None),
    Pair(
        cast(Table, m.OAuthClient.__table__),
        CLIENT_VERSIONS,
        ("uuid",),
        (*CLIENT_METADATA, "last_changed_at"),
        "oauth_client",
    ),
)
COMPARED = PAIRS[0].compared  # connections' columns; versions': valid_from


@dataclass(frozen=True)
class Mismatch:
    """A present row and the current versions of its key that disagree: what `db verify`
    and `db check` both report, found by one query. For an OAuth client, ``type`` is
    ``oauth_client`` and ``name`` its uuid."""

    kind: str  # "no version" | "several versions" | "removed" | "value" | "orphan"
    account: str
    integration: str
    type: str
    name: str
    connection: int | None  # the present row (None for an orphan version)
    version: int | None  # the current version it concerns
    current: int  # how many current versions the key has
    column: str | None = None  # for "value": the present table's column that differs
    table: str = "connections"
    versions: str = "connection_versions"


def current_mismatches(conn: Connection) -> list[Mismatch]:
    """Of connections, then OAuth clients: present rows that differ, value by value,
    from their current version (the version's valid_from is the row's last_changed_at),
    have none or several; removed rows that still have one; current versions with no row."""
    return [x for pair in PAIRS for x in _mismatches(conn, pair)]


def _mismatches(conn: Connection, pair: Pair) -> list[Mismatch]:
    c, v = pair.current.c, pair.versions.c
    keys = ("account", "integration", *pair.key)  # a row's key within the database
    same_key = [v[k] == c[k] for k in keys]
    key = and_(*same_key, v.valid_to.is_(None))
    pairs = [
        (c[name], v["valid_from" if name == "last_changed_at" else name]) for name in pair.compared
    ]
    # Which values differ is the database's answer, not a comparison of values read
    # back: a value edited into one no type reads (a timestamp of no year) is named too.
    distinct = [a.is_distinct_from(b) for a, b in pairs]
    differs = or_(*distinct)
    # The keys with several current versions, counted in one grouped pass (a count per
    # row, correlated, probed the versions' index once for each of a million rows).
    keyed = [v[k] for k in keys]
    several = (
        select(*keyed, func.count().label("n"))
        .where(v.valid_to.is_(None))
        .group_by(*keyed)
        .having(func.count() > 1)
        .subquery("several")
    )
    current = func.coalesce(several.c.n, case((v.id.is_(None), 0), else_=1))
    tables = (pair.current.name, pair.versions.name)
    rows = conn.execute(
        select(c.id, c.account, c.integration, *(c[k] for k in pair.key))
        .add_columns(c.removed_at.is_not(None), v.id)
        .add_columns(*distinct, current)
        .outerjoin(pair.versions, key)
        .outerjoin(several, and_(*(several.c[k] == c[k] for k in keys)))
        .where(
            or_(
                and_(
                    c.removed_at.is_(None),
                    or_(v.id.is_(None), differs, several.c.n.is_not(None)),
                ),
                and_(c.removed_at.is_not(None), v.id.is_not(None)),
            )
        )
        .order_by(c.id, v.id)
    )
    found: list[Mismatch] = []
    seen: set[int] = set()
    n, k = len(pair.compared), len(pair.key)
    for row in rows:
        cid, account, integration = row[:3]
        type_, name = (pair.type, row[3]) if pair.type is not None else (row[3], row[4])
        removed, vid = row[3 + k], row[4 + k]
        differing, count = row[5 + k : 5 + k + n], row[-1]
        where = (account, integration, type_, name, cid, vid, count)
        if removed:
            found.append(Mismatch("removed", *where, None, *tables))
        elif vid is None:
            found.append(Mismatch("no version", *where, None, *tables))
        else:
            if count > 1 and cid not in seen:
                found.append(Mismatch("several versions", *where, None, *tables))
            seen.add(cid)
            found += [
                Mismatch("value", *where, column, *tables)
                for column, differs_ in zip(pair.compared, differing, strict=True)
                if differs_
            ]
    orphans = conn.execute(
        select(v.id, v.account, v.integration, *(v[k] for k in pair.key))
        .where(
            v.valid_to.is_(None),
            ~select(c.id).where(*(c[k] == v[k] for k in keys)).exists(),
        )
        .order_by(v.id)
    )
    for vid, a, i, *key_values in orphans:
        type_, name = (pair.type, key_values[0]) if pair.type is not None else key_values
        found.append(Mismatch("orphan", a, i, type_, name, None, vid, 1, None, *tables))
    return found
