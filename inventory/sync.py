"""run_sync(): for each configured integration, fetch -> records -> diff -> store.

Integrations are fetched concurrently (sync.concurrency workers); each worker holds one
integration's records at a time. A failure fails that snapshot only.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import NoReturn

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import store
from .config import Account, Integration, Settings
from .diff import Diff, diff, narrow, removal_hold_reason
from .errors import (
    ConfigError,
    DatabaseError,
    Interrupted,
    InventoryError,
    ResponseError,
    SnapshotError,
)
from .records import Connection, FetchedDigest, Settled, SharedValues, parse_page
from .zis import ZisClient

log = logging.getLogger(__name__)

TransportFactory = Callable[[Account], httpx.BaseTransport | None]
RUN_GC_THRESHOLD = 100_000  # allocations between young collections during a run (default 700)
# Snapshot transactions written at once on PostgreSQL. More take processor time from the
# fetch without ending the run sooner: a first sync of 10 x 10,000 with the database on
# the same 2 cores measured 1.78 x its floor with 1 or 4 writers, 1.69 x with 3, 1.67 x
# with 2 (docs/decisions.md). When the API bounds the run, two keep up with every fetch.
POSTGRES_WRITERS = 2


@dataclass(frozen=True)
class Tick:
    """A scheduled run: an integration that already has a complete snapshot started at or
    after ``since``, or that another replica is syncing (``claim``), is skipped."""

    since: datetime
    claim: bool = True


@dataclass
class SnapshotResult:
    account: str
    integration: str
    status: str  # complete | failed | held | interrupted | skipped
    connection_count: int = 0
    added: int = 0
    removed: int = 0
    modified: int = 0
    restored: int = 0
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None
    snapshot_id: int | None = None
    superseded_by: int | None = None

    def log_line(self) -> str:
        text = (
            f"{self.account}/{self.integration}: {self.status}: +{self.added} added, "
            f"-{self.removed} removed, ~{self.modified} modified, "
            f"^{self.restored} restored; {self.connection_count} connections, "
            f"{self.pages} pages, {self.seconds:.2f}s"
        )
        if self.superseded_by is not None:
            text += f" (not applied: snapshot {self.superseded_by} saw the account later)"
        if self.error:
            text += f": {self.error}"
        return text


@dataclass
class RunResult:
    run_id: int
    status: str
    snapshots: list[SnapshotResult]
    drift: dict[str, list[str]] = field(default_factory=dict)
    migration: str | None = None
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)  # account: (all, 429)

    @property
    def exit_code(self) -> int:
        return 0 if all(s.status in ("complete", "skipped") for s in self.snapshots) else 1


@dataclass
class Fetched:
    """What one integration's pages gave, filled as the pages arrive."""

    by_type: dict[str, dict[str, Connection]] = field(default_factory=dict)  # type: name:
    unknown_types: set[str] = field(default_factory=set)
    pages: int = 0
    count: int = 0
    digest: FetchedDigest = field(default_factory=FetchedDigest)  # of every page, in order
    in_order: list[Connection] = field(default_factory=list)  # as the pages gave them
    # Parsing that skipped the chunks the snapshot ``known_of`` kept (``add_settled``):
    # the records of the other chunks, in page order; by_type maps the others' names to
    # None, and in_order stays empty.
    known_of: int | None = None
    changed: list[Connection] = field(default_factory=list)

    def add(self, connections: list[Connection]) -> Connection | None:
        """One page's connections, as ``parse_page`` gives them (each type's together);
        the first one whose key is already here (or twice on the page) stops it and is
        returned. Kept by type, then name: no key tuple per connection, and each type's
        run of the page goes in with one ``dict.update``."""
        for type_name, run in groupby(connections, key=itemgetter(0)):
            same_type = list(run)
            named = self.by_type.setdefault(type_name, {})
            before = len(named)
            named.update(zip(map(itemgetter(1), same_type), same_type, strict=True))
            if len(named) != before + len(same_type):
                return self._repeated(same_type)
            self.in_order += same_type
            self.count += len(same_type)
        return None

    def add_settled(self, settled: Sequence[Settled]) -> Settled | None:
        """Items as parsing that skips known chunks settles them; the first one whose
        key is already here stops it and is returned."""
        by_type, changed = self.by_type, self.changed
        for item in settled:
            named = by_type.get(item.type)
            if named is None:
                named = by_type[item.type] = {}
            elif item.name in named:
                return item
            named[item.name] = item.connection  # type: ignore[assignment]
            if item.connection is not None:
                changed.append(item.connection)
        self.count += len(settled)
        return None

    def _repeated(self, same_type: list[Connection]) -> Connection:
        """The first of ``same_type`` (just added to their type, overwriting) whose name
        came before, in this run or in an earlier page."""
        seen = {c.name for c in self.in_order if c.type == same_type[0].type}
        for connection in same_type:
            if connection.name in seen:
                return connection
            seen.add(connection.name)
        raise AssertionError("no repeated name")  # the caller saw a repeated one

    def release(self) -> None:
        """Drop the records (the counts stay), once the diff holds what is needed."""
        self.by_type = {}
        self.in_order = []
        self.changed = []

    def split(self, chunks: Set[bytes]) -> tuple[list[Connection], int]:
        """The connections in a chunk whose digest is not one of ``chunks``, in the order
        ``connections`` gives them, and how many connections the others hold."""
        changed: list[Connection] = []
        starts = [*self.digest.starts, self.count]
        for number, chunk in enumerate(self.digest.chunks()):
            if chunk not in chunks:
                changed += self.in_order[starts[number] : starts[number + 1]]
        return self._by_type(changed), self.count - len(changed)

    def settled_split(self) -> tuple[list[Connection], int]:
        """``split`` of the chunks the snapshot ``known_of`` kept, as parsing settled them."""
        return self._by_type(list(self.changed)), self.count - len(self.changed)

    def _by_type(self, changed: list[Connection]) -> list[Connection]:
        rank = {type_name: n for n, type_name in enumerate(self.by_type)}
        changed.sort(key=lambda c: rank[c.type])  # stable: by type, then as the pages came
        return changed

    def connections(self) -> Iterator[Connection]:
        for named in self.by_type.values():
            yield from named.values()


