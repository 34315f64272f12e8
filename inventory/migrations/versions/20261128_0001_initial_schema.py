"""initial schema: sync_runs, snapshots, connections, connection_changes, connection_versions

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIMESTAMP = sa.DateTime(timezone=True)


def _key_and_metadata() -> list[sa.Column[Any]]:
    """(account, integration, type, name) and the §4 allow-list, in this order."""
    text = ("account", "integration", "type", "name")
    optional: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
        ("allowed_domain", sa.String()),
        ("created_at", UTC_TIMESTAMP),
        ("updated_at", UTC_TIMESTAMP),
        ("header_name", sa.String()),
        ("username", sa.String()),
        ("created_by", sa.String()),
        ("uuid", sa.String()),
        ("oauth_url_subdomain", sa.String()),
        ("permission_scope", sa.String()),
        ("token_type", sa.String()),
        ("token_expiry", UTC_TIMESTAMP),
        ("oauth_client_uuid", sa.String()),
    )
    return [sa.Column(name, sa.String(), nullable=False) for name in text] + [
        sa.Column(name, kind, nullable=True) for name, kind in optional
    ]


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'complete', 'partial', 'failed')",
            name=op.f("ck_sync_runs_status"),
        ),
        sa.CheckConstraint("\"trigger\" IN ('cli', 'schedule')", name=op.f("ck_sync_runs_trigger")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    op.create_index("ix_sync_runs_status", "sync_runs", ["status"])

    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("started_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("connection_count", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("modified", sa.Integer(), nullable=False),
        sa.Column("restored", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.Column("accepted_removals", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "status IN ('complete', 'failed', 'held')", name=op.f("ck_snapshots_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_snapshots_run_id_sync_runs")
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by"],
            ["snapshots.id"],
            name=op.f("fk_snapshots_superseded_by_snapshots"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(
        "ix_snapshots_account_integration_started_at",
        "snapshots",
        ["account", "integration", "started_at"],
    )
    op.create_index("ix_snapshots_run_id", "snapshots", ["run_id"])

    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        *_key_and_metadata(),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_changed_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("removed_at", UTC_TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint("account", "integration", "type", "name", name="uq_connections_key"),
    )
    op.create_index("ix_connections_token_expiry", "connections", ["token_expiry"])
    op.create_index("ix_connections_removed_at", "connections", ["removed_at"])

    op.create_table(
        "connection_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("integration", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("change", sa.String(), nullable=False),
        sa.Column("field", sa.String(), nullable=True),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("detected_at", UTC_TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "change IN ('added', 'removed', 'modified', 'restored')",
            name=op.f("ck_connection_changes_change"),
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_connection_changes_snapshot_id_snapshots"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connection_changes")),
    )
    op.create_index("ix_connection_changes_detected_at", "connection_changes", ["detected_at"])
    op.create_index("ix_connection_changes_snapshot_id", "connection_changes", ["snapshot_id"])
    op.create_index(
        "ix_connection_changes_key",
        "connection_changes",
        ["account", "integration", "type", "name"],
    )

    op.create_table(
        "connection_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        *_key_and_metadata(),
        sa.Column("valid_from", UTC_TIMESTAMP, nullable=False),
        sa.Column("valid_to", UTC_TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connection_versions")),
    )
    op.create_index(
        "ix_connection_versions_key",
        "connection_versions",
        ["account", "integration", "type", "name", "valid_to"],
    )
    op.create_index(
        "ix_connection_versions_valid", "connection_versions", ["valid_from", "valid_to"]
    )


def downgrade() -> None:
    for table in (
        "connection_versions",
        "connection_changes",
        "connections",
        "snapshots",
        "sync_runs",
    ):
        op.drop_table(table)
