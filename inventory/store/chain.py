"""The hash chain of each integration's snapshots (§13 of the spec): extended inside every
snapshot's own transaction, recomputed by `db verify`, its heads printed by `db heads`.

One chain per (account, integration), in snapshot id order. A snapshot's ``chain_hash``
is SHA-256 over its ``prev_hash`` (the previous snapshot's ``chain_hash``, as hex text;
nothing for a chain's first) followed by its canonical bytes: the RFC 8785 JSON of

    {"changes": [its connection_changes rows, id order],
     "closed":  [the connection_versions rows it closed (valid_to = its started_at)],
     "columns": {the column names of each list, in the order of the values},
     "format":  1,
     "opened":  [the versions it opened (valid_from = its started_at), without valid_to],
     "snapshot": [its audit columns]}

each row an array of its values: timestamps as RFC 3339 UTC text with microseconds, NULL
as null, booleans and integers as JSON ones. Only applied snapshots (complete, not
superseded) open or close versions. ``chain_rows`` keeps, per row and column, a short
digest of each value: it does not prove anything, it only says which row or column a
broken hash changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from zlib import crc32

import rfc8785
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Integer,
    Select,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from .. import models as m

FORMAT = 1
STREAM_ROWS = 2000  # rows fetched at a time by db verify's server-side cursors
COLUMN_DIGEST_BYTES = 2  # per value in chain_rows: 4 hex characters

SNAPSHOTS = cast(Table, m.Snapshot.__table__)
CHANGES = cast(Table, m.ConnectionChange.__table__)
VERSIONS = cast(Table, m.ConnectionVersion.__table__)
CONNECTIONS = cast(Table, m.Connection.__table__)

# The columns each list of the canonical form holds, fixed by FORMAT: a column added to
# a table later is not silently taken into (or left out of) the hashes already written.
METADATA = (
    "allowed_domain",
    "created_at",
    "updated_at",
    "header_name",
    "username",
    "created_by",
    "uuid",
    "oauth_url_subdomain",
    "permission_scope",
    "token_type",
    "token_expiry",
    "oauth_client_uuid",
)
SNAPSHOT_COLUMNS = (
    "id",
    "run_id",
    "account",
    "integration",
    "started_at",
    "finished_at",
    "status",
    "connection_count",
    "added",
    "removed",
    "modified",
    "restored",
    "pages",
    "error",
    "fetched_digest",
    "superseded_by",
    "accepted_removals",
    "full_compare",
)
CHAIN_COLUMNS = ("prev_hash", "chain_hash", "chain_rows")
CHANGE_COLUMNS = (
    "id",
    "snapshot_id",
    "account",
    "integration",
    "type",
    "name",
    "change",
    "field",
    "old_value",
    "new_value",
    "detected_at",
)
# valid_to is not part of the versions a snapshot opened: the snapshot that closes one
# sets it later, and that snapshot's hash covers it.
OPENED_COLUMNS = ("id", "account", "integration", "type", "name", *METADATA, "valid_from")
CLOSED_COLUMNS = (*OPENED_COLUMNS, "valid_to")


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


PARTS = (  # in the canonical object's key order
    Part("changes", CHANGES, CHANGE_COLUMNS, None),
    Part("closed", VERSIONS, CLOSED_COLUMNS, "valid_to"),
    Part("opened", VERSIONS, OPENED_COLUMNS, "valid_from"),
)
COLUMNS_JSON = rfc8785.dumps(
    {**{p.key: list(p.columns) for p in PARTS}, "snapshot": list(SNAPSHOT_COLUMNS)}
)


# --- values --------------------------------------------------------------------------


def timestamp_text(value: Any) -> Any:
    """A timestamp as RFC 3339 UTC text with microseconds. SQLite's stored text is read
    as text (see ``_selected``), so that a value edited into something no timestamp is
    still gives a value to hash rather than an error."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return _unexpected(value)
        if len(value) == 26 and value[10] == " " and value[19] == ".":  # as stored
            return f"{value[:10]}T{value[11:]}Z"
        value = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo is not None else value
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return _unexpected(value)


