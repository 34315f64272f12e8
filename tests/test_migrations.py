"""The schema: created only by Alembic, reversible, and in step with the models (the wheel
that carries the migrations: tests/test_install.py)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from inventory import store
from inventory.errors import DatabaseError
from inventory.models import Base

from .helpers import HEAD

AT = "2026-11-29 08:00:00.000000"  # as SQLite stores it; PostgreSQL sessions are UTC

# The auditors' contract (§5 of the spec): these names are public.
PUBLIC_COLUMNS = {
    "sync_runs": {"id", "started_at", "finished_at", "trigger", "status"},
    "snapshots": {
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
        "prev_hash",
        "chain_hash",
    },
    "connections": {
        "account",
        "integration",
        "type",
        "name",
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
        "first_seen_at",
        "last_changed_at",
        "removed_at",
    },
    "connection_changes": {
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
    },
    "integrations": {
        "id",
        "account",
        "name",
        "description",
        "first_seen_at",
        "last_seen_at",
        "removed_at",
        "configured",
    },
    "registry_listings": {
        "id",
        "run_id",
        "account",
        "started_at",
        "finished_at",
        "status",
        "integration_count",
        "added",
        "removed",
        "restored",
        "error",
    },
    "findings": {
        "id",
        "rule",
        "slug",
        "severity",
        "account",
        "integration",
        "type",
        "name",
        "detail",
        "first_seen_at",
        "last_seen_at",
        "resolved_at",
        "suppressed_by",
    },
    # §17: the OAuth clients, present state and history.
    "oauth_clients": {
        "account",
        "integration",
        "uuid",
        "name",
        "auth_url",
        "token_url",
        "grant_type",
        "default_scopes",
        "created_by",
        "created_at",
        "updated_at",
        "first_seen_at",
        "last_changed_at",
        "removed_at",
    },
    "oauth_client_versions": {
        "account",
        "integration",
        "uuid",
        "name",
        "auth_url",
        "token_url",
        "grant_type",
        "default_scopes",
        "created_by",
        "created_at",
        "updated_at",
        "valid_from",
        "valid_to",
    },
    "connection_versions": {
        "account",
        "integration",
        "type",
        "name",
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
        "valid_from",
        "valid_to",
    },
    "notifications": {
        "id",
        "sink",
        "event",
        "account",
        "integration",
        "snapshot_id",
        "payload",
        "created_at",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status",
        "last_error",
        "sent_at",
        "webhook_id",
    },
    "notification_attempts": {
        "notification_id",
        "attempt",
        "attempted_at",
        "status",
        "error",
        "outcome",
    },
    "expiry_warnings": {
        "account",
        "integration",
        "type",
        "name",
        "threshold",
        "token_expiry",
        "warned_at",
    },
    "notify_sinks": {"name", "first_configured_at"},
    "findings_evaluations": {
        "account",
        "integration",
        "snapshot_id",
        "evaluated_at",
        "valid_until",
        "rules_digest",
    },
    "database_identity": {"id", "database_id", "created_at"},
}
# Internal bookkeeping, not part of that contract (docs/schema.md).
INTERNAL_TABLES = {"row_digests"}


def test_upgrade_downgrade_upgrade_and_models_agree(db_url: str) -> None:
    engine = store.make_engine(db_url)
    try:
        assert store.upgrade(engine) == (None, HEAD)
        tables = set(inspect(engine).get_table_names())
        assert tables == {"alembic_version", *PUBLIC_COLUMNS, *INTERNAL_TABLES}
        for table, public in PUBLIC_COLUMNS.items():
            assert public <= {c["name"] for c in inspect(engine).get_columns(table)}, table
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
        store.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert store.current_revision(engine) is None
        assert store.upgrade(engine) == (None, HEAD)
        assert store.ensure_schema(engine, migrate=False) is None
    finally:
        engine.dispose()


def test_the_digest_chunks_and_full_compare_columns_come_and_go_with_their_migrations(
    db_url: str,
) -> None:
    """0001 -> 0002 keeps every snapshot (their digest NULL: their next snapshot compares
    rows) and 0002 -> 0001 keeps them too, without the column."""
    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sync_runs (started_at, trigger, status) VALUES (:at, 'cli', 'complete')"
                ),
                {"at": AT},
            )
            conn.execute(
                text(
                    "INSERT INTO snapshots (run_id, account, integration, started_at, finished_at, "
                    "status, connection_count, added, removed, modified, restored, pages, "
                    "accepted_removals) VALUES (1, 'acme', 'crm', :at, :at, 'complete', 3, 3, 0, "
                    "0, 0, 1, false)"
                ),
                {"at": AT},
            )
        assert store.upgrade(engine, "0002") == ("0001", "0002")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, account, status, fetched_digest FROM snapshots"))
            assert rows.all() == [(1, "acme", "complete", None)]
        store.downgrade(engine, "0001")
        assert "fetched_digest" not in {c["name"] for c in inspect(engine).get_columns("snapshots")}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, account, status, connection_count FROM snapshots"))
            assert rows.all() == [(1, "acme", "complete", 3)]
        # 0003 adds fetched_chunks, empty; 0005 drops it and adds snapshots.full_compare,
        # false for the snapshots before (the next sync compares every row); 0005 -> 0004
        # recreates fetched_chunks empty; each step keeps the snapshots.
        assert store.upgrade(engine, "0004") == ("0001", "0004")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT * FROM fetched_chunks")).all() == []
        assert store.upgrade(engine, "0005") == ("0004", "0005")
        assert "fetched_chunks" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, full_compare FROM snapshots"))
            assert rows.all() == [(1, "complete", False)]
        store.downgrade(engine, "0004")
        assert "full_compare" not in {c["name"] for c in inspect(engine).get_columns("snapshots")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT * FROM fetched_chunks")).all() == []
        store.downgrade(engine, "0002")
        assert "fetched_chunks" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, account, status, fetched_digest FROM snapshots"))
            assert rows.all() == [(1, "acme", "complete", None)]
    finally:
        engine.dispose()


def identities(engine: Engine) -> list[tuple[int, uuid.UUID]]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id, database_id FROM database_identity")).all()
    return [(id_, uuid.UUID(database_id)) for id_, database_id in found]


def test_the_database_id_is_made_at_upgrade_kept_by_upgrades_and_never_changed(
    db_url: str,
) -> None:
    """0012 gives a database that already has history its id, one row; upgrading again
    keeps it; nobody updates, deletes, truncates or adds to it; a downgrade drops it (and
    PostgreSQL's guard function), and the next upgrade makes another."""
    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine, "0011")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sync_runs (started_at, trigger, status) VALUES (:at, 'cli', 'complete')"
                ),
                {"at": AT},
            )
        assert store.upgrade(engine) == ("0011", HEAD)
        ((one, made),) = identities(engine)
        assert (one, made.version, made.variant) == (1, 4, uuid.RFC_4122)
        assert store.upgrade(engine) == (HEAD, HEAD)
        assert store.ensure_schema(engine, migrate=True) is None
        assert identities(engine) == [(1, made)]
        refusal = (
            "database_identity cannot be changed: the SIEM ids of findings are derived from it"
        )
        statements = [
            f"UPDATE database_identity SET database_id = '{uuid.uuid4()}'",
            "DELETE FROM database_identity",
        ]
        if store.is_postgres(engine):
            statements.append("TRUNCATE database_identity")
        for statement in statements:
            with pytest.raises(DBAPIError, match=refusal), engine.begin() as conn:
                conn.execute(text(statement))
        with pytest.raises(IntegrityError), engine.begin() as conn:  # one row, id 1
            conn.execute(
                text("INSERT INTO database_identity VALUES (2, :id, :at)"),
                {"id": str(uuid.uuid4()), "at": AT},
            )
        assert identities(engine) == [(1, made)]
        store.downgrade(engine, "0011")
        assert "database_identity" not in inspect(engine).get_table_names()
        if store.is_postgres(engine):
            with engine.connect() as conn:
                guards = "SELECT proname FROM pg_proc WHERE proname = 'database_identity_fixed'"
                assert conn.execute(text(guards)).all() == []
        store.upgrade(engine)
        ((one, again),) = identities(engine)
        assert one == 1 and again != made
    finally:
        engine.dispose()


