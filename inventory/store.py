"""The database side: engines, schema migrations, locks, reading an integration's current
state, and writing one snapshot's changes in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence, Set
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property
from importlib.resources import files
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from . import models as m
from .config import Settings
from .diff import Diff, Event, Key, Stored
from .errors import ConfigError, DatabaseError, SnapshotError
from .notify import enqueue_snapshot
from .records import METADATA_FIELDS, TIMESTAMP_FIELDS, chunk_set
from .records import Connection as Record

log = logging.getLogger(__name__)

RUN_LOCK_CLASS = 0x5A15  # pg_advisory_lock(int, int) key space for live sync runs
MIGRATION_LOCK = 0x5A15_0000_0000_0001  # pg_advisory_xact_lock(bigint) for migrations
INSERT_CHUNK = 1000
STATE_CHUNK = 10_000  # rows of the stored state per read, on SQLite
READ_ONLY_OPTION = "inventory_read_only"  # an execution option: SQLite's BEGIN, not IMMEDIATE
SQLITE_AWARE = "\"{}\" || '+00:00'"  # a SQLite timestamp column, as aware ISO text
SNAPSHOTS = cast(Table, m.Snapshot.__table__)
CONNECTIONS = cast(Table, m.Connection.__table__)
VERSIONS = cast(Table, m.ConnectionVersion.__table__)
CHANGES = cast(Table, m.ConnectionChange.__table__)
CHUNKS = cast(Table, m.FetchedChunks.__table__)
RECORD_FIELDS = ("type", "name", *METADATA_FIELDS)  # a Record, in order
RECORD_COLUMNS = ("account", "integration", *RECORD_FIELDS)
TIMESTAMP_POSITIONS = tuple(i for i, f in enumerate(RECORD_FIELDS) if f in TIMESTAMP_FIELDS)


def now() -> datetime:
    return datetime.now(UTC)


def sqlite_value(value: datetime) -> str:
    """A datetime as SQLAlchemy stores it in SQLite: UTC text with microseconds."""
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (the fastest here)
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond
    )  # fmt: skip


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def sqlite_json(rows: list[Sequence[Any]]) -> str | None:
    """Rows as the JSON array SQLite unpacks with json_each, timestamps as stored; None
    when a value holds a NUL, which SQLite's JSON functions would cut short. Records and
    events are tuples, which the encoder writes as arrays itself: only their timestamps
    call back into Python."""
    text = json.dumps(rows, ensure_ascii=False, default=_sqlite_json_value)
    return None if "\\u0000" in text else text


def sqlite_json_columns(
    rows: list[Sequence[Any]], timestamps: Collection[int] = ()
) -> tuple[list[int], str] | None:
    """The positions of the columns some row has a value in, and the rows as
    ``sqlite_json`` gives them with those columns only (the first column at least, so
    that every row is still there); None as there. The columns at ``timestamps`` hold
    datetimes or None, written as stored a column at a time: the encoder calling back
    into Python for each datetime costs a third more."""
    columns = list(zip(*rows, strict=True))
    used = [i for i, values in enumerate(columns) if values.count(None) != len(values)] or [0]
    picked = [
        [None if v is None else sqlite_value(v) for v in columns[i]]
        if i in timestamps
        else columns[i]
        for i in used
    ]
    text = sqlite_json(list(zip(*picked, strict=True)))
    return None if text is None else (used, text)


def _sqlite_json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return sqlite_value(value)
    raise TypeError(f"a {type(value).__name__} is not a value of a stored row")


# --- engines -----------------------------------------------------------------------


def engine_for(settings: Settings, *, readonly: bool = False) -> Engine:
    """The engine of the configured database, its pool sized for the sync workers (each may
    hold a claim connection and a write connection), the run's own and its chunk reader."""
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


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable database URL)"


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


@cache  # one SQLite library per process
def sqlite_has_json() -> bool:
    """Whether SQLite has what the JSON ways of moving rows use: its JSON functions (built
    in since 3.38, and in most builds before), row values (3.15) and UPDATE ... FROM
    (3.33). Without them, rows go to and from SQLite one by one."""
    try:
        with closing(sqlite3.connect(":memory:")) as db:
            db.execute(
                "SELECT json_group_array(json_array(json_extract(value, '$[0]'))) "
                "FROM json_each('[[1]]') WHERE (1, 'b') > (1, 'a')"
            )
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a)")
            db.execute(
                "UPDATE t SET a = 1 FROM (SELECT json_extract(value, '$[0]') AS id "
                "FROM json_each('[[1]]') LIMIT -1) AS v WHERE t.id = v.id"
            )
    except sqlite3.Error:
        return False
    return True