def boolean_value(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # SQLite's
        return bool(value)
    return _unexpected(value)


def _unexpected(value: Any) -> dict[str, str]:
    """A value no column of the schema holds (edited in by hand): hashed as such."""
    return {"unexpected": type(value).__name__, "repr": repr(value)}


def _safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, dict)):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _unexpected(value)
        return value
    if isinstance(value, int) and -(2**53) < value < 2**53:
        return value
    return _unexpected(value)


_json_array = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_PLAIN_TYPES = (str, bool, type(None))


def value_json(values: Sequence[Any]) -> bytes:
    """One row's values as an RFC 8785 array.

    A row of text, integers within JSON's exact range, booleans and NULLs (every row the
    schema holds, unless edited by hand) is written by the standard library's encoder,
    whose output for those values is RFC 8785's, at a fifth of the CPU of the pure-Python
    rfc8785 (docs/decisions.md); a property test holds it to ``rfc8785.dumps``, which
    writes every other row."""
    for v in values:
        kind = type(v)
        if kind is int:
            if not -(2**53) < v < 2**53:
                return _rfc8785_array(values)
        elif kind not in _PLAIN_TYPES:
            return _rfc8785_array(values)
    try:
        return _json_array(values).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not text any database gives
        return _rfc8785_array(values)


def _rfc8785_array(values: Sequence[Any]) -> bytes:
    try:
        return rfc8785.dumps(values)
    except rfc8785.CanonicalizationError:
        return rfc8785.dumps([_safe(v) for v in values])


def column_digests(values: Sequence[Any]) -> str:
    """A short checksum of each plain value, concatenated: what chain_rows keeps of a row
    (16 bits of the CRC-32 of its repr, which is as stable as the value: str, int, bool,
    None, or an unexpected value's dict). It only locates a change the hash proved."""
    return "".join(
        "%04x" % (crc32(repr(v).encode("utf-8", "surrogatepass")) & 0xFFFF) for v in values
    )


@dataclass(frozen=True)
class _Reader:
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


def _reader(table: Table, names: Sequence[str], sqlite: bool) -> _Reader:
    """SQLite's timestamps are read as their stored text and its booleans as integers,
    and made plain here, the same way on both databases."""
    columns: list[ColumnElement[Any]] = []
    timestamps, booleans = [], []
    for i, name in enumerate(names):
        column = table.c[name]
        if isinstance(column.type, m.UTCDateTime):
            timestamps.append(i)
            columns.append(type_coerce(column, Text).label(name) if sqlite else column)
        elif isinstance(column.type, Boolean):
            booleans.append(i)
            columns.append(type_coerce(column, Integer).label(name) if sqlite else column)
        else:
            columns.append(column)
    return _Reader(columns, tuple(timestamps), tuple(booleans))


@dataclass(frozen=True)
class _Readers:
    snapshot: _Reader
    parts: dict[str, _Reader]

    @classmethod
    def of(cls, conn: Connection) -> _Readers:
        sqlite = conn.dialect.name == "sqlite"
        return cls(
            _reader(SNAPSHOTS, SNAPSHOT_COLUMNS, sqlite),
            {p.key: _reader(p.table, p.columns, sqlite) for p in PARTS},
        )


# --- the canonical form --------------------------------------------------------------


def canonical_pieces(
    snapshot: Sequence[Any], rows: Mapping[str, Iterable[Sequence[Any]]]
) -> Iterator[bytes]:
    """The canonical bytes of a snapshot, piece by piece (rows of plain values): joined,
    they are ``rfc8785.dumps`` of the whole object, but no list is held whole."""
    yield b"{"
    for part in PARTS:
        if part.key == "opened":
            yield b'"columns":' + COLUMNS_JSON + b',"format":' + str(FORMAT).encode() + b","
        yield b'"' + part.key.encode() + b'":['
        first = True
        for row in rows.get(part.key, ()):
            if not first:
                yield b","
            first = False
            yield value_json(row)
        yield b"],"
    yield b'"snapshot":' + value_json(snapshot) + b"}"