def partial_indexes(engine: Engine) -> dict[str, str | None]:
    """The predicate of each index of connections on one column, as the database gives it."""
    found = {}
    for index in inspect(engine).get_indexes("connections"):
        if len(index["column_names"]) == 1:
            options = index.get("dialect_options", {})
            where = options.get("sqlite_where", options.get("postgresql_where"))
            found[index["name"]] = None if where is None else str(where).strip("()")
    return found


def test_the_removed_and_expiry_indexes_hold_only_rows_with_a_value(db_url: str) -> None:
    """0004 makes both indexes partial (most rows have neither value), keeping the rows;
    a query comparing the column with a value still uses its index; 0004 -> 0003 makes
    them whole again."""
    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO connections (account, integration, type, name, token_expiry, "
                    "first_seen_at, last_changed_at, removed_at) VALUES "
                    "('acme', 'crm', 'oauth', 'o', :at, :at, :at, NULL), "
                    "('acme', 'crm', 'api_key', 'k', NULL, :at, :at, :at)"
                ),
                {"at": AT},
            )
        assert partial_indexes(engine) == {
            "ix_connections_removed_at": None,
            "ix_connections_token_expiry": None,
        }
        assert store.upgrade(engine) == ("0003", HEAD)
        assert partial_indexes(engine) == {
            "ix_connections_removed_at": "removed_at IS NOT NULL",
            "ix_connections_token_expiry": "token_expiry IS NOT NULL",
        }
        with engine.begin() as conn:
            if store.is_postgres(conn):  # two rows: make the planner show what it could use
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            for column, name in (("token_expiry", "o"), ("removed_at", "k")):
                query = f"SELECT name FROM connections WHERE {column} < '2027-01-01'"
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        ("EXPLAIN " if store.is_postgres(conn) else "EXPLAIN QUERY PLAN ") + query
                    )
                )
                assert f"ix_connections_{column}" in plan, plan
                assert conn.exec_driver_sql(query).all() == [(name,)]
        store.downgrade(engine, "0003")
        assert partial_indexes(engine) == {
            "ix_connections_removed_at": None,
            "ix_connections_token_expiry": None,
        }
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM connections ORDER BY name")).all() == [
                ("k",),
                ("o",),
            ]
    finally:
        engine.dispose()


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        store.upgrade(engine)
    finally:
        engine.dispose()
    assert (tmp_path / "new.db").stat().st_mode & 0o777 == 0o600


