"""The schema: Alembic upgrade, downgrade, the current and head revisions, and the
checks commands make before they read or write.
"""

from __future__ import annotations

import ast
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, inspect, select, text

from ..errors import ConfigError, DatabaseError
from .engine import check_reachable, database_errors, is_postgres, safe_url

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# Alembic is imported only where a migration runs: the read-only commands learn the
# head revision from the scripts' own lines and the current one from alembic_version.

MIGRATION_LOCK = 0x5A15_0000_0000_0001  # pg_advisory_xact_lock(bigint) for migrations


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("inventory.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache  # the migration scripts do not change while the process runs
def head_revision() -> str:
    """The revision no script names as its down_revision; Alembic says when it is not one."""
    revisions = _script_revisions()
    heads = revisions.keys() - {down for downs in revisions.values() for down in downs}
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory  # branches or merges: Alembic knows

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _script_revisions() -> dict[str, tuple[str, ...]]:
    """Each migration script's revision and its down revisions, read from the scripts'
    module-level assignments (what Alembic reads too), without importing them."""
    revisions: dict[str, tuple[str, ...]] = {}
    for script in (files("inventory.migrations") / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("__"):
            continue
        values: dict[str, Any] = {}
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            target: ast.expr
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                values[target.id] = ast.literal_eval(value)
        if isinstance(values.get("revision"), str):
            down = values.get("down_revision")
            downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
            revisions[values["revision"]] = downs
    return revisions


def current_revision(engine: Engine) -> str | None:
    """The database's revision, as Alembic keeps it in alembic_version; None when empty."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        versions = [v for (v,) in conn.execute(text("SELECT version_num FROM alembic_version"))]
    if len(versions) > 1:
        raise DatabaseError(f"alembic_version holds {len(versions)} revisions; expected one")
    return versions[0] if versions else None


def has_table(engine: Engine, name: str) -> bool:
    """Whether the database has table ``name`` (a DatabaseError when it cannot tell)."""
    with database_errors(engine, f"cannot look for table {name}"), engine.connect() as conn:
        return inspect(conn).has_table(name)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision`` under a lock; returns (revision before, revision after)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(alembic_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

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
    return frozenset(_script_revisions())
