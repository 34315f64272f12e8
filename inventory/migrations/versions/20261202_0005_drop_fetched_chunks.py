"""fetched_chunks goes (the sync compares whole sets, not chunks); snapshots.full_compare
says a snapshot compared every stored row, which sync.full_compare_interval is kept by

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("fetched_chunks")
    # False for the snapshots before: the next sync of each integration compares every row.
    op.add_column(
        "snapshots",
        sa.Column("full_compare", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), as 0002 does: a batch copy of
    # snapshots would fail on SQLite once events refer to it.
    op.drop_column("snapshots", "full_compare")
    # Empty, as 0003 made it: the chunk digests of a snapshot cannot be rebuilt.
    op.create_table(
        "fetched_chunks",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_fetched_chunks_snapshot_id_snapshots"),
        ),
        sa.PrimaryKeyConstraint("account", "integration", name=op.f("pk_fetched_chunks")),
    )
