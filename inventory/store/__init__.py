"""The database side: every table write, one module per concern. engine (engines, URLs,
the error boundary), schema (Alembic), runs (run rows, liveness, claims), snapshot (the
integration transaction), kinds (what it writes: connections, OAuth clients), written and
consumers (what it hands, in order, to chain, findings and outbox), chain and verify
(§13), findings and findings_reuse (§12), outbox (§11), bulk (one bulk insert per dialect).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from ..errors import SnapshotWriteFailed
from .consumers import CONSUMERS
from .engine import (
    READ_ONLY_OPTION,
    check_reachable,
    database_errors,
    describe_db_error,
    engine_for,
    is_postgres,
    is_sqlite_url,
    lock_key,
    make_engine,
    missing_sqlite_file,
    named_database,
    normalize_url,
    now,
    portable_url,
    safe_url,
)
from .kinds import CLIENTS, ItemKind
from .runs import (
    Run,
    claim,
    finish_run,
    reap_abandoned_runs,
    release_run_lock,
    run_alive,
    start_run,
)
from .schema import (
    alembic_config,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    require_schema,
    upgrade,
)
from .snapshot import (
    APPLIED,
    IntegrationTransaction,
    fresh_snapshot,
    integration_transaction,
)
from .written import Consumer, Pass, SnapshotRow, Written

__all__ = [
    "APPLIED",
    "CLIENTS",
    "CONSUMERS",
    "READ_ONLY_OPTION",
    "Connection",
    "Consumer",
    "Engine",
    "IntegrationTransaction",
    "ItemKind",
    "Pass",
    "Run",
    "SnapshotRow",
    "SnapshotWriteFailed",
    "Written",
    "alembic_config",
    "check_reachable",
    "claim",
    "current_revision",
    "database_errors",
    "describe_db_error",
    "downgrade",
    "engine_for",
    "ensure_schema",
    "finish_run",
    "fresh_snapshot",
    "head_revision",
    "integration_transaction",
    "is_postgres",
    "is_sqlite_url",
    "lock_key",
    "make_engine",
    "missing_sqlite_file",
    "named_database",
    "normalize_url",
    "now",
    "portable_url",
    "reap_abandoned_runs",
    "release_run_lock",
    "require_schema",
    "run_alive",
    "safe_url",
    "start_run",
    "upgrade",
]
