"""The schema: Alembic upgrade, downgrade, the current and head revisions, and the
checks commands make before they read or write.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select

from ..errors import ConfigError, DatabaseError
from .engine import check_reachable, is_postgres, safe_url

MIGRATION_LOCK = 0x5A15_0000_0000_0001  # pg_advisory_xact_lock(bigint) for migrations


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
