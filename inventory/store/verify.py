"""`db verify` (§13 of the spec): every chain recomputed from the stored rows in one
consistent read, the connections checked against their current versions, the rows no
hash covers, and the heads a `db heads` file kept. It shares nothing with the written
side but the canonical form and the readers, so it stays an independent check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, func, select

from ..canonical import (
    canonical_pieces,
    chain_hash,
    heads_digest,
)
from ..errors import DatabaseError
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
    snapshot_of,
    snapshot_select,
)
from .current import current_mismatches
from .localize import localize
from .problems import Problem, mismatch_problem
from .problems import problem_at as _problem

__all__ = ["Chain", "Problem", "Verification", "mismatch_problem", "verify"]

STREAM_ROWS = 2000  # rows fetched at a time by db verify's server-side cursors


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
    earlier) that each head is still there with its hash.

    On PostgreSQL the checks that are the server's work (rows no hash covers, the
    connections against their versions) run beside the chains on connections of their own
    that read the same snapshot of the database (an exported snapshot), so the server
    answers them while this process hashes."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # one read snapshot for every query below
            try:
                uncovered, mismatched = _uncovered(conn), _mismatched(conn)
                return _verify(conn, heads, [lambda: uncovered, lambda: mismatched])
            finally:
                conn.rollback()
        _begin_serial(conn)
        try:
            snapshot = _exported(conn)
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
                checks = [
                    pool.submit(_on_snapshot, engine, snapshot, check)
                    for check in (_uncovered, _mismatched)
                ]
                try:
                    return _verify(conn, heads, [c.result for c in checks])
                finally:
                    for check in checks:
                        check.cancel()
        finally:
            conn.rollback()


def _begin_serial(conn: Connection) -> None:
    """A read-only repeatable-read transaction that asks for no parallel workers: the
    checks already run at once on connections of their own, and workers each sorting
    the same million rows again (as plans made without statistics do) only add to the
    server's work."""
    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


def _exported(conn: Connection) -> str:
    """This transaction's snapshot, exported for the connections that read beside it."""
    snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    if not isinstance(snapshot, str) or not _SNAPSHOT_ID.fullmatch(snapshot):
        raise DatabaseError(f"pg_export_snapshot() returned {snapshot!r}, not a snapshot id")
    return snapshot


def _on_snapshot(
    engine: Engine, snapshot: str, check: Callable[[Connection], list[Problem]]
) -> list[Problem]:
    """A check run on a connection of its own, in a transaction reading the exported
    snapshot (so it sees exactly what the chains are recomputed from)."""
    with engine.connect() as conn:
        try:
            _begin_serial(conn)
            # SET takes no bind parameters; the id was checked to be one (_exported).
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            return check(conn)
        finally:
            conn.rollback()


def _mismatched(conn: Connection) -> list[Problem]:
    return [mismatch_problem(x) for x in current_mismatches(conn)]


def _verify(
    conn: Connection,
    heads: dict[str, Any] | None,
    checks: Sequence[Callable[[], list[Problem]]],
) -> Verification:
    """``checks``: the problems of the checks beyond the chains, each when asked for."""
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
            found += localize(conn, readers, snap, linked=not found)
        found += outside
        if found:
            chain.broken = True
            problems += found
    for check in checks:
        problems += check()
    if heads is not None:
        problems += _check_heads(conn, heads, chains)
    return Verification(list(chains.values()), problems)


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
    # Per chain, each version's time against the set of its integration's applied
    # snapshots' start times (NOT IN: a hashed set on PostgreSQL, an index on SQLite),
    # so that no plan depends on the tables' statistics: as one anti-join over every
    # chain, a planner that has none (no ANALYZE yet) compares each version with every
    # snapshot.
    chains = conn.execute(
        select(s.account, s.integration)
        .where(s.chain_hash.is_not(None))
        .group_by(s.account, s.integration)
        .order_by(s.account, s.integration)
    ).all()
    for table, column in (
        (t, column) for t in (VERSIONS, CLIENT_VERSIONS) for column in ("valid_from", "valid_to")
    ):
        v = table.c
        rows: list[tuple[int, str, str]] = []
        for account, integration in chains:
            mine = (s.account == account, s.integration == integration)
            chained_from = select(func.min(s.started_at)).where(*mine, s.chain_hash.is_not(None))
            applied = select(s.started_at).where(
                *mine, s.status == "complete", s.superseded_by.is_(None)
            )
            rows += conn.execute(
                select(v.id, v.account, v.integration).where(
                    v.account == account,
                    v.integration == integration,
                    v[column] >= chained_from.scalar_subquery(),
                    v[column].not_in(applied),
                )
            ).tuples()
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
            for vid, a, i in sorted(rows)
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
