"""The hash chain of each integration's snapshots (§13 of the spec), written side:
extended inside every snapshot's own transaction, and its heads as `db heads` prints them.
The canonical form it hashes is ``inventory.canonical``; `db verify` is ``store.verify``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    Select,
    Table,
    Text,
    and_,
    case,
    func,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.sql.elements import ColumnElement

from .. import models as m
from ..canonical import (
    DIGESTS,
    FORMAT,
    METADATA,
    PART_COLUMNS,
    PARTS_OF_FORMAT,
    SNAPSHOT_COLUMNS,
    RowDigests,
    boolean_value,
    chain_hash,
    column_digests,
    encoded_pieces,
    heads_digest,
    timestamp_text,
    value_json,
)
from ..fields import RECORD_FIELDS, TIMESTAMP_FIELDS
from ..records import Connection as Record
from .written import Written, is_applied

SNAPSHOTS = cast(Table, m.Snapshot.__table__)
CHANGES = cast(Table, m.ConnectionChange.__table__)
VERSIONS = cast(Table, m.ConnectionVersion.__table__)
CONNECTIONS = cast(Table, m.Connection.__table__)
CLIENT_VERSIONS = cast(Table, m.OAuthClientVersion.__table__)


@dataclass(frozen=True)
class Part:
    """One list of a snapshot's canonical form: which rows of which table it holds."""

    key: str  # its key in the canonical object
    table: Table
    columns: tuple[str, ...]
    by: str | None  # the versions column equal to the snapshot's started_at

    @property
    def table_name(self) -> str:
        return self.table.name


_TABLES = {
    "changes": CHANGES,
    "client_closed": CLIENT_VERSIONS,
    "client_opened": CLIENT_VERSIONS,
    "closed": VERSIONS,
    "opened": VERSIONS,
}
_BY = {
    "changes": None,
    "client_closed": "valid_to",
    "client_opened": "valid_from",
    "closed": "valid_to",
    "opened": "valid_from",
}
PARTS = tuple(Part(key, _TABLES[key], columns, _BY[key]) for key, columns in PART_COLUMNS)
# The parts a snapshot hashed in each format covers (format 1: no OAuth clients).
PARTS_OF = {
    format_: tuple(p for p in PARTS if p.key in dict(parts))
    for format_, parts in PARTS_OF_FORMAT.items()
}


