"""snapshots.prev_hash, chain_hash, chain_rows: one hash chain per (account, integration),
so that an edit of the history by hand is found by `db verify`

No backfill: the snapshots already in the database keep NULL hashes, and each chain
starts at the first snapshot of its integration written after this upgrade. Hashing the
rows already there would bless whatever was edited before; `db verify` reports where
each chain starts, and the history before it is not covered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("snapshots", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("snapshots", sa.Column("chain_hash", sa.String(64), nullable=True))
    # Per-row, per-column short digests of what the hash covers: they only say which
    # row or column changed when a hash does not match (inventory.chain).
    op.add_column("snapshots", sa.Column("chain_rows", sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), as 0002 does.
    op.drop_column("snapshots", "chain_rows")
    op.drop_column("snapshots", "chain_hash")
    op.drop_column("snapshots", "prev_hash")
