"""connections: the removed_at and token_expiry indexes hold only the rows that have a
value (removed connections, OAuth tokens), not one entry per row of NULL

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_connections_removed_at", "removed_at"),
    ("ix_connections_token_expiry", "token_expiry"),
)


def upgrade() -> None:
    # A query on either column that compares it with a value (removed since T, expiring
    # before T) implies IS NOT NULL, which both databases' planners use the index for.
    for name, column in INDEXES:
        op.drop_index(name, table_name="connections")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "connections", [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in INDEXES:
        op.drop_index(name, table_name="connections")
        op.create_index(name, "connections", [column])
