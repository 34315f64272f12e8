"""fetched_chunks: the chunk digests of each integration's last applied snapshot, so a
snapshot whose pages changed compares only the rows of the chunks that changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty at first: the next snapshot of each integration that changed compares all its
    # rows, as before, and keeps its chunks for the one after it.
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


def downgrade() -> None:
    op.drop_table("fetched_chunks")
