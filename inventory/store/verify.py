"""`db verify` (§13 of the spec): every chain recomputed from the stored rows in one
consistent read, the connections checked against their current versions, the rows no
hash covers, and the heads a `db heads` file kept. It shares nothing with the written
side but the canonical form and the readers, so it stays an independent check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Select, and_, func, select

from ..canonical import (
    BLOCK_ROWS,
    COLUMN_DIGEST_BYTES,
    DIGESTS,
    SNAPSHOT_COLUMNS,
    block_digests,
    canonical_pieces,
    chain_hash,
    column_digests,
    heads_digest,
    row_digest,
    value_json,
)
from .chain import (
    CHANGES,
    CLIENT_VERSIONS,
    PARTS,
    PARTS_OF,
    SNAPSHOTS,
    VERSIONS,
    Part,
    Readers,
    StoredSnapshot,
    part_rows,
    read_snapshot,
    snapshot_of,
    snapshot_select,
)
from .current import Mismatch, current_mismatches

STREAM_ROWS = 2000  # rows fetched at a time by db verify's server-side cursors


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


def mismatch_problem(mismatch: Mismatch) -> Problem:
    """A mismatch as `db verify` names it: the row, the column, what is wrong."""
    x = mismatch
    if x.kind == "orphan":
        return Problem(
            x.account,
            x.integration,
            None,
            x.versions,
            x.version,
            None,
            f"current, but has no {x.table} row",
        )
    column: str | None = None
    if x.kind == "removed":
        column, text = "removed_at", f"removed, but {x.versions} row {x.version} is current"
    elif x.kind == "no version":
        text = f"present, but has no current {x.versions} row"
    elif x.kind == "several versions":
        text = f"present, with {x.current} current {x.versions} rows"
    else:
        held = "valid_from" if x.column == "last_changed_at" else x.column
        column = x.column
        text = f"differs from its current version ({x.versions} row {x.version} {held})"
    return Problem(x.account, x.integration, None, x.table, x.connection, column, text)


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
    readers: Readers, part: Part, stream: _Peek, snapshot_id: int
) -> Iterator[list[Any]]:
    reader = readers.parts[part.key]
    for row in stream.take(snapshot_id):
        yield reader.plain(row)


def _stream(conn: Connection, query: Select[Any]) -> Iterator[Sequence[Any]]:
    result = conn.execution_options(yield_per=STREAM_ROWS).execute(query)
    yield from result


def _part_stream(conn: Connection, readers: Readers, part: Part) -> _Peek:
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
    readers = Readers.of(conn)
    wanted = _head_ids(heads)
    chains: dict[tuple[str, str], Chain] = {}
    problems: list[Problem] = []
    streams = {p.key: _part_stream(conn, readers, p) for p in PARTS}
    snapshots = _stream(conn, snapshot_select(readers).order_by(SNAPSHOTS.c.id))
    for row in snapshots:
        snap = snapshot_of(readers, row, None)
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
        parts = PARTS_OF.get(snap.format, ())
        plain_rows = {p.key: _plain_rows(readers, p, streams[p.key], snap.id) for p in parts}
        if parts:
            recomputed = chain_hash(
                snap.prev_hash, canonical_pieces(snap.values, plain_rows, snap.format)
            )
        else:
            recomputed = ""
        # Rows of a part its format does not have (format 1: the OAuth clients' versions).
        outside = [
            _problem(snap, p.table_name, row[0], None, f"inserted: not among the rows hashed "
                     f"(its format, {snap.format!r}, has no {p.key})")
            for p in PARTS
            if p not in parts
            for row in streams[p.key].take(snap.id)
        ]  # fmt: skip
        if snap.id in wanted:
            chain.recomputed[snap.id] = recomputed
        expected_prev, chain.expected_prev = chain.expected_prev, snap.chain_hash
        if chain.broken:
            continue
        found: list[Problem] = []
        if snap.prev_hash != expected_prev:
            found.append(_link_problem(snap, expected_prev, chain))
        if not parts:
            found.append(
                _problem(snap, "snapshots", snap.id, "chain_format", "is not a known format")
            )
        elif recomputed != snap.chain_hash:
            found += _localize(conn, readers, snap, linked=not found)
        found += outside
        if found:
            chain.broken = True
            problems += found
    problems += _uncovered(conn)
    problems += [mismatch_problem(x) for x in current_mismatches(conn)]
    if heads is not None:
        problems += _check_heads(conn, heads, chains)
    return Verification(list(chains.values()), problems)


def _problem(
    snap: StoredSnapshot, table: str | None, row: int | None, column: str | None, text: str
) -> Problem:
    return Problem(snap.account, snap.integration, snap.id, table, row, column, text)


def _link_problem(snap: StoredSnapshot, expected: str | None, chain: Chain) -> Problem:
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


def _localize(
    conn: Connection, readers: Readers, snap: StoredSnapshot, linked: bool
) -> list[Problem]:
    """Where a snapshot whose hash does not match changed: its rows' digests now against
    those kept in chain_rows when it was written."""
    full = read_snapshot(conn, readers, snap.id)
    try:
        kept = json.loads(full.chain_rows or "")
        if not isinstance(kept, dict) or kept.get("format") != snap.format:
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
        localize = _localize_rows if kept.get("digests") == DIGESTS else _localize_part
        for part in PARTS_OF[snap.format]:
            found += localize(conn, readers, snap, part, kept.get(part.key))
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
    snap: StoredSnapshot,
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
    conn: Connection, readers: Readers, snap: StoredSnapshot, part: Part, kept: Any
) -> list[Problem]:
    """A part's rows now against chain_rows format 1: a digest per value of each row."""
    rows = part_rows(conn, readers, part, snap)
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


