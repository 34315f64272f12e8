"""The value a snapshot's transaction builds of what it wrote (§10 "One pass"), and the
interface of the work that shares that transaction after the rows: each consumer is
handed one ``Pass`` and works from it, in the order ``store.consumers`` fixes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from sqlalchemy import Connection

from ..config import Settings
from ..diff import Diff, Key
from ..records import Connection as Record
from ..types import SnapshotStatus
from .findings import FindingEvents

EventKey = tuple[str, str, str, str | None]  # (type, name, change, field): one per snapshot


def is_applied(status: str, superseded_by: int | None) -> bool:
    """Whether a snapshot of this status applies its rows: ``store.APPLIED``, the same
    condition in SQL, read here of a row's values."""
    return status == SnapshotStatus.COMPLETE and superseded_by is None


@dataclass(frozen=True)
class SnapshotRow:
    """A row of ``snapshots``, as the sync decided it."""

    run_id: int
    account: str
    integration: str
    started_at: datetime
    status: SnapshotStatus
    connection_count: int = 0
    pages: int = 0
    error: str | None = None
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)  # added, removed, modified, restored
    superseded_by: int | None = None
    accepted_removals: bool = False
    fetched_digest: str | None = None
    full_compare: bool = False  # every stored row was compared with the fetched set

    def columns(self, finished_at: datetime) -> dict[str, object]:
        """Its ``snapshots`` columns as they are written (all but the id)."""
        added, removed, modified, restored = self.counts
        return {
            "run_id": self.run_id,
            "account": self.account,
            "integration": self.integration,
            "started_at": self.started_at,
            "finished_at": finished_at,
            "status": self.status,
            "connection_count": self.connection_count,
            "added": added,
            "removed": removed,
            "modified": modified,
            "restored": restored,
            "pages": self.pages,
            "error": self.error,
            "superseded_by": self.superseded_by,
            "accepted_removals": self.accepted_removals,
            "fetched_digest": self.fetched_digest,
            "full_compare": self.full_compare,
        }


@dataclass(frozen=True)
class Ids:
    """The ids of the history rows a snapshot's transaction wrote, by key: read back
    narrowly (ids and keys only) with the WHERE clauses `db verify` selects them by."""

    events: Mapping[EventKey, int]  # connection_changes of the snapshot
    opened: Mapping[Key, int]  # connection_versions with valid_from = its started_at
    closed: Mapping[Key, int]  # connection_versions with valid_to = its started_at


NO_IDS = Ids({}, {}, {})


@dataclass(frozen=True)
class Written:
    """What one snapshot's transaction wrote: its row (id, and the finished_at it was
    given) and, when it applied, the Diffs whose records and events it wrote into
    connections, connection_versions and connection_changes, and oauth_clients,
    oauth_client_versions and connection_changes, every one at ``row.started_at``, with
    the ids of the connections' events and versions; and the connections present once it
    applied (the fetched set), which its findings judge."""

    snapshot_id: int
    row: SnapshotRow
    finished_at: datetime
    changes: Diff | None = None  # None: no change applied (failed, held, superseded, none)
    # The ids, or how to read them in the transaction: read once, when a consumer first
    # asks (the chain does), so that no work is done for none (``ids``).
    ids_of: Ids | Callable[[], Ids] = NO_IDS
    present: tuple[Record, ...] | None = None  # None: not applied (the stored rows stand)
    clients: Diff | None = None  # what it wrote of the OAuth clients (§17), likewise

    @cached_property
    def ids(self) -> Ids:
        return self.ids_of() if callable(self.ids_of) else self.ids_of

    @property
    def applied(self) -> bool:
        return is_applied(self.row.status, self.row.superseded_by)

    @property
    def changed(self) -> frozenset[tuple[str, str]]:
        """The (type, name) keys whose rows it wrote."""
        return frozenset() if self.changes is None else self.changes.keys()

    @property
    def client_counts(self) -> tuple[int, int, int, int]:
        """The OAuth clients it added, removed, modified and restored."""
        if self.clients is None:
            return (0, 0, 0, 0)
        added, removed, modified, restored = self.clients.counts().values()
        return (added, removed, modified, restored)


@dataclass
class Pass:
    """One snapshot's pass through its consumers, in its transaction: what was written,
    the settings it was written under, and what a consumer leaves for the next (the
    findings it opened and resolved, which the outbox tells)."""

    conn: Connection
    settings: Settings | None
    written: Written
    found: FindingEvents = field(default_factory=lambda: FindingEvents([], []))


Consumer = Callable[[Pass], None]
