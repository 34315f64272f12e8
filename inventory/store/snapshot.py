"""The integration transaction: under the (account, integration) lock, read the stored
state, then write one snapshot row and what it applies, in one transaction.

Every snapshot row (complete, held, failed or superseded) is written by
``IntegrationTransaction.write``, which only ``integration_transaction`` hands out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, NamedTuple, cast
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    bindparam,
    func,
    literal,
    select,
    type_coerce,
)

from .. import models as m
from ..config import Settings
from ..diff import Diff, Key, Stored
from ..errors import SnapshotError, SnapshotWriteFailed
from ..phases import phase
from ..records import Connection as Record
from ..types import ChangeKind, SnapshotStatus
from .bulk import insert_rows
from .consumers import CONSUMERS
from .digests import RowDigests
from .engine import database_errors, is_postgres, lock_key, now
from .findings import FindingEvents
from .kinds import CLIENTS, KINDS, ItemKind
from .kinds import CONNECTIONS as CONNECTION_KIND
from .written import NO_IDS, Consumer, Ids, Pass, SnapshotRow, Written

SNAPSHOTS = cast(Table, m.Snapshot.__table__)
CONNECTIONS = CONNECTION_KIND.current
VERSIONS = CONNECTION_KIND.versions
CHANGES = cast(Table, m.ConnectionChange.__table__)
EVENT_COLUMNS = ("change", "type", "name", "field", "old_value", "new_value")

# An applied snapshot: complete and not superseded; failed and held ones apply nothing.
# Applied snapshots start in the order they are applied: one that started before an
# applied one is superseded, not applied.
APPLIED = (
    SNAPSHOTS.c.status == SnapshotStatus.COMPLETE,
    SNAPSHOTS.c.superseded_by.is_(None),
)


class LastApplied(NamedTuple):
    id: int
    started_at: datetime
    fetched_digest: str | None


# SQLite has one writer per file: the threads of this process queue for it here, on a
# lock that wakes the next one at once, rather than in SQLite's busy handler, which polls
# with sleeps of up to 100 ms.
_SQLITE_WRITERS: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()
_SQLITE_WRITERS_LOCK = threading.Lock()


def _writer_lock(engine: Engine) -> AbstractContextManager[object]:
    if is_postgres(engine):
        return nullcontext()
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(engine, threading.Lock())


@contextmanager
def integration_transaction(
    engine: Engine,
    account: str,
    integration: str,
    settings: Settings | None = None,
    on_commit: Callable[[FindingEvents], None] | None = None,
    consumers: Sequence[Consumer] = CONSUMERS,
) -> Iterator[IntegrationTransaction]:
    """One transaction holding the (account, integration) lock: PostgreSQL advisory xact
    lock, SQLite's write lock (BEGIN IMMEDIATE). Commits on success, rolls back on any
    error; a database error becomes SnapshotWriteFailed (this snapshot fails). The
    snapshot it writes is handed to ``consumers``, in order, in the same transaction. Once
    it has committed, ``on_commit`` gets what the findings of its snapshot opened and
    resolved (the run tells those about no connection at its end)."""
    doing = f"{account}/{integration}: database error while writing the snapshot"
    with (
        _writer_lock(engine),
        database_errors(engine, doing, SnapshotWriteFailed),
    ):
        committing = ExitStack()  # the "commit" phase: from the block's end to the commit
        with committing, engine.begin() as conn:
            if is_postgres(conn):
                conn.execute(select(func.pg_advisory_xact_lock(lock_key(account, integration))))
            tx = IntegrationTransaction(conn, account, integration, settings, consumers)
            yield tx
            committing.enter_context(phase("commit"))
        if on_commit is not None:
            on_commit(tx.found)


def fresh_snapshot(engine: Engine, account: str, integration: str, since: datetime) -> int | None:
    """An applied snapshot of this integration that started at or after ``since``."""
    with database_errors(engine, f"{account}/{integration}: cannot read"), engine.connect() as c:
        return c.execute(_last_applied(account, integration, SNAPSHOTS.c.id, since=since)).scalar()


class IntegrationTransaction:
    """One (account, integration) under its lock: read the state, then write one snapshot."""

    def __init__(
        self,
        conn: Connection,
        account: str,
        integration: str,
        settings: Settings | None = None,
        consumers: Sequence[Consumer] = CONSUMERS,
    ) -> None:
        self.conn = conn
        self.account = account
        self.integration = integration
        self.settings = settings
        self.consumers = consumers
        self.found = FindingEvents([], [])  # by the last write's consumers, for the run
        self.sqlite = not is_postgres(conn)
        self.row_digests = RowDigests(conn, account, integration)
        # Rows written per table, for tests and benchmarks.
        self.written = dict.fromkeys(
            (*(t.name for k in KINDS for t in (k.current, k.versions)), CHANGES.name), 0
        )

    @cached_property
    def last_applied(self) -> LastApplied | None:
        """The integration's last applied snapshot, read once, under the lock and before
        this transaction writes one."""
        t = SNAPSHOTS
        query = _last_applied(
            self.account, self.integration, t.c.id, t.c.started_at, t.c.fetched_digest
        )
        row = self.conn.execute(query).one_or_none()
        return None if row is None else LastApplied(row[0], row[1], row[2])

    def newer_snapshot(self, started_at: datetime) -> int | None:
        """The last applied snapshot, when it started at or after ``started_at``."""
        last = self.last_applied
        return last.id if last is not None and last.started_at >= started_at else None

    def last_full_compare(self) -> datetime | None:
        """When the newest applied snapshot that compared every row started."""
        t = SNAPSHOTS
        return self.conn.execute(
            select(func.max(t.c.started_at)).where(
                t.c.account == self.account,
                t.c.integration == self.integration,
                t.c.full_compare.is_(True),
                *APPLIED,
            )
        ).scalar()

    def full_compare_due(self, at: datetime, interval: timedelta) -> bool:
        """Whether every row is due a compare: none was compared less than ``interval``
        before ``at``."""
        compared = self.last_full_compare()
        return compared is None or at - compared >= interval

    def unchanged(self, digest: str, count: int, at: datetime, interval: timedelta) -> bool:
        """Whether the stored rows may be taken for what a fetched set with this digest
        and count leaves, so that no row needs reading: the last applied snapshot fetched
        pages with the same digest (applying a snapshot leaves the present rows equal to
        its fetched set), as many rows are present (rows inserted or deleted by hand are
        not taken for it), and every row was compared less than ``interval`` before
        ``at`` (so a row edited by hand is corrected within it)."""
        last = self.last_applied
        if last is None or last.fetched_digest != digest:
            return False
        return not self.full_compare_due(at, interval) and self.present_count() == count

    def present_count(self) -> int:
        c = CONNECTIONS
        present = select(func.count()).where(
            c.c.account == self.account,
            c.c.integration == self.integration,
            c.c.removed_at.is_(None),
        )
        return int(self.conn.execute(present).scalar_one())

    def changed_rows(self, fetched: Sequence[Record]) -> Diff | None:
        """The diff of ``fetched`` read from the stored rows its row digests do not vouch
        for, or None when they cannot say: compare every row (store.digests)."""
        last = self.last_applied
        last_id = None if last is None else last.id
        return self.row_digests.changes(fetched, last_id, self.present_count, self.load_state)

    def load_state(self, *where: Any, kind: ItemKind = CONNECTION_KIND) -> dict[Key, Stored]:
        """Every row of the integration in ``kind``'s table (``connections`` unless
        said) that matches ``where``, as records. A value the database holds that no sync
        wrote (a timestamp SQLite cannot read, a binary value) fails the snapshot, naming
        the row."""
        c = kind.current
        columns: list[Any] = [
            type_coerce(c.c[f], String) if self.sqlite and f in kind.timestamps else c.c[f]
            for f in kind.fields
        ]
        rows = self.conn.execute(
            select(*columns, c.c.removed_at.is_not(None)).where(
                c.c.account == self.account, c.c.integration == self.integration, *where
            )
        )
        stamps = [i for i, f in enumerate(kind.fields) if f in kind.timestamps]
        state: dict[Key, Stored] = {}
        for row in rows:
            values = list(row)
            removed = values.pop()
            if bytes in map(type, values):
                raise self._unreadable(kind, values, "a value that is not text")
            if self.sqlite:  # UTC text, as models.UTCDateTime stores it
                for i in stamps:
                    if values[i] is not None:
                        values[i] = self._timestamp(kind, values, values[i])
            record = kind.make(values)
            state[record.key] = Stored(record, bool(removed))
        return state

    def _timestamp(self, kind: ItemKind, row: list[Any], text: str) -> datetime:
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            raise self._unreadable(kind, row, "an unreadable timestamp") from None

    def _unreadable(self, kind: ItemKind, row: Any, what: str) -> SnapshotError:
        named = " ".join(
            str(v) if i < len(kind.key) - 1 else repr(v) for i, v in enumerate(row[: len(kind.key)])
        )
        return SnapshotError(
            f"{self.account}/{self.integration}: the {kind.current.name} row of {named} "
            f"holds {what} (changed outside zis-inventory?); nothing written"
        )

    def write(
        self,
        row: SnapshotRow,
        changes: Diff | None = None,
        present: Sequence[Record] | None = None,
        clients: Diff | None = None,
    ) -> int:
        """Write one snapshot: its row, then, when it applies (complete and not superseded),
        what ``changes`` changes in connections, connection_versions and
        connection_changes, and ``clients`` in oauth_clients, oauth_client_versions and
        connection_changes, every event and version at ``row.started_at``, and the row
        digests of ``present``, the fetched connections, which the stored rows equal once
        it applied. Every snapshot row is written here; then what it wrote is handed, as
        one ``Written`` value, to the transaction's consumers (chain, findings, outbox), in
        order, in this transaction."""
        previous = self.last_applied if present is not None else None  # before this one
        with phase("rows"):
            snapshot_id, finished_at = self._insert_snapshot(row)
            written = Written(snapshot_id, row, finished_at)
            if written.applied:
                applied = {}
                for kind, diff in ((CONNECTION_KIND, changes), (CLIENTS, clients)):
                    if diff is not None and not diff.empty:
                        self._apply(snapshot_id, diff, row.started_at, kind)
                        applied[kind] = diff
                at = row.started_at
                written = Written(
                    snapshot_id,
                    row,
                    finished_at,
                    applied.get(CONNECTION_KIND),
                    (lambda: self._ids(snapshot_id, at)) if applied else NO_IDS,
                    None if present is None else tuple(present),
                    applied.get(CLIENTS),
                )
            if written.applied and changes is not None and present is not None:
                rewrite = row.full_compare or not changes.empty
                last_id = None if previous is None else previous.id
                self.row_digests.applied(snapshot_id, last_id, present, rewrite)
        one_pass = Pass(self.conn, self.settings, written)
        for consume in self.consumers:
            with phase(consume.__name__):
                consume(one_pass)
        self.found = one_pass.found
        return snapshot_id

    def _insert_snapshot(self, row: SnapshotRow) -> tuple[int, datetime]:
        finished_at = now()
        snapshot_id: int = self.conn.execute(
            SNAPSHOTS.insert().values(row.columns(finished_at)).returning(SNAPSHOTS.c.id)
        ).scalar_one()
        return snapshot_id, finished_at

    def _ids(self, snapshot_id: int, at: datetime) -> Ids:
        """The ids of the events and versions ``_apply`` wrote, by key: ids and keys only,
        selected as `db verify` selects a snapshot's rows."""
        c, v = CHANGES.c, VERSIONS.c
        events = self.conn.execute(
            select(c.id, c.type, c.name, c.change, c.field).where(c.snapshot_id == snapshot_id)
        )
        mine = (v.account == self.account, v.integration == self.integration)
        opened = select(v.id, v.type, v.name).where(*mine, v.valid_from == at)
        closed = select(v.id, v.type, v.name).where(*mine, v.valid_to == at)
        return Ids(
            {(t, n, change, f): i for i, t, n, change, f in events},
            {(t, n): i for i, t, n in self.conn.execute(opened)},
            {(t, n): i for i, t, n in self.conn.execute(closed)},
        )

    def _apply(self, snapshot_id: int, changes: Diff, at: datetime, kind: ItemKind) -> None:
        """``kind``'s present rows, then the versions closed and opened, then the events.
        The versions opened and the added events are copied inside the database from the
        present rows this snapshot wrote (last_changed_at, first_seen_at = ``at``): the
        same values, with no Python work per row."""
        scope = {"account": self.account, "integration": self.integration}
        table = kind.current
        self._insert(
            table,
            kind.fields,
            changes.added,
            {**scope, "first_seen_at": at, "last_changed_at": at, "removed_at": None},
        )
        self._update_current(
            kind,
            [*changes.modified, *changes.restored],
            {"last_changed_at": at, "removed_at": None},
            with_metadata=True,
        )
        self._update_current(kind, changes.removed, {"removed_at": at, "last_changed_at": at})
        self._close_versions(kind, [*changes.modified, *changes.removed], at)
        c = table.c
        mine = (c.account == self.account, c.integration == self.integration)
        opened = select(c.account, c.integration, *(c[f] for f in kind.fields), c.last_changed_at)
        self._copy(
            kind.versions,
            ("account", "integration", *kind.fields, "valid_from"),
            opened.where(*mine, c.last_changed_at == at, c.removed_at.is_(None)),
        )
        self._insert(
            CHANGES,
            EVENT_COLUMNS,
            [e for e in changes.events if e.change != ChangeKind.ADDED],
            {**scope, "snapshot_id": snapshot_id, "detected_at": at},
        )
        added = select(
            literal(snapshot_id), c.account, c.integration, c.first_seen_at,
            literal(ChangeKind.ADDED.value), *kind.label(table),
        )  # fmt: skip
        self._copy(  # after the other events, in key order, as Diff.events has them
            CHANGES,
            ("snapshot_id", "account", "integration", "detected_at", "change", "type", "name"),
            added.where(*mine, c.first_seen_at == at).order_by(*(c[k] for k in kind.key)),
        )

    def _copy(self, table: Table, columns: tuple[str, ...], rows: Any) -> None:
        statement = table.insert().from_select(columns, rows)
        copied = self.conn.execute(statement.execution_options(preserve_rowcount=True))
        self.written[table.name] += copied.rowcount

    def _insert(
        self, table: Table, columns: tuple[str, ...], rows: Any, fixed: dict[str, Any]
    ) -> None:
        self.written[table.name] += insert_rows(self.conn, table, columns, rows, fixed)

    def _by_key(self, kind: ItemKind, table: Table) -> Any:
        t = table.c
        return (
            t.account == self.account,
            t.integration == self.integration,
            *(t[k] == bindparam(f"key_{k}") for k in kind.key),
        )

    def _update_current(
        self,
        kind: ItemKind,
        records: Sequence[Any],
        fixed: dict[str, Any],
        *,
        with_metadata: bool = False,
    ) -> None:
        if not records:
            return
        values: dict[str, Any] = {c: bindparam(f"new_{c}") for c in fixed}
        if with_metadata:
            values |= {f: bindparam(f"new_{f}") for f in kind.metadata}
        table = kind.current
        statement = table.update().where(*self._by_key(kind, table)).values(values)
        params = [self._params(kind, r, fixed, with_metadata) for r in records]
        self.written[table.name] += self.conn.execute(statement, params).rowcount

    def _close_versions(self, kind: ItemKind, records: Sequence[Any], at: datetime) -> None:
        if not records:
            return
        table = kind.versions
        statement = (
            table.update()
            .where(*self._by_key(kind, table), table.c.valid_to.is_(None))
            .values(valid_to=bindparam("new_valid_to"))
        )
        params = [self._params(kind, r, {"valid_to": at}, False) for r in records]
        self.written[table.name] += self.conn.execute(statement, params).rowcount

    @staticmethod
    def _params(
        kind: ItemKind, record: Any, fixed: dict[str, Any], with_metadata: bool
    ) -> dict[str, Any]:
        params: dict[str, Any] = {f"key_{k}": v for k, v in zip(kind.key, record, strict=False)}
        params |= {f"new_{c}": v for c, v in fixed.items()}
        if with_metadata:
            params |= {f"new_{f}": v for f, v in zip(kind.metadata, record.metadata(), strict=True)}
        return params


def _last_applied(
    account: str, integration: str, *columns: Any, since: datetime | None = None
) -> Any:
    """``columns`` of the newest applied snapshot of an integration (started at or after
    ``since``)."""
    t = SNAPSHOTS
    query = select(*columns).where(t.c.account == account, t.c.integration == integration, *APPLIED)
    if since is not None:
        query = query.where(t.c.started_at >= since)
    return query.order_by(t.c.started_at.desc()).limit(1)