def select_targets(
    settings: Settings, accounts: Sequence[str] = (), integrations: Sequence[str] = ()
) -> list[tuple[Account, Integration]]:
    """The (account, integration) pairs the --account/--integration filters keep."""
    known_accounts = {a.subdomain for a in settings.accounts}
    for name in accounts:
        if name not in known_accounts:
            raise ConfigError(
                f"--account {name}: not a configured account "
                f"(configured: {', '.join(sorted(known_accounts))})"
            )
    known_integrations = {i.name for a in settings.accounts for i in a.integrations}
    for name in integrations:
        if name not in known_integrations:
            raise ConfigError(
                f"--integration {name}: not a configured integration "
                f"(configured: {', '.join(sorted(known_integrations))})"
            )
    targets = [
        (account, integration)
        for account in settings.accounts
        if not accounts or account.subdomain in accounts
        for integration in account.integrations
        if not integrations or integration.name in integrations
    ]
    if not targets:
        raise ConfigError("--account/--integration: no configured integration matches both filters")
    return targets


@dataclass
class _Run:
    """What every snapshot of one run shares."""

    engine: Engine
    run_id: int
    settings: Settings
    accept_removals: bool
    compare_all: bool
    stop: threading.Event
    tick: Tick | None
    writer: ThreadPoolExecutor
    sets: threading.Semaphore  # integrations in memory: being fetched, waiting or sent
    chunks: store.ChunkReader  # what each fetch may skip
    drift: dict[str, list[str]] = field(default_factory=dict)