def canonical_object(snapshot: Sequence[Any], rows: dict[str, list[list[Any]]]) -> dict[str, Any]:
    """The object ``canonical_pieces`` serializes (for tests and for reading)."""
    return {
        **{p.key: rows.get(p.key, []) for p in PARTS},
        "columns": {**{p.key: list(p.columns) for p in PARTS}, "snapshot": list(SNAPSHOT_COLUMNS)},
        "format": FORMAT,
        "snapshot": list(snapshot),
    }


def chain_hash(prev_hash: str | None, pieces: Iterable[bytes]) -> str:
    digest = hashlib.sha256((prev_hash or "").encode("ascii", "replace"))
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def applied(status: Any, superseded_by: Any) -> bool:
    return status == "complete" and superseded_by is None


# --- one snapshot's rows -------------------------------------------------------------


@dataclass
class _Snapshot:
    id: int
    account: str
    integration: str
    values: list[Any]  # plain, in SNAPSHOT_COLUMNS order
    started_at: Any  # as the database gives it, to match versions with
    applied: bool
    prev_hash: str | None
    chain_hash: str | None
    chain_rows: str | None


def _snapshot_select(readers: _Readers) -> Select[Any]:
    s = SNAPSHOTS.c
    return select(
        *readers.snapshot.columns, s.started_at.label("_started"), s.prev_hash, s.chain_hash
    )


def _snapshot_of(readers: _Readers, row: Sequence[Any], chain_rows: str | None) -> _Snapshot:
    n = len(SNAPSHOT_COLUMNS)
    values = readers.snapshot.plain(row[:n])
    named = dict(zip(SNAPSHOT_COLUMNS, row[:n], strict=True))
    return _Snapshot(
        id=named["id"],
        account=named["account"],
        integration=named["integration"],
        values=values,
        started_at=row[n],
        applied=applied(named["status"], named["superseded_by"]),
        prev_hash=row[n + 1],
        chain_hash=row[n + 2],
        chain_rows=chain_rows,
    )


def _read_snapshot(conn: Connection, readers: _Readers, snapshot_id: int) -> _Snapshot:
    row = conn.execute(
        _snapshot_select(readers)
        .add_columns(SNAPSHOTS.c.chain_rows)
        .where(SNAPSHOTS.c.id == snapshot_id)
    ).one()
    return _snapshot_of(readers, row[:-1], row[-1])


