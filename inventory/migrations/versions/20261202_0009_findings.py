"""findings: one row per episode of a rule firing on a key, with its lifecycle
(first_seen_at, last_seen_at, resolved_at) and the suppression in force

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("slug", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("resolved_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("suppressed_by", sa.Text(), nullable=True),
        sa.Column("suppressed_until", sa.Date(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "severity IN ('low', 'medium', 'high', 'critical')", name=op.f("ck_findings_severity")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
    )
    op.create_index(
        "ix_findings_account_integration_resolved_at",
        "findings",
        ["account", "integration", "resolved_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_findings_account_integration_resolved_at", table_name="findings")
    op.drop_table("findings")
