"""findings_evaluations: when the connection rules last read each integration's rows, and
until when that result stands (findings_reuse.py)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "findings_evaluations",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("evaluated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("valid_until", UTC_TIMESTAMP, nullable=False),
        sa.Column("rules_digest", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("account", "integration", name=op.f("pk_findings_evaluations")),
    )


def downgrade() -> None:
    op.drop_table("findings_evaluations")