def run_sync(
    settings: Settings,
    engine: Engine,
    *,
    trigger: str = "cli",
    accept_removals: bool = False,
    compare_all: bool = False,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    transport: TransportFactory | None = None,
    stop: threading.Event | None = None,
    tick: Tick | None = None,
    on_run: Callable[[store.Run], None] | None = None,
) -> RunResult:
    targets = select_targets(settings, accounts, integrations)
    stop = stop or threading.Event()
    try:
        run = store.start_run(engine, trigger)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot start a run: {store.describe_db_error(engine, exc)}") from None
    if on_run is not None:
        on_run(run)
    results: list[SnapshotResult] = []
    clients = {
        a.subdomain: ZisClient(
            a,
            settings.sync,
            transport=transport(a) if transport else None,
            sleep=stop.wait,
            stop=stop,
        )
        for a in {a.subdomain: a for a, _ in targets}.values()
    }
    # Fetch workers hand each complete set to a writer and go on fetching: SQLite has one
    # writer (its writes queue on one lock anyway), PostgreSQL two at most (POSTGRES_WRITERS).
    # An integration holds one of `concurrency` places from its first page until its
    # records are sent to the database, so memory is bounded by that many integrations'
    # metadata, whatever the total; the next one is fetched while the database finishes
    # the write.
    concurrency = settings.sync.concurrency
    writers = min(concurrency, POSTGRES_WRITERS) if store.is_postgres(engine) else 1
    try:
        with (
            rare_collections(),
            closing(store.ChunkReader(engine)) as chunks,
            ThreadPoolExecutor(concurrency, thread_name_prefix="fetch") as pool,
            ThreadPoolExecutor(writers, thread_name_prefix="write") as writer,
        ):
            ctx = _Run(
                engine,
                run.id,
                settings,
                accept_removals,
                compare_all,
                stop,
                tick,
                writer,
                threading.Semaphore(concurrency),
                chunks,
            )
            futures = [
                pool.submit(sync_integration, ctx, clients[account.subdomain], integration)
                for account, integration in targets
            ]
            try:
                results = [_written(f.result()) for f in futures]
            except BaseException:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                # Queued writes still run: they see the stop, write nothing, and release
                # the claim and the slot they hold.
                writer.shutdown(wait=True)
                raise
    except BaseException as exc:
        _finish(engine, run, "failed", _interruption(exc))
        raise
    finally:
        for client in clients.values():
            client.close()
    if any(r.status == "interrupted" for r in results):
        _finish(engine, run, "failed", "interrupted before every snapshot was written")
    else:
        _finish(engine, run, run_status(results))
    for type_name, places in sorted(ctx.drift.items()):
        log.warning(
            "connection type %r is not known to this version; kept with the common fields "
            "only (seen in %s)",
            type_name,
            ", ".join(sorted(places)),
        )
    requests = {name: (c.requests, c.rate_limited) for name, c in clients.items()}
    return RunResult(run.id, run_status(results), results, ctx.drift, requests=requests)


@dataclass
class _Collections:
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: int = 0  # runs in progress
    thresholds: tuple[int, int, int] = (700, 10, 10)  # to restore after the last one


_collections = _Collections()


@contextmanager
def rare_collections() -> Iterator[None]:
    """While a run is in progress, run the cyclic garbage collector rarely.

    A sync builds hundreds of thousands of small objects that live until their snapshot
    is written (records, stored rows); with the default thresholds the collector walks
    that growing heap again and again, which costs a fifth of a resync. The records hold
    no cycles: reference counting frees them as before, and only cyclic garbage waits
    for the next (rarer) collection. The thresholds are restored when the last run in
    the process ends.
    """
    state = _collections
    with state.lock:
        if state.runs == 0:
            state.thresholds = gc.get_threshold()
            gc.set_threshold(RUN_GC_THRESHOLD, 50, 100)
        state.runs += 1
    try:
        yield
    finally:
        with state.lock:
            state.runs -= 1
            if state.runs == 0:
                gc.set_threshold(*state.thresholds)


def run_status(results: Iterable[SnapshotResult]) -> str:
    statuses = [r.status for r in results if r.status != "skipped"]
    if all(s == "complete" for s in statuses):
        return "complete"  # also when every integration was already done for this tick
    if any(s == "complete" for s in statuses):
        return "partial"
    return "failed"


