"""The chain's canonical form (§13 of the spec), pure: the columns each list of a
snapshot's canonical object holds, how a stored value becomes a plain one, the RFC 8785
bytes of a snapshot piece by piece, its hash, and the short digests chain_rows keeps.

A snapshot's ``chain_hash`` is SHA-256 over its ``prev_hash`` (the previous snapshot's
``chain_hash``, as hex text; nothing for a chain's first) followed by its canonical bytes:
the RFC 8785 JSON of

    {"changes": [its connection_changes rows, id order],
     "client_closed": [the oauth_client_versions rows it closed],
     "client_opened": [the oauth_client_versions rows it opened, without valid_to],
     "closed":  [the connection_versions rows it closed (valid_to = its started_at)],
     "columns": {the column names of each list, in the order of the values},
     "format":  2,
     "opened":  [the versions it opened (valid_from = its started_at), without valid_to],
     "snapshot": [its audit columns]}

Format 1 (the snapshots hashed before the OAuth clients' tables existed; ``chain_format``
NULL) has no "client_closed" and "client_opened" lists; `db verify` still reads it.

each row an array of its values: timestamps as RFC 3339 UTC text with microseconds, NULL
as null, booleans and integers as JSON ones. Only applied snapshots (complete, not
superseded) open or close versions.

``chain_rows`` keeps short digests that prove nothing: they only say which row and column
a broken hash changed. Its ``digests`` format 2 (``RowDigests``) keeps, per list, the row
ids in order, a CRC-32 of each row's canonical bytes and, per block of ``BLOCK_ROWS``
rows, a CRC-32 of each column's values; format 1 (no ``digests`` key, written before)
kept 16 bits per value.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zlib import crc32

import orjson
import rfc8785

FORMAT = 2  # of the snapshots hashed from now on; FORMATS are every one db verify reads
COLUMN_DIGEST_BYTES = 2  # per value in chain_rows' digests format 1: 4 hex characters
DIGESTS = 2  # chain_rows' digests format written now (RowDigests)
BLOCK_ROWS = 256  # rows per block of column digests

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
CHAIN_COLUMNS = ("prev_hash", "chain_hash", "chain_rows", "chain_format")
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

CLIENT_METADATA = (
    "name",
    "auth_url",
    "token_url",
    "grant_type",
    "default_scopes",
    "created_by",
    "created_at",
    "updated_at",
)
CLIENT_OPENED_COLUMNS = ("id", "account", "integration", "uuid", *CLIENT_METADATA, "valid_from")
CLIENT_CLOSED_COLUMNS = (*CLIENT_OPENED_COLUMNS, "valid_to")

Parts = tuple[tuple[str, tuple[str, ...]], ...]
# The lists of the canonical object that hold rows, in its key order, with their columns,
# per format.
PARTS_OF_FORMAT: dict[int, Parts] = {
    1: (
        ("changes", CHANGE_COLUMNS),
        ("closed", CLOSED_COLUMNS),
        ("opened", OPENED_COLUMNS),
    ),
    2: (
        ("changes", CHANGE_COLUMNS),
        ("client_closed", CLIENT_CLOSED_COLUMNS),
        ("client_opened", CLIENT_OPENED_COLUMNS),
        ("closed", CLOSED_COLUMNS),
        ("opened", OPENED_COLUMNS),
    ),
}
FORMATS = tuple(PARTS_OF_FORMAT)
PART_COLUMNS = PARTS_OF_FORMAT[FORMAT]  # every part of any format: the newest has them all
COLUMNS_JSON = {
    format_: rfc8785.dumps(
        {**{key: list(columns) for key, columns in parts}, "snapshot": list(SNAPSHOT_COLUMNS)}
    )
    for format_, parts in PARTS_OF_FORMAT.items()
}


# --- values --------------------------------------------------------------------------


def timestamp_text(value: Any) -> Any:
    """A timestamp as RFC 3339 UTC text with microseconds. Stored timestamps are read as
    text (SQLite's as stored, PostgreSQL's rendered by the server in this form: see
    ``store.chain.Reader``), so that a value edited into something no timestamp is still
    gives a value to hash rather than an error."""
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is UTC:  # as the sync binds them
        return f"{value.isoformat(timespec='microseconds')[:-6]}Z"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return _unexpected(value)
        if len(value) == 26 and value[10] == " " and value[19] == ".":  # as stored
            return f"{value[:10]}T{value[11:]}Z"
        if len(value) == 27 and value[10] == "T" and value[19] == "." and value[26] == "Z":
            return value  # already this form (PostgreSQL's, see store.chain.Reader)
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


_PLAIN_TYPES = frozenset((str, int, bool, type(None)))
# orjson writes text, booleans and NULL as RFC 8785 does; STRICT_INTEGER refuses an
# integer outside JSON's exact range, and text that is no UTF-8 (a lone surrogate) is
# refused too: both go to rfc8785.
_ORJSON_OPTIONS = orjson.OPT_STRICT_INTEGER


def value_json(values: Sequence[Any]) -> bytes:
    """One row's values as an RFC 8785 array.

    A row of text, integers within JSON's exact range, booleans and NULLs (every row the
    schema holds, unless edited by hand) is written by orjson, whose output for those
    values is RFC 8785's, at a tenth of the CPU of the pure-Python rfc8785
    (docs/decisions.md); a property test holds it to ``rfc8785.dumps``, which writes
    every other row (floats, dicts, anything else orjson would write its own way)."""
    if _PLAIN_TYPES.issuperset(map(type, values)):
        try:
            return orjson.dumps(values, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            pass
    return _rfc8785_array(values)


def _rfc8785_array(values: Sequence[Any]) -> bytes:
    try:
        return rfc8785.dumps(values)
    except rfc8785.CanonicalizationError:
        return rfc8785.dumps([_safe(v) for v in values])


def column_digests(values: Sequence[Any]) -> str:
    """A short checksum of each plain value, concatenated: what chain_rows keeps of the
    snapshot row, and kept of every row in its format 1 (16 bits of the CRC-32 of its
    repr, which is as stable as the value: str, int, bool, None, or an unexpected value's
    dict). It only locates a change the hash proved."""
    return "".join(
        "%04x" % (crc32(repr(v).encode("utf-8", "surrogatepass")) & 0xFFFF) for v in values
    )


def row_digest(encoded: bytes) -> str:
    """The CRC-32 of a row's canonical bytes (``value_json``), as chain_rows keeps it."""
    return f"{crc32(encoded):08x}"