_HINTS = {
    "database is locked": "another process held the write lock longer than "
    "database.busy_timeout_seconds",
    "disk I/O error": "is the disk full, or the file on a read-only or failing device?",
    "database or disk is full": "free some space",
    "readonly database": "the file or its directory is not writable",
    "JSON cannot hold BLOB values": "a row holds a binary value where text belongs; was it "
    "changed outside zis-inventory?",
}


def describe_db_error(engine: Engine, exc: SQLAlchemyError) -> str:
    """A one-line cause without SQL, parameters or the password, with a hint if known."""
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    hint = next((h for text, h in _HINTS.items() if text in first), None)
    where = safe_url(engine.url.render_as_string(hide_password=False))
    return f"{where}: {first}" + (f" ({hint})" if hint else "")


# --- schema --------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("inventory.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache  # the migration scripts do not change while the process runs
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` under a lock; returns (revision before, revision after)."""
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(alembic_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        command.downgrade(alembic_config(conn), revision)


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database unreachable: {describe_db_error(engine, exc)}") from None


def ensure_schema(engine: Engine, *, migrate: bool) -> str | None:
    """Bring the database to the head revision; a message when something was done."""
    check_reachable(engine)
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return None
    if current is not None and current not in _known_revisions():
        raise DatabaseError(
            f"database is at schema revision {current}, which this version of zis-inventory "
            "does not know (a newer version wrote it); upgrade zis-inventory"
        )
    if not migrate:
        where = "empty" if current is None else f"at revision {current}"
        raise DatabaseError(
            f"database is {where}, not at schema head {head}; run "
            "'python -m inventory db upgrade' or sync without --no-migrate"
        )
    before, after = upgrade(engine)
    if before == after:
        return None
    return f"database migrated from {before or 'empty'} to {after}"


def require_schema(engine: Engine) -> None:
    """For read-only commands: the schema must exist and be at head; they never migrate."""
    check_reachable(engine)
    current = current_revision(engine)
    where = safe_url(engine.url.render_as_string(hide_password=False))
    if current is None:
        raise ConfigError(
            f"{where} has no zis-inventory schema; run 'python -m inventory sync' "
            "(or 'db upgrade') against it first"
        )
    if current != head_revision():
        raise ConfigError(
            f"{where} is at schema revision {current}, not {head_revision()}; "
            "run 'python -m inventory db upgrade'"
        )


@cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


# --- runs ----------------------------------------------------------------------------


@dataclass
class Run:
    id: int
    started_at: datetime
    lock_connection: Connection | None = None


def start_run(engine: Engine, trigger: str) -> Run:
    """Mark abandoned runs failed, then insert this run's row (and hold its liveness lock)."""
    reap_abandoned_runs(engine)
    started = now()
    values = {
        "started_at": started,
        "trigger": trigger,
        "status": "running",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if is_postgres(engine):
        conn = engine.connect()
        try:
            run_id = conn.execute(
                insert(m.SyncRun).values(values).returning(m.SyncRun.id)
            ).scalar_one()
            # Session-level: held until this connection closes, i.e. until the run ends
            # or its process dies; taken before the row becomes visible.
            conn.execute(select(func.pg_advisory_lock(RUN_LOCK_CLASS, run_id)))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return Run(run_id, started, conn)
    with engine.begin() as conn:
        run_id = conn.execute(insert(m.SyncRun).values(values).returning(m.SyncRun.id)).scalar_one()
    return Run(run_id, started)


def finish_run(engine: Engine, run: Run, status: str, error: str | None = None) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                update(m.SyncRun)
                .where(m.SyncRun.id == run.id)
                .values(status=status, finished_at=now(), error=error)
            )
    finally:
        release_run_lock(run)


def release_run_lock(run: Run) -> None:
    """Unlock before the connection goes back to the pool, where the session (and so a
    session-level lock) would live on."""
    conn, run.lock_connection = run.lock_connection, None
    if conn is None:
        return
    try:
        conn.execute(select(func.pg_advisory_unlock(RUN_LOCK_CLASS, run.id)))
        conn.commit()
    except SQLAlchemyError:
        conn.invalidate()  # a broken session: discard it rather than pool it
    finally:
        conn.close()


def reap_abandoned_runs(engine: Engine) -> list[int]:
    """Runs left 'running' by a process that is gone are marked failed (abandoned)."""
    with engine.begin() as conn:
        running = conn.execute(
            select(m.SyncRun.id, m.SyncRun.host, m.SyncRun.pid).where(m.SyncRun.status == "running")
        ).all()
        dead = [row.id for row in running if not run_alive(conn, row.id, row.host, row.pid)]
        if dead:
            conn.execute(
                update(m.SyncRun)
                .where(m.SyncRun.id.in_(dead))
                .values(
                    status="failed",
                    finished_at=now(),
                    error="abandoned: the process ended before the run finished",
                )
            )
    for run_id in dead:
        log.warning("sync run %s was abandoned by its process; marked failed", run_id)
    return dead


def run_alive(conn: Connection, run_id: int, host: str | None, pid: int | None) -> bool:
    if is_postgres(conn):
        got = conn.execute(select(func.pg_try_advisory_xact_lock(RUN_LOCK_CLASS, run_id))).scalar()
        return not got  # the lock is free only when the run's session has ended
    if host != socket.gethostname() or pid is None:
        return True  # cannot tell from here: leave it
    if pid == os.getpid():
        return False  # this process holds no earlier run open
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- snapshots -----------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRow:
    run_id: int
    account: str
    integration: str
    started_at: datetime
    status: str
    connection_count: int = 0
    pages: int = 0
    error: str | None = None
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)  # added, removed, modified, restored
    superseded_by: int | None = None
    accepted_removals: bool = False
    fetched_digest: str | None = None


def record_snapshot(engine: Engine, row: SnapshotRow, settings: Settings | None = None) -> int:
    """A snapshot row alone (failed ones): its own short transaction, and the outbox rows
    it causes."""
    with engine.begin() as conn:
        snapshot_id = _insert_snapshot(conn, row)
        enqueue_snapshot(conn, settings, snapshot_id, [], now())
        return snapshot_id


def _insert_snapshot(conn: Connection, row: SnapshotRow) -> int:
    added, removed, modified, restored = row.counts
    return conn.execute(
        insert(m.Snapshot)
        .values(
            run_id=row.run_id,
            account=row.account,
            integration=row.integration,
            started_at=row.started_at,
            finished_at=now(),
            status=row.status,
            connection_count=row.connection_count,
            added=added,
            removed=removed,
            modified=modified,
            restored=restored,
            pages=row.pages,
            error=row.error,
            superseded_by=row.superseded_by,
            accepted_removals=row.accepted_removals,
            fetched_digest=row.fetched_digest,
        )
        .returning(m.Snapshot.id)
    ).scalar_one()


def lock_key(account: str, integration: str, salt: str = "write") -> int:
    digest = hashlib.blake2b(f"{salt}\0{account}\0{integration}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# An applied snapshot: complete and not superseded; failed and held ones apply nothing.
# Applied snapshots start in the order they are applied: one that started before an
# applied one is superseded, not applied.
APPLIED = (SNAPSHOTS.c.status == "complete", SNAPSHOTS.c.superseded_by.is_(None))


def _last_applied(
    account: str, integration: str, *columns: Any, since: datetime | None = None
) -> Any:
    """``columns`` of the newest applied snapshot of an integration (started at or after
    ``since``)."""
    t = SNAPSHOTS
    query = select(*columns).where(t.c.account == account, t.c.integration == integration, *APPLIED)
    if since is not None:
        query = query.where(t.c.started_at >= since)
    return query.order_by(t.c.started_at.desc()).limit(1)


def fresh_snapshot(engine: Engine, account: str, integration: str, since: datetime) -> int | None:
    """A complete snapshot of this integration that started at or after ``since``."""
    with engine.connect() as conn:
        return conn.execute(
            _last_applied(account, integration, SNAPSHOTS.c.id, since=since)
        ).scalar()


def known_chunks(
    conn: Connection, account: str, integration: str
) -> tuple[int, frozenset[bytes]] | None:
    """Before fetching: the integration's last applied snapshot and the chunk digests kept
    with it, or None when it has none (or none were kept). The write checks, under the
    lock, that it is still the last applied one."""
    last = conn.execute(_last_applied(account, integration, SNAPSHOTS.c.id)).scalar()
    if last is None:
        return None
    chunks = _kept_chunks(conn, account, integration, last)
    return None if chunks is None else (last, chunks)


class ChunkReader:
    """``known_chunks`` for the fetch workers of a run, one read at a time through one
    connection they share (each connection to SQLite holds a cache of its own), each read
    a short transaction of its own; on SQLite a deferred one, so a fetch does not wait
    for a write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._conn: Connection | None = None

    def read(self, account: str, integration: str) -> tuple[int, frozenset[bytes]] | None:
        with self._lock:
            if self._conn is None:
                self._conn = self._engine.connect()
                self._conn.execution_options(**{READ_ONLY_OPTION: True})
            try:
                with self._conn.begin():
                    return known_chunks(self._conn, account, integration)
            except BaseException:
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _kept_chunks(
    conn: Connection, account: str, integration: str, snapshot_id: int
) -> frozenset[bytes] | None:
    """The chunk digests kept with an applied snapshot, when they still are and the same
    parsing took them."""
    f = CHUNKS
    blob = conn.execute(
        select(f.c.chunks).where(
            f.c.account == account, f.c.integration == integration, f.c.snapshot_id == snapshot_id
        )
    ).scalar()
    return None if blob is None else chunk_set(blob)


@contextmanager
def claim(engine: Engine, account: str, integration: str) -> Iterator[bool]:
    """PostgreSQL: try to take this integration for the whole snapshot (fetch and write),
    so replicas sharing the database never sync it at the same time. Yields whether it was
    taken; always True on SQLite, which has one daemon per file."""
    if not is_postgres(engine):
        yield True
        return
    key = lock_key(account, integration, salt="claim")
    with engine.connect() as conn:
        taken = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        conn.commit()
        try:
            yield taken
        finally:
            if taken:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()


class IntegrationTransaction:
    """One (account, integration) under its lock: read the state, then write one snapshot."""

    def __init__(
        self, conn: Connection, account: str, integration: str, settings: Settings | None = None
    ) -> None:
        self.conn = conn
        self.account = account
        self.integration = integration
        self.settings = settings
        self.postgres = is_postgres(conn)
        self.placeholder = "%s" if self.postgres else "?"  # the driver's, for {p}
        self.json = not self.postgres and sqlite_has_json()
        self.written = dict.fromkeys((CONNECTIONS.name, VERSIONS.name, CHANGES.name), 0)
        self.same_as: int | None = None  # the last applied snapshot, when its pages match

    @cached_property
    def last_applied(self) -> tuple[int, datetime, str | None] | None:
        """The id, start and fetched digest of the integration's last applied snapshot, read
        once, under the lock and before this transaction writes a snapshot."""
        t = SNAPSHOTS
        query = _last_applied(
            self.account, self.integration, t.c.id, t.c.started_at, t.c.fetched_digest
        )
        row = self.conn.execute(query).one_or_none()
        return None if row is None else (row[0], row[1], row[2])

    def newer_snapshot(self, started_at: datetime) -> int | None:
        """An applied complete snapshot of this integration that started at or after ours:
        the last applied one, when it did."""
        last = self.last_applied
        return last[0] if last is not None and last[1] >= started_at else None

    def matches_last_applied(self, digest: str, count: int) -> bool:
        """Whether the integration's rows of connections are what a fetched set with this
        digest and count would leave, so that its diff is empty: its last applied snapshot
        fetched pages with the same digest (applying a snapshot leaves the present rows
        equal to its fetched set, and only applying writes them), and as many rows are
        present, so that rows inserted or deleted by hand are not taken for it."""
        last = self.last_applied
        if last is None or last[2] != digest:
            return False
        c = CONNECTIONS
        present = select(func.count()).where(
            c.c.account == self.account,
            c.c.integration == self.integration,
            c.c.removed_at.is_(None),
        )
        if self.conn.execute(present).scalar_one() != count:
            return False
        self.same_as = last[0]
        return True

    def last_applied_chunks(self) -> frozenset[bytes] | None:
        """The chunk digests of the fetched set of the integration's last applied snapshot,
        or None when they were not kept with it (applied before they were kept)."""
        last = self.last_applied
        if last is None:
            return None
        return _kept_chunks(self.conn, self.account, self.integration, last[0])

    def _keep_chunks(self, snapshot_id: int, chunks: bytes) -> None:
        """The chunk digests of this applied snapshot, in place of the last one's. When
        its pages were the last applied snapshot's (``matches_last_applied``), so are its
        chunks: the row kept with that snapshot only changes hands."""
        f = CHUNKS
        where = (f.c.account == self.account, f.c.integration == self.integration)
        if self.same_as is not None:
            moved = self.conn.execute(
                f.update()
                .where(*where, f.c.snapshot_id == self.same_as)
                .values(snapshot_id=snapshot_id)
            )
            if moved.rowcount == 1:
                return
        self.conn.execute(f.delete().where(*where))
        self.conn.execute(
            f.insert().values(
                account=self.account,
                integration=self.integration,
                snapshot_id=snapshot_id,
                chunks=chunks,
            )
        )

    def load_names(self) -> dict[str, dict[str, int]]:
        """Every row of the integration, as {type: {name: whether it is marked removed}}
        (1 or 0, or a bool), each type's names made into a mapping by the database's JSON
        and the driver's JSON parser rather than row by row."""
        if self.postgres:
            aggregate = "json_object_agg(name, removed_at IS NOT NULL)"
        elif self.json:
            aggregate = "json_group_object(name, removed_at IS NOT NULL)"
        else:
            names: dict[str, dict[str, int]] = {}
            for type_name, name, removed in self._driver_query(
                "SELECT type, name, removed_at IS NOT NULL FROM connections "
                "WHERE account = {p} AND integration = {p}",
                (self.account, self.integration),
            ):
                names.setdefault(type_name, {})[name] = removed
            return names
        rows = self._driver_query(
            f"SELECT type, {aggregate} FROM connections "
            "WHERE account = {p} AND integration = {p} GROUP BY type",
            (self.account, self.integration),
        )
        return {t: named if isinstance(named, dict) else json.loads(named) for t, named in rows}

    def load_state(self, keys: Set[Key] | None = None) -> dict[Key, Stored]:
        """The integration's rows of ``connections`` (those of ``keys`` only, when given),
        read through the driver: the generic result processing would cost more than the
        query. This runs once per connection per sync, so the loops below are written for
        speed."""
        new = tuple.__new__  # the field count is the query's: no check needed
        state: dict[Key, Stored] = {}
        if keys is not None and not keys:
            return state
        if self.postgres:  # UTC sessions: every value is already as a Record holds it
            if keys is None:
                pg_rows = self._read_connections('"{}"')
            else:
                pg_rows = self._read_pg_connections_of(keys)
            for row in pg_rows:
                state[row[:2]] = new(Stored, (new(Record, row[:-1]), row[-1]))
            return state
        # SQLite keeps UTC text; with the offset appended, the C parser returns aware UTC
        # datetimes directly.
        rows: Iterable[list[Any]] | None = None
        if self.json:
            if keys is None:
                rows = self._read_connections_as_json()
            else:
                rows = self._read_connections_of_as_json(keys)
        if rows is None:  # without the JSON functions, or keys they cannot carry
            rows = map(list, self._read_connections(SQLITE_AWARE))
            if keys is not None:
                rows = (r for r in rows if (r[0], r[1]) in keys)
        parse = datetime.fromisoformat
        first, second, third = TIMESTAMP_POSITIONS
        for values in rows:
            try:
                if values[first] is not None:
                    values[first] = parse(values[first])
                if values[second] is not None:
                    values[second] = parse(values[second])
                if values[third] is not None:
                    values[third] = parse(values[third])
            except ValueError:
                raise SnapshotError(
                    f"{self.account}/{self.integration}: the connections row of {values[0]} "
                    f"{values[1]!r} holds an unreadable timestamp (changed outside "
                    "zis-inventory?); nothing written"
                ) from None
            state[values[0], values[1]] = new(Stored, (new(Record, values[:-1]), values[-1] == 1))
        return state

    def _columns(self, timestamp: str) -> str:
        """type, name, metadata..., removed; ``timestamp`` reads a timestamp column."""
        columns = ", ".join(
            timestamp.format(c) if c in TIMESTAMP_FIELDS else f'"{c}"' for c in RECORD_FIELDS
        )
        return f"{columns}, removed_at IS NOT NULL"

    def _read_connections(self, timestamp: str) -> list[tuple[Any, ...]]:
        """(type, name, metadata..., removed) rows."""
        return self._driver_query(
            f"SELECT {self._columns(timestamp)} FROM connections "
            "WHERE account = {p} AND integration = {p}",
            (self.account, self.integration),
        )

    def _read_connections_as_json(self) -> Iterator[list[Any]]:
        """The same rows on SQLite, STATE_CHUNK at a time in key order, each chunk made
        into one JSON array by SQLite itself: one statement step per chunk, during which
        other threads run, where reading row by row would take the interpreter back for
        every row. Timestamps come with '+00:00' appended."""
        row = f"json_array({self._columns(SQLITE_AWARE)})"
        statement = (
            f"SELECT json_group_array({row}) FROM (SELECT * FROM connections "
            "WHERE account = {p} AND integration = {p} AND (type, name) > ({p}, {p}) "
            "ORDER BY type, name LIMIT {p})"
        )
        after = ("", "")
        while True:
            ((text,),) = self._driver_query(
                statement, (self.account, self.integration, *after, STATE_CHUNK)
            )
            rows: list[list[Any]] = json.loads(text)
            yield from rows
            if len(rows) < STATE_CHUNK:
                return
            after = max((r[0], r[1]) for r in rows)  # the aggregate's order is not promised

    def _read_connections_of_as_json(self, keys: Set[Key]) -> list[list[Any]] | None:
        """The rows of ``keys`` as ``_read_connections_as_json`` gives rows, or None when a
        key holds a NUL (SQLite's JSON functions would cut it short). The keys are matched
        to row ids through the key's index, the JSON side outermost, as updates do."""
        row = f"json_array({self._columns(SQLITE_AWARE)})"
        keyed = _sqlite_keyed(CONNECTIONS.name)
        statement = f"SELECT json_group_array({row}) FROM connections WHERE id IN ({keyed})"
        rows: list[list[Any]] = []
        for chunk in batched(keys, STATE_CHUNK):
            text = sqlite_json(chunk)
            if text is None:
                return None
            ((got,),) = self._driver_query(statement, (text, self.account, self.integration))
            rows.extend(json.loads(got))
        return rows

    def _read_pg_connections_of(self, keys: Set[Key]) -> list[tuple[Any, ...]]:
        """The rows of ``keys`` on PostgreSQL: the keys go as two arrays, each row found
        through the whole key."""
        types, names = zip(*keys, strict=True)
        columns = self._columns('"{}"')
        return self._driver_query(
            f"SELECT {columns} FROM connections "
            "WHERE account = {p} AND integration = {p} "
            "AND (type, name) IN (SELECT * FROM unnest({p}::text[], {p}::text[]))",
            (self.account, self.integration, list(types), list(names)),
        )

    def write(
        self,
        row: SnapshotRow,
        result: Diff,
        detected_at: datetime,
        chunks: bytes | None = None,
        sent: Callable[[], None] | None = None,
    ) -> int:
        """``_write``, then the outbox rows the snapshot causes, in its transaction."""
        snapshot_id = self._write(row, result, detected_at, chunks, sent)
        enqueue_snapshot(self.conn, self.settings, snapshot_id, [], now())
        return snapshot_id

    def _write(
        self,
        row: SnapshotRow,
        result: Diff,
        detected_at: datetime,
        chunks: bytes | None = None,
        sent: Callable[[], None] | None = None,
    ) -> int:
        """The snapshot row, then (when it applies) the chunk digests of what it fetched,
        the changed rows of connections, the versions they close, and the events the
        diff found; ``result`` is consumed, each record dropped once its row is sent.
        Then ``sent`` is called: what is left, the versions opened and the added
        events, the database copies from the rows it now has, and no record is held."""
        snapshot_id = _insert_snapshot(self.conn, row)
        if row.status != "complete" or row.superseded_by is not None:
            return snapshot_id
        if chunks is not None:
            self._keep_chunks(snapshot_id, chunks)
        if result.empty:
            return snapshot_id
        opens = bool(result.added or result.modified or result.restored)
        adds = bool(result.added)
        self._write_connections(result, detected_at)  # empties result.added
        self._close_versions(result, detected_at)
        events: Iterator[Event] = _consumed(result.changes)
        self._insert(
            CHANGES,
            Event._fields,
            events,
            self._scope(snapshot_id=snapshot_id, detected_at=detected_at),
        )
        result.modified, result.restored, result.removed = [], [], []
        if sent is not None:
            sent()
        if opens:
            self._open_versions(detected_at)
        if adds:
            self._copy_added_events(snapshot_id, detected_at)
        return snapshot_id

    @contextmanager
    def _driver_cursor(self, statement: str) -> Iterator[Any]:
        """A cursor of the driver, in this transaction; its errors are raised as the same
        DBAPIError SQLAlchemy would raise, for callers."""
        driver: Any = self.conn.connection.driver_connection
        dbapi_error = self.conn.dialect.loaded_dbapi.Error
        try:
            cursor = driver.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        except dbapi_error as exc:
            raise DBAPIError.instance(statement, None, exc, dbapi_error) from exc

    def _driver_query(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """All rows of ``statement``, whose parameters are written {p}."""
        statement = statement.format(p=self.placeholder)
        with self._driver_cursor(statement) as cursor:
            cursor.execute(statement, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows

    def _insert(
        self,
        table: Table,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        fixed: dict[str, Any] | None = None,
    ) -> None:
        """Many rows, built and sent in chunks so a large first sync never holds them all;
        ``fixed`` gives columns whose value is the same in every row. PostgreSQL: binary
        COPY (psycopg's executemany sends one statement per row, pipelined or not, and
        text COPY costs the client ten times the CPU). SQLite: each chunk as one JSON
        array that SQLite unpacks itself, one statement step during which other threads
        run, with the fixed values as parameters beside it. The array holds only the
        columns some row of the chunk has a value in (a type's rows leave most of the
        metadata columns NULL, and unpacking a value is most of the statement's work);
        the others are inserted as NULL. A chunk holding a NUL (which SQLite's JSON
        functions would cut short) goes row by row with executemany."""
        fixed = fixed or {}
        fixed_values = self._stored_values(fixed.values())
        names = ", ".join(f'"{c}"' for c in (*columns, *fixed))
        if self.postgres:
            statement = f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)"
            types = [_pg_type(table.c[c].type) for c in (*columns, *fixed)]
        else:
            marks = ", ".join("?" * (len(columns) + len(fixed)))
            statement = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
            timestamps = {
                i for i, c in enumerate(columns) if isinstance(table.c[c].type, m.UTCDateTime)
            }
        for chunk in batched(rows, INSERT_CHUNK):
            with self._driver_cursor(statement) as cursor:
                if self.postgres:
                    with cursor.copy(statement) as copy:
                        copy.set_types(types)
                        for row in chunk:
                            copy.write_row((*row, *fixed_values))
                elif self.json and (packed := sqlite_json_columns(chunk, timestamps)) is not None:
                    used, text = packed
                    values = [
                        f"json_extract(value, '$[{used.index(i)}]')" if i in used else "NULL"
                        for i in range(len(columns))
                    ]
                    from_json = (
                        f"INSERT INTO {table.name} ({names}) "
                        f"SELECT {', '.join(values + ['?'] * len(fixed))} FROM json_each(?)"
                    )
                    cursor.execute(from_json, (*fixed_values, text))
                else:
                    cursor.executemany(
                        statement, [(*self._stored_values(row), *fixed_values) for row in chunk]
                    )
            self.written[table.name] += len(chunk)

    def _stored(self, value: datetime) -> Any:
        return value if self.postgres else sqlite_value(value)

    def _stored_values(self, values: Iterable[Any]) -> tuple[Any, ...]:
        """Values as the driver takes them: SQLite keeps timestamps as text."""
        if self.postgres:
            return tuple(values)
        return tuple(sqlite_value(v) if isinstance(v, datetime) else v for v in values)

    def _scope(self, **fixed: Any) -> dict[str, Any]:
        """Columns the same in every row a snapshot writes: the integration, and ``fixed``."""
        return {"account": self.account, "integration": self.integration, **fixed}

    def _copy_added_events(self, snapshot_id: int, at: datetime) -> None:
        """The added events, after the others (the diff's order), copied inside the
        database from the rows this snapshot inserted into connections (first_seen_at =
        at), in key order."""
        self._copy_rows(
            CHANGES,
            ("snapshot_id", "account", "integration", "detected_at", "change", "type", "name"),
            "{p}, account, integration, first_seen_at, 'added', type, name",
            "first_seen_at = {p}",
            select_params=(snapshot_id,),
            condition_params=(self._stored(at),),
        )

    def _copy_rows(
        self,
        table: Table,
        columns: Sequence[str],
        select_list: str,
        condition: str,
        *,
        select_params: tuple[Any, ...] = (),
        condition_params: tuple[Any, ...] = (),
    ) -> None:
        """INSERT ... SELECT from this integration's rows of connections: rows the database
        derives itself cost no Python work per row."""
        names = ", ".join(f'"{c}"' for c in columns)
        statement = (
            f"INSERT INTO {table.name} ({names}) SELECT {select_list} FROM connections "
            f"WHERE account = {{p}} AND integration = {{p}} AND {condition} ORDER BY type, name"
        ).format(p=self.placeholder)
        params = (*select_params, self.account, self.integration, *condition_params)
        with self._driver_cursor(statement) as cursor:
            cursor.execute(statement, params)
            self.written[table.name] += max(cursor.rowcount, 0)

    def _update(
        self,
        table: Table,
        rows: Iterable[Sequence[Any]],
        columns: Sequence[str] = (),
        fixed: dict[str, Any] | None = None,
        *,
        open_only: bool = False,
    ) -> None:
        """Update this integration's rows of ``table`` by key: each of ``rows`` is (type,
        name, values of ``columns``...), as a record holds them, and ``fixed`` sets the
        same values on every row (``open_only``: only rows whose valid_to is NULL).

        SQLite: each chunk as one JSON array, one statement step like the inserts (a chunk
        holding a NUL goes row by row). The chunk's rows are first matched to row ids
        through the key's index, the JSON side outermost: joined straight to the table, the
        planner scans the integration's rows once per row of the chunk. PostgreSQL:
        executemany, which psycopg pipelines; each statement finds its row through the
        whole key, whatever the planner's statistics say."""
        fixed = fixed or {}
        t = table.name
        row_by_row = (
            f"UPDATE {t} SET "
            + ", ".join(f'"{c}" = {{p}}' for c in (*columns, *fixed))
            + " WHERE account = {p} AND integration = {p} AND type = {p} AND name = {p}"
            + (" AND valid_to IS NULL" if open_only else "")
        ).format(p=self.placeholder)
        picked = "".join(
            f", json_extract(j.value, '$[{i}]') AS \"{c}\"" for i, c in enumerate(columns, 2)
        )
        keyed = _sqlite_keyed(t, picked, " AND c.valid_to IS NULL" if open_only else "")
        from_json = (
            f"UPDATE {t} SET "
            + ", ".join([*(f'"{c}" = v."{c}"' for c in columns), *(f'"{c}" = ?' for c in fixed)])
            + f" FROM ({keyed}) AS v WHERE {t}.id = v.id"
        )
        head, fixed_values = (self.account, self.integration), self._stored_values(fixed.values())
        for chunk in batched(rows, INSERT_CHUNK):
            with self._driver_cursor(row_by_row) as cursor:
                if self.json and (text := sqlite_json(chunk)) is not None:
                    cursor.execute(from_json, (*fixed_values, text, *head))
                else:
                    cursor.executemany(
                        row_by_row,
                        [
                            (*self._stored_values(r[2:]), *fixed_values, *head, r[0], r[1])
                            for r in chunk
                        ],
                    )
                self.written[t] += max(cursor.rowcount, 0)

    def _write_connections(self, result: Diff, at: datetime) -> None:
        t = CONNECTIONS
        added: Iterator[Record] = _consumed(result.added)
        self._insert(
            t,
            RECORD_FIELDS,
            added,
            self._scope(first_seen_at=at, last_changed_at=at, removed_at=None),
        )
        self._update(
            t,
            result.modified + result.restored,
            METADATA_FIELDS,
            {"last_changed_at": at, "removed_at": None},
        )
        self._update(
            t, (r[:2] for r in result.removed), fixed={"removed_at": at, "last_changed_at": at}
        )

    def _close_versions(self, result: Diff, at: datetime) -> None:
        self._update(
            VERSIONS,
            (r[:2] for r in result.modified + result.removed),
            fixed={"valid_to": at},
            open_only=True,
        )

    def _open_versions(self, at: datetime) -> None:
        """Every row of connections this snapshot added, modified or restored opens a
        version holding its values as they now stand."""
        self._copy_rows(
            VERSIONS,
            (*RECORD_COLUMNS, "valid_from", "valid_to"),
            ", ".join(f'"{c}"' for c in RECORD_COLUMNS) + ", last_changed_at, NULL",
            "last_changed_at = {p} AND removed_at IS NULL",
            condition_params=(self._stored(at),),
        )


def _sqlite_keyed(table: str, picked: str = "", condition: str = "") -> str:
    """SQLite: the ids (and ``picked``) of an integration's rows of ``table`` whose (type,
    name) a JSON array of keys holds; parameters: the array, the account, the integration.
    The keys are matched through the key's index, the JSON side outermost: the LIMIT keeps
    the subquery from being merged into an outer join, where the planner may put the table
    outermost and scan the integration's rows once per key."""
    return (
        f"SELECT c.id{picked} FROM json_each(?) AS j CROSS JOIN {table} AS c "
        "ON c.account = ? AND c.integration = ? AND c.type = json_extract(j.value, '$[0]') "
        f"AND c.name = json_extract(j.value, '$[1]'){condition} LIMIT -1"
    )


def _pg_type(kind: Any) -> str:
    """The PostgreSQL type a column's values are sent as in a binary COPY."""
    if isinstance(kind, m.UTCDateTime):
        return "timestamptz"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, String):  # Text is a String
        return "text"
    raise TypeError(f"no COPY type for {kind!r}")


_Item = TypeVar("_Item")


def _consumed(items: list[_Item]) -> Iterator[_Item]:
    """Each item in order, dropped from the list as it is given: the records of a large
    first sync are freed while their rows are sent, not after the last one."""
    items.reverse()
    while items:
        yield items.pop()


@contextmanager
def integration_transaction(
    engine: Engine, account: str, integration: str, settings: Settings | None = None
) -> Iterator[IntegrationTransaction]:
    """One transaction holding the (account, integration) lock: PostgreSQL advisory lock,
    SQLite's write lock (BEGIN IMMEDIATE). Commits on success, rolls back on any error."""
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(select(func.pg_advisory_xact_lock(lock_key(account, integration))))
        yield IntegrationTransaction(conn, account, integration, settings)