def _part_rows(
    conn: Connection, readers: _Readers, part: Part, snap: _Snapshot
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


def extend_chain(conn: Connection, snapshot_id: int) -> None:
    """Hash a snapshot just written, in its own transaction (which holds the integration's
    lock, so no other snapshot of the chain is written meanwhile): link it to the previous
    snapshot of its (account, integration), hash its rows, and keep their digests."""
    readers = _Readers.of(conn)
    snap = _read_snapshot(conn, readers, snapshot_id)
    s = SNAPSHOTS.c
    prev = conn.execute(
        select(s.chain_hash)
        .where(s.account == snap.account, s.integration == snap.integration, s.id < snap.id)
        .order_by(s.id.desc())
        .limit(1)
    ).scalar()
    manifest: dict[str, Any] = {"format": FORMAT, "snapshot": column_digests(snap.values)}

    def hashed(part: Part) -> Iterator[list[Any]]:
        """The part's rows as the hash takes them, one at a time (a first sync's are not
        held at once), keeping each row's digests on the way."""
        digests = manifest[part.key] = {}
        for row_id, values in _part_rows(conn, readers, part, snap):
            digests[str(row_id)] = column_digests(values)
            yield values

    # canonical_pieces takes the parts one after the other, so one query runs at a time.
    hash_ = chain_hash(prev, canonical_pieces(snap.values, {p.key: hashed(p) for p in PARTS}))
    conn.execute(
        update(SNAPSHOTS)
        .where(s.id == snapshot_id)
        .values(
            prev_hash=prev,
            chain_hash=hash_,
            chain_rows=json.dumps(manifest, separators=(",", ":"), sort_keys=True),
        )
    )


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


def heads_digest(heads: list[dict[str, Any]]) -> str:
    return hashlib.sha256(rfc8785.dumps(heads)).hexdigest()


# --- connections against their current versions --------------------------------------


@dataclass(frozen=True)
class Problem:
    """One broken link or mismatch: which chain, snapshot, table, row and column."""

    account: str | None
    integration: str | None
    snapshot: int | None
    table: str | None
    row: int | None
    column: str | None
    problem: str

    @property
    def chain(self) -> str:
        return f"{self.account}/{self.integration}" if self.account is not None else ""


COMPARED = (*METADATA, "last_changed_at")  # connections' columns; versions': valid_from


def current_mismatches(conn: Connection) -> list[Problem]:
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
        select(c.id, c.account, c.integration, c.removed_at, v.id, *(a for a, _ in pairs))
        .add_columns(*(b for _, b in pairs), current)
        .outerjoin(VERSIONS, key)
        .where(
            or_(
                and_(c.removed_at.is_(None), or_(v.id.is_(None), differs, current > 1)),
                and_(c.removed_at.is_not(None), v.id.is_not(None)),
            )
        )
        .order_by(c.id, v.id)
    )
    problems: list[Problem] = []
    seen: set[int] = set()
    n = len(COMPARED)
    for row in rows:
        cid, account, integration, removed_at, vid = row[:5]
        ours, theirs, count = row[5 : 5 + n], row[5 + n : 5 + 2 * n], row[-1]
        found: list[tuple[str | None, str]] = []
        if removed_at is not None:
            found.append(("removed_at", f"removed, but connection_versions row {vid} is current"))
        elif vid is None:
            found.append((None, "present, but has no current connection_versions row"))
        else:
            if count > 1 and cid not in seen:
                found.append((None, f"present, with {count} current connection_versions rows"))
            seen.add(cid)
            for name, a, b in zip(COMPARED, ours, theirs, strict=True):
                if a != b:
                    held = "valid_from" if name == "last_changed_at" else name
                    found.append(
                        (
                            name,
                            f"differs from its current version (connection_versions row "
                            f"{vid} {held})",
                        )
                    )
        problems += [
            Problem(account, integration, None, "connections", cid, column, text)
            for column, text in found
        ]
    orphans = conn.execute(
        select(v.id, v.account, v.integration)
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
    problems += [
        Problem(a, i, None, "connection_versions", vid, None, "current, but has no connections row")
        for vid, a, i in orphans
    ]
    return problems


# --- db verify -----------------------------------------------------------------------


@dataclass
class Chain:
    account: str
    integration: str
    first: int | None = None  # the first hashed snapshot
    unchained: int = 0  # snapshots before it, written before the upgrade
    snapshots: int = 0  # hashed ones
    expected_prev: str | None = None
    broken: bool = False
    recomputed: dict[int, str] = field(default_factory=dict)  # of heads asked about


@dataclass
class Verification:
    chains: list[Chain]
    problems: list[Problem]

    @property
    def snapshots(self) -> int:
        return sum(c.snapshots for c in self.chains)


class _Peek:
    """An iterator of (snapshot id, row) one can look ahead in."""

    def __init__(self, rows: Iterator[Sequence[Any]]) -> None:
        self._rows = rows
        self._next: Sequence[Any] | None = next(rows, None)

    def take(self, snapshot_id: int) -> Iterator[Sequence[Any]]:
        while self._next is not None and self._next[0] <= snapshot_id:
            row, self._next = self._next, next(self._rows, None)
            if row[0] == snapshot_id:
                yield row[1:]


def _plain_rows(
    readers: _Readers, part: Part, stream: _Peek, snapshot_id: int
) -> Iterator[list[Any]]:
    reader = readers.parts[part.key]
    for row in stream.take(snapshot_id):
        yield reader.plain(row)


def _stream(conn: Connection, query: Select[Any]) -> Iterator[Sequence[Any]]:
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(query)
    yield from result


def _part_stream(conn: Connection, readers: _Readers, part: Part) -> _Peek:
    """Every hashed snapshot's rows of a part, in (snapshot id, row id) order, each led by
    its snapshot's id: one query for the whole database."""
    s, t = SNAPSHOTS.c, part.table.c
    columns = readers.parts[part.key].columns
    hashed = s.chain_hash.is_not(None)
    if part.by is None:
        query = (
            select(t.snapshot_id, *columns)
            .where(t.snapshot_id.in_(select(s.id).where(hashed)))
            .order_by(t.snapshot_id, t.id)
        )
    else:
        query = (
            select(s.id, *columns)
            .join(
                SNAPSHOTS,
                and_(
                    s.account == t.account,
                    s.integration == t.integration,
                    s.started_at == t[part.by],
                ),
            )
            .where(hashed, s.status == "complete", s.superseded_by.is_(None))
            .order_by(s.id, t.id)
        )
    return _Peek(_stream(conn, query))


def verify(engine: Engine, heads: dict[str, Any] | None = None) -> Verification:
    """Recompute every chain in one consistent read, check the connections against their
    current versions, the rows no hash covers, and (given the heads `db heads` printed
    earlier) that each head is still there with its hash."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # one read snapshot for every query below
        else:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return _verify(conn, heads)
        finally:
            conn.rollback()


def _verify(conn: Connection, heads: dict[str, Any] | None) -> Verification:
    readers = _Readers.of(conn)
    wanted = _head_ids(heads)
    chains: dict[tuple[str, str], Chain] = {}
    problems: list[Problem] = []
    streams = {p.key: _part_stream(conn, readers, p) for p in PARTS}
    snapshots = _stream(conn, _snapshot_select(readers).order_by(SNAPSHOTS.c.id))
    for row in snapshots:
        snap = _snapshot_of(readers, row, None)
        key = (snap.account, snap.integration)
        chain = chains.get(key) or chains.setdefault(key, Chain(*key))
        if snap.chain_hash is None:
            if chain.first is None:
                chain.unchained += 1
            elif not chain.broken:
                chain.broken = True
                problems.append(
                    _problem(
                        snap,
                        "snapshots",
                        snap.id,
                        "chain_hash",
                        f"has no hash, but its chain starts at snapshot {chain.first}",
                    )
                )
            continue
        if chain.first is None:
            chain.first = snap.id
        chain.snapshots += 1
        plain_rows = {p.key: _plain_rows(readers, p, streams[p.key], snap.id) for p in PARTS}
        recomputed = chain_hash(snap.prev_hash, canonical_pieces(snap.values, plain_rows))
        if snap.id in wanted:
            chain.recomputed[snap.id] = recomputed
        expected_prev, chain.expected_prev = chain.expected_prev, snap.chain_hash
        if chain.broken:
            continue
        found: list[Problem] = []
        if snap.prev_hash != expected_prev:
            found.append(_link_problem(snap, expected_prev, chain))
        if recomputed != snap.chain_hash:
            found += _localize(conn, readers, snap, linked=not found)
        if found:
            chain.broken = True
            problems += found
    problems += _uncovered(conn)
    problems += current_mismatches(conn)
    if heads is not None:
        problems += _check_heads(conn, heads, chains)
    return Verification(list(chains.values()), problems)


def _problem(
    snap: _Snapshot, table: str | None, row: int | None, column: str | None, text: str
) -> Problem:
    return Problem(snap.account, snap.integration, snap.id, table, row, column, text)


def _link_problem(snap: _Snapshot, expected: str | None, chain: Chain) -> Problem:
    if expected is None and chain.first == snap.id:
        text = (
            "starts its chain but has a prev_hash: the snapshots before it were removed, "
            "or its prev_hash was edited"
        )
    elif snap.prev_hash is None:
        text = "has no prev_hash, but follows a hashed snapshot of its chain"
    else:
        text = (
            "prev_hash is not the chain_hash of the previous snapshot of its chain: a "
            "snapshot between was removed, or a hash was edited"
        )
    return _problem(snap, "snapshots", snap.id, "prev_hash", text)


def _localize(conn: Connection, readers: _Readers, snap: _Snapshot, linked: bool) -> list[Problem]:
    """Where a snapshot whose hash does not match changed: its rows' digests now against
    those kept in chain_rows when it was written."""
    full = _read_snapshot(conn, readers, snap.id)
    try:
        kept = json.loads(full.chain_rows or "")
        if not isinstance(kept, dict) or kept.get("format") != FORMAT:
            raise ValueError
    except ValueError:
        kept = None
    found: list[Problem] = []
    if kept is not None:
        found += _differing(
            snap,
            "snapshots",
            snap.id,
            SNAPSHOT_COLUMNS,
            kept.get("snapshot"),
            column_digests(snap.values),
        )
        for part in PARTS:
            found += _localize_part(conn, readers, snap, part, kept.get(part.key))
    if not found and linked:
        found.append(
            _problem(
                snap,
                "snapshots",
                snap.id,
                "chain_hash",
                "content does not match its hash (its chain_hash, or its rows and "
                "their digests in chain_rows, were edited)",
            )
        )
    return found


def _differing(
    snap: _Snapshot,
    table: str,
    row_id: int,
    columns: Sequence[str],
    kept: Any,
    now: str,
    text: str = "changed since the snapshot was written",
) -> list[Problem]:
    if not isinstance(kept, str) or len(kept) != len(now):
        return [_problem(snap, table, row_id, None, text)] if kept != now else []
    width = 2 * COLUMN_DIGEST_BYTES
    return [
        _problem(snap, table, row_id, name, text)
        for i, name in enumerate(columns)
        if kept[i * width : (i + 1) * width] != now[i * width : (i + 1) * width]
    ]


def _localize_part(
    conn: Connection, readers: _Readers, snap: _Snapshot, part: Part, kept: Any
) -> list[Problem]:
    rows = _part_rows(conn, readers, part, snap)
    now = {row_id: column_digests(values) for row_id, values in rows}
    kept = kept if isinstance(kept, dict) else {}
    kept_ids = {int(k): v for k, v in kept.items() if isinstance(k, str) and k.isdigit()}
    table = part.table_name
    found: list[Problem] = []
    what = "" if part.by is None else f" ({part.key} by this snapshot)"
    for row_id in sorted(kept_ids.keys() | now.keys()):
        if row_id in kept_ids and row_id in now:
            found += _differing(
                snap,
                table,
                row_id,
                part.columns,
                kept_ids[row_id],
                now[row_id],
                f"changed since the snapshot was written{what}",
            )
        elif row_id in now:
            found.append(
                _problem(snap, table, row_id, None, f"inserted: not among the rows hashed{what}")
            )
        else:
            found += _moved_or_deleted(conn, readers, snap, part, row_id, kept_ids[row_id], what)
    return found


def _moved_or_deleted(
    conn: Connection,
    readers: _Readers,
    snap: _Snapshot,
    part: Part,
    row_id: int,
    kept: Any,
    what: str,
) -> list[Problem]:
    """A hashed row the snapshot no longer has: deleted, or edited so that it no longer
    belongs to it (its snapshot_id, key or validity changed)."""
    reader = readers.parts[part.key]
    row = conn.execute(select(*reader.columns).where(part.table.c.id == row_id)).one_or_none()
    if row is None:
        return [_problem(snap, part.table_name, row_id, None, f"deleted{what}")]
    found = _differing(
        snap,
        part.table_name,
        row_id,
        part.columns,
        kept,
        column_digests(reader.plain(row)),
        f"changed since the snapshot was written{what}",
    )
    return found or [_problem(snap, part.table_name, row_id, None, f"no longer in it{what}")]


def _uncovered(conn: Connection) -> list[Problem]:
    """Rows of a chained period that no hash covers: events of a snapshot that does not
    exist, and versions opened or closed after their chain started at a time no applied
    snapshot of their integration started at."""
    s, c, v = SNAPSHOTS.c, CHANGES.c, VERSIONS.c
    problems = [
        Problem(
            a,
            i,
            sid,
            "connection_changes",
            cid,
            "snapshot_id",
            "inserted: its snapshot does not exist",
        )
        for cid, a, i, sid in conn.execute(
            select(c.id, c.account, c.integration, c.snapshot_id)
            .where(~select(s.id).where(s.id == c.snapshot_id).exists())
            .order_by(c.id)
        )
    ]
    starts = (
        select(s.account, s.integration, func.min(s.started_at).label("t0"))
        .where(s.chain_hash.is_not(None))
        .group_by(s.account, s.integration)
        .subquery()
    )
    for column in ("valid_from", "valid_to"):
        matching = (
            select(s.id)
            .where(
                s.account == v.account,
                s.integration == v.integration,
                s.started_at == v[column],
                s.status == "complete",
                s.superseded_by.is_(None),
            )
            .exists()
        )
        rows = conn.execute(
            select(v.id, v.account, v.integration)
            .join(
                starts,
                and_(starts.c.account == v.account, starts.c.integration == v.integration),
            )
            .where(v[column] >= starts.c.t0, ~matching)
            .order_by(v.id)
        )
        problems += [
            Problem(
                a,
                i,
                None,
                "connection_versions",
                vid,
                column,
                "inserted: no applied snapshot of its integration started at its "
                f"{column}, so no hash covers it",
            )
            for vid, a, i in rows
        ]
    return problems


def _head_ids(heads: dict[str, Any] | None) -> set[int]:
    if heads is None:
        return set()
    return {h["snapshot_id"] for h in _head_list(heads) if isinstance(h.get("snapshot_id"), int)}


def _head_list(heads: dict[str, Any]) -> list[dict[str, Any]]:
    listed = heads.get("heads")
    if not isinstance(listed, list):
        return []
    return [h for h in listed if isinstance(h, dict)]


def read_heads(text: str) -> dict[str, Any]:
    """A heads file as `db heads` wrote it; ValueError when it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("heads"), list):
        raise ValueError("not a heads file: expected a JSON object with a 'heads' list")
    for head in data["heads"]:
        if (
            not isinstance(head, dict)
            or {
                "account",
                "integration",
                "snapshot_id",
                "chain_hash",
            }
            - head.keys()
        ):
            raise ValueError(
                "not a heads file: each head needs account, integration, snapshot_id, chain_hash"
            )
    return data