class _Kept(NamedTuple):
    """A part's chain_rows format 2, checked: row ids, row digests, block digests."""

    ids: list[int]
    rows: dict[int, str]
    blocks: list[str]

    @classmethod
    def of(cls, kept: Any) -> _Kept:
        """What a stored part keeps; an unreadable one keeps nothing (every row it has
        now is then named as inserted)."""
        try:
            ids, rows, blocks = kept["ids"], kept["rows"], kept["blocks"]
            if not (
                isinstance(ids, list)
                and all(type(i) is int for i in ids)
                and isinstance(rows, str)
                and len(rows) == 8 * len(ids)
                and isinstance(blocks, list)
                and all(isinstance(b, str) for b in blocks)
            ):
                raise TypeError
        except (KeyError, TypeError):
            return cls([], {}, [])
        return cls(ids, {i: rows[8 * n : 8 * n + 8] for n, i in enumerate(ids)}, blocks)


def _localize_rows(
    conn: Connection, readers: Readers, snap: StoredSnapshot, part: Part, stored: Any
) -> list[Problem]:
    """A part's rows now against chain_rows format 2: the row digests name the rows
    inserted, deleted or changed; where one row of a block changed, its block's column
    digests name the columns."""
    kept = _Kept.of(stored)
    now = dict(part_rows(conn, readers, part, snap))
    table = part.table_name
    what = "" if part.by is None else f" ({part.key} by this snapshot)"
    changed = f"changed since the snapshot was written{what}"
    found: list[Problem] = []
    moved: dict[int, list[Any]] = {}
    by_block: dict[int, list[int]] = {}
    place = {row_id: n for n, row_id in enumerate(kept.ids)}
    reader = readers.parts[part.key]
    for row_id in sorted(kept.rows.keys() | now.keys()):
        if row_id not in kept.rows:
            found.append(
                _problem(snap, table, row_id, None, f"inserted: not among the rows hashed{what}")
            )
            continue
        values = now.get(row_id)
        if values is None:
            row = conn.execute(
                select(*reader.columns).where(part.table.c.id == row_id)
            ).one_or_none()
            if row is None:
                found.append(_problem(snap, table, row_id, None, f"deleted{what}"))
                continue
            values = moved[row_id] = reader.plain(row)
            if row_digest(value_json(values)) == kept.rows[row_id]:
                found.append(_problem(snap, table, row_id, None, f"no longer in it{what}"))
                continue
        elif row_digest(value_json(values)) == kept.rows[row_id]:
            continue
        by_block.setdefault(place[row_id] // BLOCK_ROWS, []).append(row_id)
    for block, row_ids in sorted(by_block.items()):
        columns = _block_columns(kept, block, part.columns, {**now, **moved})
        if len(row_ids) == 1 and columns:
            found += [_problem(snap, table, row_ids[0], c, changed) for c in columns]
        else:
            found += [_problem(snap, table, row_id, None, changed) for row_id in row_ids]
    return found


def _block_columns(
    kept: _Kept, block: int, columns: Sequence[str], rows: dict[int, list[Any]]
) -> list[str]:
    """The columns whose digest over a block of rows differs from the one kept; none when
    the block cannot be rebuilt (a row of it was deleted)."""
    ids = kept.ids[block * BLOCK_ROWS : (block + 1) * BLOCK_ROWS]
    if block >= len(kept.blocks) or any(i not in rows for i in ids):
        return []
    now, was = block_digests([rows[i] for i in ids]), kept.blocks[block]
    if len(now) != len(was):
        return []
    return [c for n, c in enumerate(columns) if now[8 * n : 8 * n + 8] != was[8 * n : 8 * n + 8]]


def _moved_or_deleted(
    conn: Connection,
    readers: Readers,
    snap: StoredSnapshot,
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
    s, c = SNAPSHOTS.c, CHANGES.c
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
    for table, column in (
        (t, column) for t in (VERSIONS, CLIENT_VERSIONS) for column in ("valid_from", "valid_to")
    ):
        v = table.c
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
                table.name,
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