@dataclass(frozen=True)
class Reader:
    """The select list of a part's columns and how its rows become plain values."""

    columns: list[ColumnElement[Any]]
    timestamps: tuple[int, ...]
    booleans: tuple[int, ...]

    def plain(self, row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i in self.timestamps:
            values[i] = timestamp_text(values[i])
        for i in self.booleans:
            values[i] = boolean_value(values[i])
        return values


_YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
_RFC3339 = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'  # to_char's picture of canonical.timestamp_text


def _timestamp_text(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """PostgreSQL's timestamp as the canonical RFC 3339 text, made by the server. A value
    no sync writes (before year 1, or infinite, which to_char would render as a year
    1 or NULL) comes as PostgreSQL's own text of it, which is no canonical timestamp."""
    plain = and_(column >= literal(_YEAR_1, column.type), func.isfinite(column))
    return case(
        (plain, func.to_char(func.timezone("UTC", column), _RFC3339)),
        else_=cast_(column, Text),
    )


def _reader(table: Table, names: Sequence[str], sqlite: bool) -> Reader:
    """Timestamps are read as text (SQLite's as stored, PostgreSQL's rendered by the
    server, which spares the client a datetime per value) and SQLite's booleans as
    integers, and made plain here, the same way on both databases."""
    columns: list[ColumnElement[Any]] = []
    timestamps, booleans = [], []
    for i, name in enumerate(names):
        column = table.c[name]
        if isinstance(column.type, m.UTCDateTime):
            timestamps.append(i)
            text = type_coerce(column, Text) if sqlite else _timestamp_text(column)
            columns.append(text.label(name))
        elif isinstance(column.type, Boolean):
            booleans.append(i)
            columns.append(type_coerce(column, Integer).label(name) if sqlite else column)
        else:
            columns.append(column)
    return Reader(columns, tuple(timestamps), tuple(booleans))


@dataclass(frozen=True)
class Readers:
    snapshot: Reader
    parts: dict[str, Reader]

    @classmethod
    def of(cls, conn: Connection) -> Readers:
        sqlite = conn.dialect.name == "sqlite"
        return cls(
            _reader(SNAPSHOTS, SNAPSHOT_COLUMNS, sqlite),
            {p.key: _reader(p.table, p.columns, sqlite) for p in PARTS},
        )


# --- one snapshot's rows -------------------------------------------------------------


@dataclass
class StoredSnapshot:
    id: int
    account: str
    integration: str
    values: list[Any]  # plain, in SNAPSHOT_COLUMNS order
    started_at: Any  # as the database gives it, to match versions with
    applied: bool
    prev_hash: str | None
    chain_hash: str | None
    chain_rows: str | None
    format: Any  # of its canonical form (chain_format; NULL: 1); a key of PARTS_OF unless edited


def snapshot_select(readers: Readers) -> Select[Any]:
    s = SNAPSHOTS.c
    return select(
        *readers.snapshot.columns,
        s.started_at.label("_started"),
        s.prev_hash,
        s.chain_hash,
        s.chain_format,
    )


def snapshot_of(readers: Readers, row: Sequence[Any], chain_rows: str | None) -> StoredSnapshot:
    n = len(SNAPSHOT_COLUMNS)
    values = readers.snapshot.plain(row[:n])
    named = dict(zip(SNAPSHOT_COLUMNS, row[:n], strict=True))
    return StoredSnapshot(
        id=named["id"],
        account=named["account"],
        integration=named["integration"],
        values=values,
        started_at=row[n],
        applied=is_applied(named["status"], named["superseded_by"]),
        prev_hash=row[n + 1],
        chain_hash=row[n + 2],
        chain_rows=chain_rows,
        format=row[n + 3] if row[n + 3] is not None else 1,
    )


def read_snapshot(conn: Connection, readers: Readers, snapshot_id: int) -> StoredSnapshot:
    row = conn.execute(
        snapshot_select(readers)
        .add_columns(SNAPSHOTS.c.chain_rows)
        .where(SNAPSHOTS.c.id == snapshot_id)
    ).one()
    return snapshot_of(readers, row[:-1], row[-1])


def part_rows(
    conn: Connection, readers: Readers, part: Part, snap: StoredSnapshot
) -> Iterator[tuple[int, list[Any]]]:
    """(row id, plain values) of the rows a part of this snapshot holds, in id order, one
    at a time (its query runs when the first is asked for)."""
    reader = readers.parts[part.key]
    t = part.table.c
    if part.by is None:
        where: list[ColumnElement[bool]] = [t.snapshot_id == snap.id]
    elif not snap.applied:
        return
    else:
        where = [
            t.account == snap.account,
            t.integration == snap.integration,
            t[part.by] == snap.started_at,
        ]
    query = select(*reader.columns).where(*where).order_by(t.id)
    # A thousand rows at a time (PostgreSQL: a server-side cursor, not the whole result).
    for row in conn.execute(query.execution_options(yield_per=1000)):
        yield row[0], reader.plain(row)


def extend_chain(conn: Connection, written: Written) -> None:
    """Hash a snapshot just written, in its own transaction (which holds the integration's
    lock, so no other snapshot of the chain is written meanwhile): link it to the previous
    snapshot of its (account, integration), hash its rows from the values the transaction
    bound (``written``), and keep their digests. The versions it closed are read back:
    their values are those earlier snapshots wrote. Where the ids read back do not cover
    what it wrote, that part is read back too; `db verify` recomputes every part from the
    stored rows."""
    readers = Readers.of(conn)
    values = snapshot_values(written)
    s = SNAPSHOTS.c
    row = written.row
    prev = conn.execute(
        select(s.chain_hash)
        .where(s.account == row.account, s.integration == row.integration)
        .where(s.id < written.snapshot_id)
        .order_by(s.id.desc())
        .limit(1)
    ).scalar()
    kept: dict[str, Any] = {
        "format": FORMAT,
        "digests": DIGESTS,
        "snapshot": column_digests(values),
    }

    def hashed(part: Part) -> Iterator[bytes]:
        """The part's rows as the hash takes them, one at a time, keeping their digests."""
        rows = bound_rows(written, part.key)
        if rows is None:
            rows = part_rows(conn, readers, part, stored_snapshot(written, values))
        digests = RowDigests()
        for row_id, plain in rows:
            encoded = value_json(plain)
            digests.add(row_id, plain, encoded)
            yield encoded
        kept[part.key] = digests.kept()

    # encoded_pieces takes the parts one after the other, so one query runs at a time.
    hash_ = chain_hash(prev, encoded_pieces(values, {p.key: hashed(p) for p in PARTS}, FORMAT))
    conn.execute(
        update(SNAPSHOTS)
        .where(s.id == written.snapshot_id)
        .values(
            prev_hash=prev,
            chain_hash=hash_,
            chain_rows=json.dumps(kept, separators=(",", ":"), sort_keys=True),
            chain_format=FORMAT,
        )
    )


def snapshot_values(written: Written) -> list[Any]:
    """The snapshot row's plain values, in SNAPSHOT_COLUMNS order, as it was bound."""
    named: dict[str, Any] = {"id": written.snapshot_id, **written.row.columns(written.finished_at)}
    for column in ("started_at", "finished_at"):
        named[column] = timestamp_text(named[column])
    named["status"] = str(named["status"])
    for column in ("accepted_removals", "full_compare"):
        named[column] = bool(named[column])
    return [named[c] for c in SNAPSHOT_COLUMNS]


def stored_snapshot(written: Written, values: list[Any]) -> StoredSnapshot:
    row = written.row
    return StoredSnapshot(
        written.snapshot_id, row.account, row.integration, values, row.started_at,
        written.applied, None, None, None, FORMAT,
    )  # fmt: skip


# Where each metadata column of the canonical form is in a records.Connection.
_METADATA_AT = tuple(RECORD_FIELDS.index(f) for f in METADATA)
_STAMPED = frozenset(i for i, f in enumerate(METADATA) if f in TIMESTAMP_FIELDS)


def bound_rows(written: Written, key: str) -> Iterator[tuple[int, list[Any]]] | None:
    """(row id, plain values) of a part, in id order, from what the transaction bound:
    its events and the connection versions it opened; None when the part must be read
    back (the versions it closed, the OAuth clients' versions: few, and ids that do not
    cover what it wrote)."""
    if key not in ("changes", "opened"):
        return None
    diff, clients, row = written.changes, written.clients, written.row
    at = timestamp_text(row.started_at)
    scope = [row.account, row.integration]
    if key == "changes":
        ids = written.ids.events
        events = [*(diff.events if diff else ()), *(clients.events if clients else ())]
        order = [ids.get((e.type, e.name, str(e.change), e.field)) for e in events]
        if len(ids) != len(events) or None in order:
            return None
        head = [written.snapshot_id, *scope]
        return (
            (i, [i, *head, e.type, e.name, str(e.change), e.field, e.old_value, e.new_value, at])
            for i, e in sorted(zip(cast(list[int], order), events, strict=True), key=_first)
        )
    opened = [*diff.added, *diff.modified, *diff.restored] if diff else []
    found = [written.ids.opened.get(r.key) for r in opened]
    if len(written.ids.opened) != len(opened) or None in found:
        return None
    return (
        (i, [i, *scope, r.type, r.name, *_metadata(r), at])
        for i, r in sorted(zip(cast(list[int], found), opened, strict=True), key=_first)
    )


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _metadata(record: Record) -> list[Any]:
    values = [record[i] for i in _METADATA_AT]
    for i in _STAMPED:
        values[i] = timestamp_text(values[i])
    return values


# --- heads ---------------------------------------------------------------------------


def chain_heads(conn: Connection) -> tuple[list[dict[str, Any]], str]:
    """Each chain's newest hashed snapshot (account, integration, snapshot_id, chain_hash),
    in (account, integration) order, and the SHA-256 over their RFC 8785 JSON: what
    `db heads` prints, to be kept outside the database."""
    s = SNAPSHOTS.c
    newest = (
        select(s.account, s.integration, func.max(s.id).label("id"))
        .where(s.chain_hash.is_not(None))
        .group_by(s.account, s.integration)
        .subquery()
    )
    rows = conn.execute(
        select(s.account, s.integration, s.id, s.chain_hash).join(newest, newest.c.id == s.id)
    ).all()
    heads = [
        {"account": a, "integration": i, "snapshot_id": sid, "chain_hash": h}
        for a, i, sid, h in sorted(rows, key=lambda r: (r[0], r[1]))
    ]
    return heads, heads_digest(heads)
