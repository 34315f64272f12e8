"""oauth_clients, oauth_client_versions: the OAuth clients ZIS keeps per integration
(§17), present state and history; never a client_id or client_secret

Their change events go into connection_changes with type 'oauth_client'. The snapshots
hashed from this upgrade on cover the client versions they open and close (chain
format 2); the ones hashed before keep format 1 and verify as they did.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key_and_metadata() -> list[sa.Column[Any]]:
    """(account, integration, uuid) and the §17 allow-list, in this order."""
    key = [sa.Column(c, sa.String(), nullable=False) for c in ("account", "integration", "uuid")]
    optional: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
        ("name", sa.String()),
        ("auth_url", sa.String()),
        ("token_url", sa.String()),
        ("grant_type", sa.String()),
        ("default_scopes", sa.String()),
        ("created_by", sa.String()),
        ("created_at", UTC_TIMESTAMP),
        ("updated_at", UTC_TIMESTAMP),
    )
    return key + [sa.Column(c, t, nullable=True) for c, t in optional]


def upgrade() -> None:
    # The canonical format a snapshot's hash was computed in; NULL: format 1.
    op.add_column("snapshots", sa.Column("chain_format", sa.Integer(), nullable=True))
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        *_key_and_metadata(),
        sa.Column("first_seen_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("last_changed_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("removed_at", UTC_TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
        sa.UniqueConstraint("account", "integration", "uuid", name="uq_oauth_clients_key"),
    )
    op.create_table(
        "oauth_client_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        *_key_and_metadata(),
        sa.Column("valid_from", UTC_TIMESTAMP, nullable=False),
        sa.Column("valid_to", UTC_TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_client_versions")),
    )
    op.create_index(
        "ix_oauth_client_versions_key",
        "oauth_client_versions",
        ["account", "integration", "uuid", "valid_to"],
    )
    op.create_index(
        "ix_oauth_client_versions_valid", "oauth_client_versions", ["valid_from", "valid_to"]
    )


def downgrade() -> None:
    op.drop_table("oauth_client_versions")
    op.drop_table("oauth_clients")
    op.drop_column("snapshots", "chain_format")
