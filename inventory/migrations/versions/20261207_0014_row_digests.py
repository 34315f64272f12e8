"""row_digests: each integration's keys and row hashes as its last applied snapshot left
them, so that a snapshot reads only the stored rows that differ (store/digests.py)

Internal: not part of the auditors' contract; dropping it only costs the next sync of
each integration a read of every row.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "row_digests",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("entry_keys", sa.LargeBinary(), nullable=False),
        sa.Column("entry_hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("account", "integration", name=op.f("pk_row_digests")),
    )


def downgrade() -> None:
    op.drop_table("row_digests")
