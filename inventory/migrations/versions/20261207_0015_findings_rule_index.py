"""findings: an index on (rule, account, resolved_at), so that a snapshot reads the open
findings of its account's account-level rules (ZIS009) without scanning every finding of
the account (store/findings.py)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_findings_rule_account_resolved_at",
        "findings",
        ["rule", "account", "resolved_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_findings_rule_account_resolved_at", table_name="findings")
