"""The tables auditors query (§5 of the spec), as typed SQLAlchemy models.

The schema is created and evolved only by the Alembic migrations in inventory/migrations/;
a test proves these models and the migrations agree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as UTC on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite returns the stored UTC text; the C parser reads it many times faster than
        # the generic DateTime processor, which matters when a sync reads its state back.
        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            return datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime(), str: String()}


class MetadataColumns:
    """The §4 allow-list, shared by ``connections`` and ``connection_versions``."""

    account: Mapped[str]
    integration: Mapped[str]
    type: Mapped[str]
    name: Mapped[str]
    allowed_domain: Mapped[str | None]
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    header_name: Mapped[str | None]
    username: Mapped[str | None]
    created_by: Mapped[str | None]
    uuid: Mapped[str | None]
    oauth_url_subdomain: Mapped[str | None]
    permission_scope: Mapped[str | None]
    token_type: Mapped[str | None]
    token_expiry: Mapped[datetime | None]
    oauth_client_uuid: Mapped[str | None]


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (
        CheckConstraint("\"trigger\" IN ('cli', 'schedule')", name="trigger"),
        CheckConstraint("status IN ('running', 'complete', 'partial', 'failed')", name="status"),
        Index("ix_sync_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    trigger: Mapped[str]
    status: Mapped[str]
    host: Mapped[str | None]
    pid: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (
        CheckConstraint("status IN ('complete', 'failed', 'held')", name="status"),
        Index(
            "ix_snapshots_account_integration_started_at", "account", "integration", "started_at"
        ),
        Index("ix_snapshots_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id"))
    account: Mapped[str]
    integration: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    status: Mapped[str]
    connection_count: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    modified: Mapped[int] = mapped_column(Integer, default=0)
    restored: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Set when a later-started snapshot of the same integration was applied first:
    # this one's older view of the account is recorded but not applied.
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    accepted_removals: Mapped[bool] = mapped_column(Boolean, default=False)
    # SHA-256 (hex) of the allow-listed metadata of the pages a complete or held snapshot
    # fetched, in order (records.fetched_digest): when the next snapshot's pages give the
    # same, nothing changed and no row needs comparing.
    fetched_digest: Mapped[str | None] = mapped_column(String(64))
    # Every stored row was compared with the fetched set (not taken as unchanged by the
    # digest): sync.full_compare_interval is measured from the last applied one.
    full_compare: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The hash chain (migration 0008, inventory.store.chain): SHA-256 (hex) of the previous
    # snapshot's chain_hash and this snapshot's canonical rows; NULL before the upgrade.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    # Short per-row, per-column digests (JSON) that say where a broken hash changed.
    chain_rows: Mapped[str | None] = mapped_column(Text)
    # The canonical form's format the hash was computed in (migration 0013); NULL for a
    # snapshot hashed before it (format 1).
    chain_format: Mapped[int | None] = mapped_column(Integer)


class Connection(MetadataColumns, Base):
    __tablename__ = "connections"
    __table_args__ = (
        UniqueConstraint("account", "integration", "type", "name", name="uq_connections_key"),
        # Only the rows with a value: most rows have neither (migration 0004).
        Index(
            "ix_connections_token_expiry",
            "token_expiry",
            sqlite_where=text("token_expiry IS NOT NULL"),
            postgresql_where=text("token_expiry IS NOT NULL"),
        ),
        Index(
            "ix_connections_removed_at",
            "removed_at",
            sqlite_where=text("removed_at IS NOT NULL"),
            postgresql_where=text("removed_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_seen_at: Mapped[datetime]
    last_changed_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class ConnectionChange(Base):
    __tablename__ = "connection_changes"
    __table_args__ = (
        CheckConstraint("change IN ('added', 'removed', 'modified', 'restored')", name="change"),
        Index("ix_connection_changes_detected_at", "detected_at"),
        Index("ix_connection_changes_snapshot_id", "snapshot_id"),
        Index("ix_connection_changes_key", "account", "integration", "type", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"))
    account: Mapped[str]
    integration: Mapped[str]
    type: Mapped[str]
    name: Mapped[str]
    change: Mapped[str]
    field: Mapped[str | None]
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime]


class ConnectionVersion(MetadataColumns, Base):
    __tablename__ = "connection_versions"
    __table_args__ = (
        Index("ix_connection_versions_key", "account", "integration", "type", "name", "valid_to"),
        Index("ix_connection_versions_valid", "valid_from", "valid_to"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    valid_from: Mapped[datetime]
    valid_to: Mapped[datetime | None]


class ClientColumns:
    """The §17 allow-list of an OAuth client, shared by ``oauth_clients`` and
    ``oauth_client_versions``: the key (account, integration, uuid), then its metadata."""

    account: Mapped[str]
    integration: Mapped[str]
    uuid: Mapped[str]
    name: Mapped[str | None]
    auth_url: Mapped[str | None]
    token_url: Mapped[str | None]
    grant_type: Mapped[str | None]
    default_scopes: Mapped[str | None]
    created_by: Mapped[str | None]
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class OAuthClient(ClientColumns, Base):
    """The OAuth clients ZIS keeps per integration (§17), one row per uuid ever seen:
    present while ``removed_at`` is NULL. Never a client_id or client_secret."""

    __tablename__ = "oauth_clients"
    __table_args__ = (
        UniqueConstraint("account", "integration", "uuid", name="uq_oauth_clients_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_seen_at: Mapped[datetime]
    last_changed_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class OAuthClientVersion(ClientColumns, Base):
    """OAuth clients' history as validity ranges, as ``connection_versions``."""

    __tablename__ = "oauth_client_versions"
    __table_args__ = (
        Index("ix_oauth_client_versions_key", "account", "integration", "uuid", "valid_to"),
        Index("ix_oauth_client_versions_valid", "valid_from", "valid_to"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    valid_from: Mapped[datetime]
    valid_to: Mapped[datetime | None]


class RegistryIntegration(Base):
    """An account's integrations as the ZIS registry lists them (§14): present while
    ``removed_at`` is NULL; ``configured`` says whether the configuration inventories it."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("account", "name", name="uq_integrations_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str]
    name: Mapped[str]
    description: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]
    configured: Mapped[bool] = mapped_column(Boolean)


class RegistryListing(Base):
    """One listing of an account's registry by a sync: complete (applied to
    ``integrations`` unless a later-started listing was applied first) or failed (applied
    nothing)."""

    __tablename__ = "registry_listings"
    __table_args__ = (
        CheckConstraint("status IN ('complete', 'failed')", name="status"),
        Index("ix_registry_listings_account_started_at", "account", "started_at"),
        Index("ix_registry_listings_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id"))
    account: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    status: Mapped[str]
    integration_count: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    restored: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("registry_listings.id"))


class Finding(Base):
    """One episode of a rule firing on a key: opened when it first fires, moved on while
    it keeps firing, resolved when it stops. Firing again later opens a new row."""

    __tablename__ = "findings"
    __table_args__ = (
        CheckConstraint("severity IN ('low', 'medium', 'high', 'critical')", name="severity"),
        Index(
            "ix_findings_account_integration_resolved_at", "account", "integration", "resolved_at"
        ),
        # An account's integration-level findings (no type: ZIS009, ZIS010), among them the
        # account-level rule's that every snapshot of the account reads; partial, so that
        # the connections' findings cost it nothing.
        Index(
            "ix_findings_integration_level",
            "account",
            "rule",
            "resolved_at",
            sqlite_where=text("type IS NULL"),
            postgresql_where=text("type IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str]
    slug: Mapped[str]
    severity: Mapped[str]
    account: Mapped[str]
    integration: Mapped[str]
    type: Mapped[str | None]  # NULL for an integration-level rule (ZIS009, ZIS010)
    name: Mapped[str | None]
    detail: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    # The suppression in force at the last evaluation ("rule on glob until date: reason").
    suppressed_by: Mapped[str | None] = mapped_column(Text)
    suppressed_until: Mapped[date | None] = mapped_column(Date)
    # Why it shows again: the suppression that lapsed (what it said and when it ended).
    note: Mapped[str | None] = mapped_column(Text)


class FindingsEvaluation(Base):
    """When the connection rules last read an integration's rows, under which rules and
    suppressions (a digest), and until when that result stands: a later snapshot that
    changed no row before ``valid_until`` keeps it instead of reading the rows again
    (findings_reuse.py). Bookkeeping of the findings table, not history."""

    __tablename__ = "findings_evaluations"

    account: Mapped[str] = mapped_column(String, primary_key=True)
    integration: Mapped[str] = mapped_column(String, primary_key=True)
    snapshot_id: Mapped[int]  # the snapshot whose update read the rows
    evaluated_at: Mapped[datetime]
    valid_until: Mapped[datetime]
    rules_digest: Mapped[str]


class RowDigest(Base):
    """The row digests of an integration's present rows as its last applied snapshot
    left them: each key and a hash of its record, so that a snapshot reads only the rows
    whose hash differs (store/digests.py). Internal bookkeeping, not history, and not part
    of the auditors' contract: nothing reads it but the sync, and ``db verify`` does not
    depend on it."""

    __tablename__ = "row_digests"

    account: Mapped[str] = mapped_column(String, primary_key=True)
    integration: Mapped[str] = mapped_column(String, primary_key=True)
    format: Mapped[int]  # the layout of the two columns below (digests.FORMAT)
    snapshot_id: Mapped[int]  # the applied snapshot whose rows they describe
    entries: Mapped[int]  # how many present rows
    entry_keys: Mapped[bytes] = mapped_column(LargeBinary)  # UTF-8 "type NUL name NUL", each
    entry_hashes: Mapped[bytes] = mapped_column(LargeBinary)  # records.row_hashes, same order


class Notification(Base):
    """The outbox and delivery log (spec §11): one row per (sink, message), written in the
    transaction of the snapshot that caused it; ``payload`` is the webhook JSON."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'dead')", name="status"),
        UniqueConstraint("webhook_id", name="uq_notifications_webhook_id"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notifications_sink_status", "sink", "status"),
        Index("ix_notifications_created_at", "created_at"),
        Index("ix_notifications_snapshot_id", "snapshot_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sink: Mapped[str]
    event: Mapped[str]
    account: Mapped[str | None]
    integration: Mapped[str | None]
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    status: Mapped[str]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    webhook_id: Mapped[str]


class NotificationAttempt(Base):
    """Each delivery attempt of a notification: when, the HTTP status or the error."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index("ix_notification_attempts_notification_id", "notification_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime]
    status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str]  # sent | retry | dead


class ExpiryWarning(Base):
    """The expiry ledger: each (connection, token_expiry, threshold) once. ``notified`` is
    false for the wider thresholds a warning counted as given."""

    __tablename__ = "expiry_warnings"
    __table_args__ = (
        UniqueConstraint(
            "account",
            "integration",
            "type",
            "name",
            "token_expiry",
            "threshold",
            name="uq_expiry_warnings_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str]
    integration: Mapped[str]
    type: Mapped[str]
    name: Mapped[str]
    threshold: Mapped[int] = mapped_column(Integer)  # days; 0 = expired
    token_expiry: Mapped[datetime]
    warned_at: Mapped[datetime]
    notified: Mapped[bool] = mapped_column(Boolean, default=False)


class NotifySink(Base):
    """When each sink name was first configured: it gets only what happens after."""

    __tablename__ = "notify_sinks"

    name: Mapped[str] = mapped_column(primary_key=True)
    first_configured_at: Mapped[datetime]


class DatabaseIdentity(Base):
    """The database's own id: one row, a random UUID made by the migration that added this
    table (or by the first upgrade of a new database), never changed (triggers refuse it).
    Findings' SIEM ids (``report.findings.finding_uid``) are derived from it, so two databases
    never give one finding's id to different findings."""

    __tablename__ = "database_identity"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    database_id: Mapped[str] = mapped_column(String(36))  # a UUID, canonical form
    created_at: Mapped[datetime]
