"""integrations and registry_listings: an account's integrations as the ZIS registry
lists them (§14), and each sync's listing of the registry

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("removed_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("configured", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.UniqueConstraint("account", "name", name="uq_integrations_key"),
    )
    op.create_table(
        "registry_listings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("integration_count", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("restored", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('complete', 'failed')", name=op.f("ck_registry_listings_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_registry_listings_run_id_sync_runs")
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by"],
            ["registry_listings.id"],
            name=op.f("fk_registry_listings_superseded_by_registry_listings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_listings")),
    )
    op.create_index(
        "ix_registry_listings_account_started_at",
        "registry_listings",
        ["account", "started_at"],
    )
    op.create_index("ix_registry_listings_run_id", "registry_listings", ["run_id"])


def downgrade() -> None:
    op.drop_table("registry_listings")
    op.drop_table("integrations")