def test_a_sqlite_file_another_process_made_meanwhile_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two syncs started at once on a new file: the one that finds it made between its
    look and its own attempt goes on with it."""
    path = tmp_path / "new.db"
    path.write_bytes(b"")
    seen = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: self != path and seen(self))
    engine = store.make_engine(f"sqlite:///{path}")
    monkeypatch.undo()
    try:
        assert store.upgrade(engine) == (None, HEAD)
    finally:
        engine.dispose()


def test_a_sqlite_file_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file where a directory should be")
    with pytest.raises(DatabaseError) as raised:
        store.make_engine(f"sqlite:///{tmp_path / 'plain' / 'x.db'}")
    assert str(raised.value) == (
        f"cannot create database file {tmp_path / 'plain' / 'x.db'}: Not a directory"
    )


def test_a_new_sqlite_file_locked_by_another_process_is_waited_for(tmp_path: Path) -> None:
    """SQLite does not wait to switch a file to WAL while another connection writes it in
    its first mode: opening it then tries again until the busy timeout, and only then
    gives up, naming the lock."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE first (x)")
    try:
        patient = store.make_engine(f"sqlite:///{path}", busy_timeout=10)
        impatient = store.make_engine(f"sqlite:///{path}", busy_timeout=0.2)
        with pytest.raises(DatabaseError, match="database is locked"):
            store.check_reachable(impatient)
        timer = threading.Timer(0.3, other.execute, ("COMMIT",))
        timer.start()
        try:
            assert store.upgrade(patient) == (None, HEAD)
        finally:
            timer.join()
        with patient.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        other.close()
        patient.dispose()
        impatient.dispose()


def test_unknown_revision_is_refused(tmp_path: Path) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        store.upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
        with pytest.raises(
            Exception,
            match="at schema revision ffff, which this version of zis-inventory does not know",
        ):
            store.ensure_schema(engine, migrate=True)
    finally:
        engine.dispose()
