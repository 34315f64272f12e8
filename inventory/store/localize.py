"""Where a snapshot whose hash no longer matches changed (§13): its rows now against the
digests its ``chain_rows`` kept when it was written, in either of their formats (format 2:
a CRC-32 per row and per column of each block of rows; format 1: 16 bits per value). The
digests prove nothing; they only name the rows and columns the hash proved changed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from ..canonical import (
    BLOCK_ROWS,
    COLUMN_DIGEST_BYTES,
    DIGESTS,
    SNAPSHOT_COLUMNS,
    block_digests,
    column_digests,
    row_digest,
    value_json,
)
from .chain import PARTS_OF, Part, Readers, StoredSnapshot, part_rows, read_snapshot
from .problems import Problem
from .problems import problem_at as _problem


def localize(
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