def block_digests(rows: Sequence[Sequence[Any]]) -> str:
    """The CRC-32 of each column's plain values over a block of rows (of their repr, as
    ``column_digests`` takes a value), concatenated in column order."""
    return "".join(
        f"{crc32(repr(column).encode('utf-8', 'surrogatepass')):08x}"
        for column in zip(*rows, strict=True)
    )


class RowDigests:
    """What chain_rows (format 2) keeps of one list of a snapshot: its row ids in order,
    each row's ``row_digest`` and each block's ``block_digests``; ``add`` takes the rows
    in the order they are hashed."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._rows: list[int] = []
        self._blocks: list[str] = []
        self._block: list[Sequence[Any]] = []

    def add(self, row_id: int, values: Sequence[Any], encoded: bytes) -> None:
        self.ids.append(row_id)
        self._rows.append(crc32(encoded))  # row_digest, written by kept()
        self._block.append(values)
        if len(self._block) == BLOCK_ROWS:
            self._blocks.append(block_digests(self._block))
            self._block = []

    def kept(self) -> dict[str, Any]:
        blocks = self._blocks + ([block_digests(self._block)] if self._block else [])
        rows = struct.pack(f">{len(self._rows)}I", *self._rows).hex()  # 8 hex digits each
        return {"ids": self.ids, "rows": rows, "blocks": blocks}


# --- the canonical form --------------------------------------------------------------


def canonical_pieces(
    snapshot: Sequence[Any], rows: Mapping[str, Iterable[Sequence[Any]]], format_: int = FORMAT
) -> Iterator[bytes]:
    """The canonical bytes of a snapshot in ``format_``, piece by piece (rows of plain
    values): joined, they are ``rfc8785.dumps`` of the whole object, but no list is held
    whole."""
    encoded = {key: map(value_json, part) for key, part in rows.items()}
    return encoded_pieces(snapshot, encoded, format_)


def encoded_pieces(
    snapshot: Sequence[Any], rows: Mapping[str, Iterable[bytes]], format_: int = FORMAT
) -> Iterator[bytes]:
    """``canonical_pieces`` of rows already written by ``value_json``. RFC 8785 sorts the
    keys: "columns" and "format" fall between "closed" and "opened"."""
    yield b"{"
    for key, _ in PARTS_OF_FORMAT[format_]:
        if key == "opened":
            yield b'"columns":' + COLUMNS_JSON[format_] + b',"format":' + str(format_).encode()
            yield b","
        yield b'"' + key.encode() + b'":['
        first = True
        for row in rows.get(key, ()):
            if not first:
                yield b","
            first = False
            yield row
        yield b"],"
    yield b'"snapshot":' + value_json(snapshot) + b"}"


def canonical_object(
    snapshot: Sequence[Any], rows: dict[str, list[list[Any]]], format_: int = FORMAT
) -> dict[str, Any]:
    """The object ``canonical_pieces`` serializes (for tests and for reading)."""
    parts = PARTS_OF_FORMAT[format_]
    return {
        **{key: rows.get(key, []) for key, _ in parts},
        "columns": {
            **{key: list(columns) for key, columns in parts},
            "snapshot": list(SNAPSHOT_COLUMNS),
        },
        "format": format_,
        "snapshot": list(snapshot),
    }


def chain_hash(prev_hash: str | None, pieces: Iterable[bytes]) -> str:
    digest = hashlib.sha256((prev_hash or "").encode("ascii", "replace"))
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def heads_digest(heads: list[dict[str, Any]]) -> str:
    return hashlib.sha256(rfc8785.dumps(heads)).hexdigest()