def _check_heads(
    conn: Connection, heads: dict[str, Any], chains: dict[tuple[str, str], Chain]
) -> list[Problem]:
    """Each head is still in its chain with the same hash, and the chain up to it
    recomputes to that hash: nothing at or before it was rewritten or removed."""
    problems: list[Problem] = []
    listed = _head_list(heads)
    if heads.get("digest") != heads_digest(listed):
        problems.append(
            Problem(
                None,
                None,
                None,
                None,
                None,
                None,
                "the heads file's digest does not match its heads (the file was edited)",
            )
        )
    s = SNAPSHOTS.c
    for head in listed:
        account, integration, sid = head["account"], head["integration"], head["snapshot_id"]
        kept_hash = head["chain_hash"]
        column: str | None = "chain_hash"
        text: str | None = None
        chain = chains.get((account, integration))
        row = conn.execute(
            select(s.account, s.integration, s.chain_hash).where(s.id == sid)
        ).first()
        if chain is None:
            text, column = "its whole chain is missing: no snapshot of it is left", None
        elif row is None:
            text, column = "this head is gone: the chain was cut at or before it", None
        elif (row[0], row[1]) != (account, integration):
            text, column = "this head now belongs to another integration", "account"
        elif row[2] != kept_hash:
            text = "its chain_hash is not the one the heads file kept"
        elif chain.recomputed.get(sid) != kept_hash:
            text = "the chain up to this head does not recompute to the hash the heads file kept"
        if text is not None:
            problems.append(Problem(account, integration, sid, "snapshots", sid, column, text))
    return problems


def problem_rows(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    return [
        {
            "chain": p.chain,
            "snapshot": p.snapshot,
            "table": p.table,
            "row": p.row,
            "column": p.column,
            "problem": p.problem,
        }
        for p in problems
    ]


def chain_rows_of(chains: Iterable[Chain]) -> list[dict[str, Any]]:
    return [
        {
            "account": c.account,
            "integration": c.integration,
            "first_snapshot": c.first,
            "unchained_before": c.unchained,
            "snapshots": c.snapshots,
        }
        for c in sorted(chains, key=lambda c: (c.account, c.integration))
    ]


def chain_start(chain: Chain) -> str:
    """Where a chain starts, in words."""
    name = f"{chain.account}/{chain.integration}"
    if chain.first is None:
        return f"{name}: not chained ({chain.unchained} snapshots from before the upgrade)"
    if chain.unchained:
        return (
            f"{name}: chained from snapshot {chain.first}; its {chain.unchained} earlier "
            "snapshots were written before the upgrade and are not covered"
        )
    return f"{name}: chained from its first snapshot ({chain.first})"
