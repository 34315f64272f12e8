"""Many rows into one table, in chunks: one insert per dialect behind ``insert_rows``.

PostgreSQL takes them by psycopg's binary COPY (its executemany sends one statement per
row); SQLite by the driver's executemany, whose statements run inside the library.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Date, Integer, String, Table
from sqlalchemy.exc import DBAPIError

from .. import models as m
from ..batches import batched

CHUNK = 1000  # rows built and sent at a time, so a large first sync never holds them all


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fixed: Mapping[str, Any] | None = None,
) -> int:
    """Insert ``rows`` (values of ``columns``, in order) into ``table``; ``fixed`` gives
    columns whose value is the same in every row. Returns how many were inserted."""
    fixed = dict(fixed or {})
    if conn.dialect.name == "postgresql":
        return insert_postgresql(conn, table, columns, rows, fixed)
    return insert_sqlite(conn, table, columns, rows, fixed)


def insert_sqlite(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fixed: Mapping[str, Any],
) -> int:
    """The driver's executemany, with timestamps as SQLAlchemy stores them in SQLite
    (UTC text): SQLAlchemy's own executemany processes every value of every row in
    Python, which took three quarters of a first sync's time (docs/decisions.md)."""
    names = (*columns, *fixed)
    quoted = ", ".join(f'"{c}"' for c in names)
    statement = f"INSERT INTO {table.name} ({quoted}) VALUES ({', '.join('?' * len(names))})"
    tail = tuple(sqlite_value(v) if isinstance(v, date) else v for v in fixed.values())
    stamps = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, m.UTCDateTime | Date)]
    count = 0
    with _driver_cursor(conn, statement) as cursor:
        for chunk in batched(rows, CHUNK):
            values = [[*row, *tail] for row in chunk]
            for row in values:
                for i in stamps:
                    if row[i] is not None:
                        row[i] = sqlite_value(row[i])
            cursor.executemany(statement, values)
            count += len(chunk)
    return count


def sqlite_value(value: date) -> str:
    """A datetime as SQLAlchemy stores it in SQLite (models.UTCDateTime): UTC text with
    six fractional digits, so that text comparisons in SQL agree with time order; a date
    as its Date type does (YYYY-MM-DD)."""
    if not isinstance(value, datetime):
        return value.isoformat()
    if value.tzinfo is UTC:  # as parsed and as the clock gives them
        return value.isoformat(" ", "microseconds")[:-6]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def insert_postgresql(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fixed: Mapping[str, Any],
) -> int:
    """Binary COPY. The session runs in UTC and values are as the columns hold them, so
    psycopg sends each as it is; its errors are raised as SQLAlchemy would raise them."""
    names = (*columns, *fixed)
    quoted = ", ".join(f'"{c}"' for c in names)
    statement = f"COPY {table.name} ({quoted}) FROM STDIN (FORMAT BINARY)"
    types = [_pg_type(table.c[c].type) for c in names]
    tail = tuple(fixed.values())
    count = 0
    with _driver_cursor(conn, statement) as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for chunk in batched(rows, CHUNK):
            for row in chunk:
                copy.write_row((*row, *tail))
            count += len(chunk)
    return count


@contextmanager
def _driver_cursor(conn: Connection, statement: str) -> Iterator[Any]:
    """A cursor of the driver, in this transaction; its errors are raised as the
    DBAPIError SQLAlchemy would raise, which the store's boundary turns into ours."""
    driver: Any = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        cursor = driver.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    except dbapi_error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi_error) from exc


def _pg_type(kind: Any) -> str:
    """The PostgreSQL type a column's values are sent as in a binary COPY."""
    if isinstance(kind, m.UTCDateTime):
        return "timestamptz"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, String):  # Text is a String
        return "text"
    raise TypeError(f"no COPY type for {kind!r}")
