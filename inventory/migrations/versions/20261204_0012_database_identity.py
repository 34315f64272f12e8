"""database_identity: the database's own id, one random UUID made here and never changed;
findings' SIEM ids (OCSF finding_info.uid) are derived from it

An existing database gets its id at this upgrade, a new one at its first. A downgrade
drops it: upgrading again makes a new id, and every finding a new SIEM id.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL = "database_identity cannot be changed: the SIEM ids of findings are derived from it"

# The row is written once; SQLite and PostgreSQL refuse to change or remove it, whoever
# asks (a deliberate DROP TRIGGER is not casual).
SQLITE_GUARDS = [
    f"CREATE TRIGGER database_identity_fixed_{event.lower()} BEFORE {event} "
    f"ON database_identity BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
    for event in ("UPDATE", "DELETE")
]
POSTGRES_GUARDS = [
    "CREATE FUNCTION database_identity_fixed() RETURNS trigger LANGUAGE plpgsql AS "
    f"$f$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $f$",
    "CREATE TRIGGER database_identity_fixed BEFORE UPDATE OR DELETE ON database_identity "
    "FOR EACH ROW EXECUTE FUNCTION database_identity_fixed()",
    "CREATE TRIGGER database_identity_fixed_truncate BEFORE TRUNCATE ON database_identity "
    "FOR EACH STATEMENT EXECUTE FUNCTION database_identity_fixed()",
]


def upgrade() -> None:
    identity = op.create_table(
        "database_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_database_identity_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_identity")),
    )
    assert identity is not None
    op.execute(
        identity.insert().values(id=1, database_id=str(uuid.uuid4()), created_at=sa.func.now())
    )
    guards = POSTGRES_GUARDS if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARDS
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("database_identity")  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION database_identity_fixed()")
