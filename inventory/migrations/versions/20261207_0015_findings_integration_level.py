"""findings: a partial index of the integration-level findings (no type: ZIS009, ZIS010)
by (account, rule, resolved_at), so that a snapshot reads its account's open findings of
the account-level rule (ZIS009) without reading every finding of the account
(store/findings.py); partial, so that the connections' findings cost it nothing

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    where = sa.text("type IS NULL")
    op.create_index(
        "ix_findings_integration_level",
        "findings",
        ["account", "rule", "resolved_at"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_findings_integration_level", table_name="findings")