def _interruption(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (signal)"
    if isinstance(exc, InventoryError):
        return str(exc)
    return f"stopped by {type(exc).__name__}"


def _finish(engine: Engine, run: store.Run, status: str, error: str | None = None) -> None:
    try:
        store.finish_run(engine, run, status, error)
    except SQLAlchemyError as exc:
        log.error(
            "could not mark run %s %s: %s; the next run will mark it abandoned",
            run.id,
            status,
            store.describe_db_error(engine, exc),
        )


def fetch(
    client: ZisClient, integration: Integration, into: Fetched, stop: threading.Event
) -> None:
    """Every page of one integration, parsed; the first malformed thing raises. When
    ``into.digest`` knows chunks, only the items of the other chunks become records."""
    where = f"{integration.account}/{integration.name}"
    shared = SharedValues()
    for page in client.pages(integration):
        if stop.is_set():
            raise Interrupted(f"{where}: interrupted")
        parsed = parse_page(
            page.body, where=where, page=page.number, shared=shared, digest=into.digest
        )
        into.pages = page.number
        into.unknown_types |= parsed.unknown_types
        if into.known_of is None:
            connection = into.add(parsed.connections)
            if connection is not None:
                _twice(where, page.number, connection.type, connection.name)
        elif (item := into.add_settled(parsed.settled)) is not None:
            _twice(where, item.page, item.type, item.name)
    if into.known_of is not None and (item := into.add_settled(into.digest.finish(where, shared))):
        _twice(where, item.page, item.type, item.name)


def _twice(where: str, page: int, type_name: str, name: str) -> NoReturn:
    raise ResponseError(
        f"{where}: page {page}: {type_name} connection {name!r} appears twice "
        "(the account changed while paging?)"
    )


def _written(outcome: SnapshotResult | Future[SnapshotResult]) -> SnapshotResult:
    return outcome.result() if isinstance(outcome, Future) else outcome


def sync_integration(
    ctx: _Run, client: ZisClient, integration: Integration
) -> SnapshotResult | Future[SnapshotResult]:
    """One snapshot, unless the tick says another replica has it or already did it: fetched
    here, then written by ctx.writer (the returned future) while this worker goes on."""
    account, name = integration.account, integration.name
    tick = ctx.tick
    held = ExitStack()  # the claim lasts until the write is done, the place at most so
    ctx.sets.acquire()
    place = _Place(ctx.sets)
    held.callback(place.release)
    try:
        if tick and tick.claim and not held.enter_context(store.claim(ctx.engine, account, name)):
            held.close()
            return _skipped(account, name, "another replica is syncing it")
        if tick is not None:
            done = store.fresh_snapshot(ctx.engine, account, name, tick.since)
            if done is not None:
                held.close()
                return _skipped(account, name, f"snapshot {done} already covers this tick")
        snapshot = _Snapshot(ctx, client, integration, place)
        if not snapshot.fetch():
            held.close()
            return snapshot.done()

        def write() -> SnapshotResult:
            try:
                return snapshot.write()
            finally:
                held.close()

        return ctx.writer.submit(write)
    except BaseException:
        held.close()
        raise


class _Place:
    """One of the run's places for an integration in memory, given back once: when its
    records have been sent to the database, or when its snapshot ends."""

    def __init__(self, places: threading.Semaphore) -> None:
        self._places: threading.Semaphore | None = places
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            places, self._places = self._places, None
        if places is not None:
            places.release()


def _skipped(account: str, integration: str, why: str) -> SnapshotResult:
    log.info("%s/%s: skipped: %s", account, integration, why)
    return SnapshotResult(account, integration, "skipped")


class _Snapshot:
    """One integration's snapshot: fetched by a fetch worker, written by a writer."""

    def __init__(
        self, ctx: _Run, client: ZisClient, integration: Integration, place: _Place
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.integration = integration
        self.place = place
        self.where = f"{integration.account}/{integration.name}"
        self.started = store.now()
        self.clock = time.perf_counter()
        self.fetched = Fetched()
        self.result = SnapshotResult(integration.account, integration.name, "failed")

    def fetch(self) -> bool:
        """Every page; False when the snapshot already ended (failed or interrupted)."""
        return self._step(lambda: self._fetch(skip_known=not self.ctx.compare_all))

    def _fetch(self, *, skip_known: bool) -> None:
        """Every page. With ``skip_known``, the chunks of items the last applied snapshot
        kept are checked against their digests rather than parsed into records."""
        if self.ctx.stop.is_set():
            raise Interrupted(f"{self.where}: interrupted")
        known = None
        if skip_known:
            try:
                known = self.ctx.chunks.read(self.integration.account, self.integration.name)
            except SQLAlchemyError as exc:  # the write will say what is wrong with it
                log.debug(
                    "%s: every item parsed: %s",
                    self.where,
                    store.describe_db_error(self.ctx.engine, exc),
                )
        self.fetched = (
            Fetched()
            if known is None
            else Fetched(digest=FetchedDigest(known[1]), known_of=known[0])
        )
        fetch(self.client, self.integration, self.fetched, self.ctx.stop)
        for type_name in self.fetched.unknown_types:
            self.ctx.drift.setdefault(type_name, []).append(self.where)

    def write(self) -> SnapshotResult:
        self._step(self._write)
        return self.done()

    def _write(self) -> None:
        try:
            self.result = self._applied()
        except _EveryRecordNeeded as exc:
            # Rare: the rows are not what the snapshot whose chunks were skipped left.
            log.info("%s: %s; fetching every record again", self.where, exc)
            self.started = store.now()
            self._fetch(skip_known=False)
            self.result = self._applied()

    def _applied(self) -> SnapshotResult:
        return _apply(self.ctx, self.integration, self.started, self.fetched, self.place.release)

    def _step(self, action: Callable[[], None]) -> bool:
        try:
            action()
            return True
        except Interrupted:
            self.result.status = "interrupted"
            self.result.error = "interrupted before the snapshot was written"
        except SnapshotError as exc:
            self.result.error = str(exc)
            self.result.snapshot_id = _record_failure(
                self.ctx, self.integration, self.started, self.fetched, str(exc)
            )
        return False

    def done(self) -> SnapshotResult:
        result = self.result
        result.pages = self.fetched.pages
        result.seconds = time.perf_counter() - self.clock
        log.log(
            logging.INFO if result.status == "complete" else logging.WARNING,
            "%s",
            result.log_line(),
            extra={
                "account": result.account,
                "integration": result.integration,
                "status": result.status,
                "added": result.added,
                "removed": result.removed,
                "modified": result.modified,
                "restored": result.restored,
                "connection_count": result.connection_count,
                "pages": result.pages,
                "seconds": round(result.seconds, 3),
            },
        )
        return result


def _apply(
    ctx: _Run,
    integration: Integration,
    started: datetime,
    fetched: Fetched,
    sent: Callable[[], None],
) -> SnapshotResult:
    """Diff and write under the integration's lock, in one transaction; ``sent`` once
    the rows of the records are sent (store.IntegrationTransaction.write)."""
    account, name = integration.account, integration.name
    result = SnapshotResult(account, name, "complete", connection_count=fetched.count)
    digest = fetched.digest.hexdigest()
    row = store.SnapshotRow(
        run_id=ctx.run_id,
        account=account,
        integration=name,
        started_at=started,
        status="complete",
        connection_count=fetched.count,
        pages=fetched.pages,
        accepted_removals=ctx.accept_removals,
        fetched_digest=digest,
    )
    try:
        with store.integration_transaction(ctx.engine, account, name, ctx.settings) as tx:
            if ctx.stop.is_set():
                raise Interrupted(f"{account}/{name}: interrupted")
            newer = tx.newer_snapshot(started)
            if newer is not None:
                result.superseded_by = newer
                result.snapshot_id = tx.write(
                    replace(row, superseded_by=newer), diff({}, []), started
                )
                return result
            changes = _compare(ctx, tx, fetched, digest)
            kept = fetched.digest.kept()
            fetched.release()  # the diff holds what is still needed
            reason = None
            if not ctx.accept_removals:
                reason = removal_hold_reason(
                    changes,
                    max_ratio=ctx.settings.sync.max_removal_ratio,
                    min_count=ctx.settings.sync.max_removal_min,
                )
            if reason is not None:
                result.status, result.error = "held", f"{account}/{name}: {reason}"
                row = replace(row, status="held", error=result.error)
            else:
                counts = changes.counts()
                result.added, result.removed = counts["added"], counts["removed"]
                result.modified, result.restored = counts["modified"], counts["restored"]
                row = replace(
                    row, counts=(result.added, result.removed, result.modified, result.restored)
                )
            result.snapshot_id = tx.write(row, changes, started, kept, sent)
            return result
    except SQLAlchemyError as exc:
        message = f"{account}/{name}: database error while writing the snapshot: " + (
            store.describe_db_error(ctx.engine, exc)
        )
        raise _WriteFailed(message) from None


def _compare(
    ctx: _Run,
    tx: store.IntegrationTransaction,
    fetched: Fetched,
    digest: str,
) -> Diff:
    """The diff of a fetched set with the integration's rows, reading as few rows as what
    the last applied snapshot fetched allows: none when its pages were the same, those of
    the chunks that changed when its chunk digests were kept, all of them otherwise (or
    with --compare-all). Applying a snapshot leaves the present rows equal to what it
    fetched, so a chunk it fetched holds items equal to their rows."""
    if not ctx.compare_all:
        if tx.matches_last_applied(digest, fetched.count):
            log.debug(
                "%s/%s: the pages of the last applied snapshot: no row compared",
                tx.account,
                tx.integration,
            )
            return Diff(present_before=fetched.count)
        changes = _compare_changed_chunks(tx, fetched)
        if changes is not None:
            return changes
    if fetched.known_of is not None:
        raise _EveryRecordNeeded("the rows are not what the last applied snapshot left")
    return diff(tx.load_state(), fetched.connections())


def _compare_changed_chunks(tx: store.IntegrationTransaction, fetched: Fetched) -> Diff | None:
    """The diff over the rows of the chunks not among those the last applied snapshot
    kept, and of the removals; None when every row must be compared: no chunks were kept,
    or the rows are not what that snapshot left. When parsing skipped the chunks of the
    snapshot that was the last applied one when the fetch began, that snapshot must still
    be."""
    if fetched.known_of is not None:
        last = tx.last_applied
        if last is None or last[0] != fetched.known_of:
            raise _EveryRecordNeeded("another snapshot was applied while this one was fetched")
        changed, unchanged = fetched.settled_split()
    else:
        before = tx.last_applied_chunks()
        if before is None:
            return None
        changed, unchanged = fetched.split(before)
    narrowed = narrow(changed, unchanged, tx.load_names(), fetched.by_type)
    if narrowed is None:  # the rows are not what the last applied snapshot left
        return None
    needed, present = narrowed
    state = tx.load_state(needed)
    if len(state) != len(needed):  # a key the names gave and the row read did not find
        return None
    log.debug(
        "%s/%s: %d connections in chunks not as last applied: %d rows compared",
        tx.account,
        tx.integration,
        len(changed),
        len(state),
    )
    changes = diff(state, changed)
    changes.present_before = present
    return changes


class _WriteFailed(SnapshotError):
    pass


class _EveryRecordNeeded(Exception):
    """The diff needs the records of the chunks parsing skipped: fetch them again."""


def _record_failure(
    ctx: _Run, integration: Integration, started: datetime, fetched: Fetched, error: str
) -> int:
    row = store.SnapshotRow(
        run_id=ctx.run_id,
        account=integration.account,
        integration=integration.name,
        started_at=started,
        status="failed",
        pages=fetched.pages,
        error=error,
    )
    try:
        return store.record_snapshot(ctx.engine, row, ctx.settings)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"{integration.account}/{integration.name}: cannot record the failed snapshot: "
            f"{store.describe_db_error(ctx.engine, exc)}"
        ) from None
