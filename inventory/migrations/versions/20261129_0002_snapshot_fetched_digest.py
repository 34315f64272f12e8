"""snapshots.fetched_digest: what a snapshot's pages gave, so an unchanged integration's
next snapshot compares no rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing snapshots get NULL: the next snapshot of each integration compares its
    # rows as before, and records the digest the one after it can use.
    op.add_column("snapshots", sa.Column("fetched_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later): copying the table instead, as
    # a batch operation would, means dropping a table connection_changes refers to.
    op.drop_column("snapshots", "fetched_digest")
