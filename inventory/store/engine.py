"""Engines and URLs: SQLite (a private file, BEGIN IMMEDIATE, WAL) and PostgreSQL
(psycopg 3, UTC sessions); and the one place SQLAlchemy errors become ours.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config import Settings
from ..errors import ConfigError, DatabaseError, InventoryError

READ_ONLY_OPTION = "inventory_read_only"  # an execution option: SQLite's BEGIN, not IMMEDIATE


def now() -> datetime:
    return datetime.now(UTC)


def engine_for(settings: Settings, *, readonly: bool = False) -> Engine:
    """The engine of the configured database, its pool sized for the sync workers (each may
    hold a claim connection and a write connection) and the run's own."""
    return make_engine(
        settings.database_url,
        busy_timeout=settings.database.busy_timeout_seconds,
        readonly=readonly,
        pool_size=2 * settings.sync.concurrency + 2,
    )


def normalize_url(url: str) -> str:
    """A plain postgresql:// URL means psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# Query settings of a URL that hold a secret (libpq takes a password there too).
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})


def _secret_query(key: str) -> bool:
    return key.lower() in SECRET_QUERY_KEYS


def safe_url(url: str) -> str:
    """The URL with any password masked (in its user part and in its query), for
    messages."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        return "(unparseable database URL)"
    query = {k: ("***" if _secret_query(k) else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def portable_url(url: str) -> str:
    """The URL with no password (not even a masked one) and a SQLite file's path made
    absolute: it names the same database from any directory, and may be written down."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise ConfigError("database.url: not a database URL") from None
    database = parsed.database or ""
    plain_file = database not in ("", ":memory:") and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and plain_file:
        parsed = parsed.set(database=os.path.abspath(database))
    query = {k: v for k, v in parsed.query.items() if not _secret_query(k)}
    bare = URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, query
    )  # (URL.set takes password=None as "unchanged")
    return bare.render_as_string(hide_password=False)


def named_database(given: str, configured: str) -> str:
    """``--database``'s URL; when it has no password and names the database the
    configuration names (same user, host, port and database), with that one's password,
    so a command written down without the password still connects. Otherwise the password
    comes from where libpq looks (PGPASSWORD, ~/.pgpass)."""
    try:
        wanted, known = make_url(normalize_url(given)), make_url(normalize_url(configured))
    except ArgumentError:
        return given
    if wanted.password is not None or known.password is None:
        return given
    if make_url(portable_url(given)) == make_url(portable_url(configured)):
        return wanted.set(password=known.password).render_as_string(hide_password=False)
    return given


def make_engine(
    url: str, *, busy_timeout: float = 30.0, readonly: bool = False, pool_size: int = 5
) -> Engine:
    """An engine for SQLite (file created 0600, BEGIN IMMEDIATE) or PostgreSQL (psycopg 3).

    ``readonly`` engines (the reports) never create, lock or write: SQLite opens the file
    with mode=ro, PostgreSQL sessions are read-only transactions.
    """
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise ConfigError(
            "database.url: not a database URL; use sqlite:///path/to/file.db or "
            "postgresql://user@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        plain_file = database and database != ":memory:" and not database.startswith("file:")
        if readonly:
            if plain_file and not Path(database).is_file():
                raise ConfigError(f"database {database} does not exist; run a sync first")
            if plain_file:
                parsed = parsed.set(
                    database=f"file:{Path(database).resolve()}", query={"mode": "ro", "uri": "true"}
                )
            return create_engine(parsed, connect_args={"timeout": busy_timeout})
        if plain_file:
            _create_private_file(Path(database))
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout})
        _sqlite_transactions(engine, busy_timeout)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ConfigError(
                f"database.url: use postgresql:// (psycopg 3), not {parsed.drivername}://"
            )
        # Options the URL gives are kept. Sessions run in UTC, so timestamps come back as
        # UTC datetimes with nothing to convert.
        given = parsed.query.get("options", ())
        options = [*((given,) if isinstance(given, str) else given), "-c TimeZone=UTC"]
        if readonly:
            options.append("-c default_transaction_read_only=on")
        connect_args: dict[str, Any] = {
            "connect_timeout": max(1, int(busy_timeout)),
            "options": " ".join(options),
        }
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=pool_size, connect_args=connect_args
        )
    raise ConfigError(
        f"database.url: unsupported database {backend!r}; use sqlite:/// or postgresql://"
    )


def is_sqlite_url(url: str) -> bool:
    try:
        return make_url(normalize_url(url)).get_backend_name() == "sqlite"
    except ArgumentError:
        return False


def missing_sqlite_file(url: str) -> bool:
    parsed = make_url(normalize_url(url))
    database = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    )


def _create_private_file(path: Path) -> None:
    if path.exists():
        return
    if not path.parent.exists():
        raise DatabaseError(f"database directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process (a second sync started at once) made it meanwhile
    except OSError as exc:
        raise DatabaseError(f"cannot create database file {path}: {exc.strerror}") from None
    os.close(fd)


def _sqlite_transactions(engine: Engine, busy_timeout: float) -> None:
    # pysqlite's own transaction handling defers BEGIN and never takes the write lock up
    # front; take over so every transaction is BEGIN IMMEDIATE: the state read inside it
    # is then the state the write applies to, and concurrent syncs queue on the lock.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        with closing(dbapi_connection.cursor()) as cursor:
            cursor.execute("PRAGMA foreign_keys=ON")
            _wal_mode(cursor, busy_timeout)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A connection opened with READ_ONLY reads beside the writer (WAL) instead.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _wal_mode(cursor: sqlite3.Cursor, busy_timeout: float) -> None:
    """Put the file in WAL mode (it stays so). While a new file is being switched, or is
    written in its first mode, SQLite answers "database is locked" at once instead of
    waiting as it does for other locks: a second process opening the file at that moment
    (two syncs started together) tries again until the busy timeout."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


_HINTS = {
    "database is locked": "another process held the write lock longer than "
    "database.busy_timeout_seconds",
    "disk I/O error": "is the disk full, or the file on a read-only or failing device?",
    "database or disk is full": "free some space",
    "readonly database": "the file or its directory is not writable",
}


def describe_db_error(engine: Engine | Connection, exc: SQLAlchemyError) -> str:
    """A one-line cause without SQL, parameters or the password, with a hint if known."""
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    hint = next((h for text, h in _HINTS.items() if text in first), None)
    where = safe_url(engine.engine.url.render_as_string(hide_password=False))
    return f"{where}: {first}" + (f" ({hint})" if hint else "")


@contextmanager
def database_errors(
    engine: Engine | Connection, doing: str, error: type[InventoryError] = DatabaseError
) -> Iterator[None]:
    """The store's boundary: a SQLAlchemy error raised inside becomes ``error`` (a
    DatabaseError unless told) saying ``doing`` and the cause, never SQL or parameters."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise error(f"{doing}: {describe_db_error(engine, exc)}") from None


def check_reachable(engine: Engine) -> None:
    with database_errors(engine, "database unreachable"), engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def lock_key(account: str, integration: str, salt: str = "write") -> int:
    digest = hashlib.blake2b(f"{salt}\0{account}\0{integration}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
