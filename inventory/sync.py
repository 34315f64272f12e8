"""run_sync(): for each configured integration, fetch -> parse -> diff -> apply.

One integration is one snapshot: its pages fetched (zis) and parsed (records), its
connections then its OAuth clients, each fetched set compared with the stored rows (diff)
and written in one transaction (store.snapshot). A failure fails that snapshot only;
``run_all`` at the end runs the snapshots on ``sync.concurrency`` places.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

import httpx

from . import discovery, store
from .config import Account, Integration, Settings, read_token_files, select_targets
from .diff import Diff, diff, removal_hold_reason
from .errors import (
    DatabaseError,
    Interrupted,
    InventoryError,
    NoClientsApi,
    ResponseError,
    SnapshotError,
)
from .fields import CLIENT_METADATA_FIELDS
from .phases import phase
from .progress import NO_PROGRESS, Progress
from .records import Connection, OAuthClient, fetched_digest, parse_clients_page, parse_page
from .results import RunResult, SnapshotResult, run_status
from .store.findings import FindingEvents
from .store.outbox import enqueue_run, of_integrations
from .types import ChangeKind, ResultStatus, RunStatus, SnapshotStatus, Trigger
from .zis import ZisClient

__all__ = ["RunResult", "SnapshotResult", "Tick", "run_sync", "select_targets"]

log = logging.getLogger(__name__)

TransportFactory = Callable[[Account], httpx.BaseTransport | None]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Tick:
    """A scheduled run: an integration that already has a complete snapshot started at or
    after ``since``, or that another replica is syncing (``claim``), is skipped."""

    since: datetime
    claim: bool = True


@dataclass(frozen=True)
class Fetched:
    """Every connection one integration's pages gave, in page order."""

    connections: tuple[Connection, ...]
    pages: int
    unknown_types: frozenset[str]
    digest: str  # records.fetched_digest of the connections
    clients: tuple[OAuthClient, ...] | None = None  # None: the account has no clients API


@dataclass
class _Run:
    """What every snapshot of one run shares."""

    engine: store.Engine
    run_id: int
    settings: Settings
    accept_removals: bool
    compare_all: bool
    stop: threading.Event
    tick: Tick | None
    clock: Clock
    progress: Progress = NO_PROGRESS
    consumers: Sequence[store.Consumer] = store.CONSUMERS
    drift: dict[str, list[str]] = field(default_factory=dict)
    no_clients_api: dict[str, str] = field(default_factory=dict)  # account: the 404 said
    found: list[FindingEvents] = field(default_factory=list)  # by the committed snapshots
    lock: threading.Lock = field(default_factory=threading.Lock)

    def committed(self, found: FindingEvents) -> None:
        # The run's end tells only the findings about no connection: keeping those alone
        # holds memory to the integrations in flight, not to every one the run wrote.
        kept = FindingEvents(of_integrations(found.opened), of_integrations(found.resolved))
        with self.lock:
            self.found.append(kept)

    def tell_findings(self, conn: store.Connection) -> None:
        """At the run's end, in the transaction that finishes it: one message per sink of
        the findings about no connection that its snapshots opened or resolved."""
        enqueue_run(conn, self.settings, self.run_id, self.found, store.now())


def run_sync(
    settings: Settings,
    engine: store.Engine,
    *,
    trigger: Trigger | str = Trigger.CLI,
    accept_removals: bool = False,
    compare_all: bool = False,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    transport: TransportFactory | None = None,
    stop: threading.Event | None = None,
    tick: Tick | None = None,
    on_run: Callable[[store.Run], None] | None = None,
    clock: Clock | None = None,
    on_settings: Callable[[Settings], None] | None = None,
    progress: Progress = NO_PROGRESS,
    consumers: Sequence[store.Consumer] = store.CONSUMERS,
) -> RunResult:
    """One run: a snapshot of every selected integration. ``clock`` gives each snapshot's
    start (store.now unless given), which the full compare interval is measured with;
    ``consumers`` are what each snapshot's transaction hands its rows to (chain, findings,
    outbox; none for the benchmark of the sync core alone)."""
    settings = read_token_files(settings)  # a rotated token file is used at once
    if on_settings is not None:
        on_settings(settings)  # so the log redactor knows a rotated token
    targets = select_targets(settings, accounts, integrations)
    progress.run_started([(a.subdomain, i.name) for a, i in targets])
    stop = stop or threading.Event()
    run = store.start_run(engine, trigger)
    if on_run is not None:
        on_run(run)
    clients = {
        a.subdomain: ZisClient(
            a.base_url,
            a.subdomain,
            settings.sync,
            transport=transport(a) if transport else None,
            sleep=stop.wait,
            stop=stop,
            progress=progress,
        )
        for a in {a.subdomain: a for a, _ in targets}.values()
    }
    ctx = _Run(
        engine,
        run.id,
        settings,
        accept_removals,
        compare_all,
        stop,
        tick,
        clock or store.now,
        progress,
        consumers,
    )
    try:
        listings = discovery.list_registries(settings, engine, run.id, clients, stop)
        results = run_all(
            [
                _task(ctx, clients[account.subdomain], integration)
                for account, integration in targets
            ],
            places=settings.sync.concurrency,
            stop=stop,
        )
    except BaseException as exc:
        # The committed snapshots' findings about no connection are told all the same.
        _finish(engine, run, RunStatus.FAILED, _interruption(exc), ctx.tell_findings)
        raise
    finally:
        for client in clients.values():
            client.close()
    if any(r.status == ResultStatus.INTERRUPTED for r in results):
        _finish(
            engine,
            run,
            RunStatus.FAILED,
            "interrupted before every snapshot was written",
            ctx.tell_findings,
        )
    else:
        _finish(engine, run, run_status(results), None, ctx.tell_findings)
    for message in sorted(ctx.no_clients_api.values()):
        log.warning("%s; its OAuth clients are not inventoried this run", message)
    for type_name, places in sorted(ctx.drift.items()):
        log.warning(
            "connection type %r is not known to this version; kept with the common fields "
            "only (seen in %s)",
            type_name,
            ", ".join(sorted(places)),
        )
    requests = {name: (c.requests, c.rate_limited) for name, c in clients.items()}
    return RunResult(
        run.id, run_status(results), results, ctx.drift, requests=requests, registry=listings
    )


def sync_integration(ctx: _Run, client: ZisClient, integration: Integration) -> SnapshotResult:
    """One integration's snapshot: fetch -> parse -> diff -> apply, unless the tick says
    another replica has it or already did it."""
    with _claimed(ctx, integration) as skip:
        if skip is not None:
            log.info("%s/%s: skipped: %s", integration.account, integration.name, skip)
            skipped = SnapshotResult(integration.account, integration.name, ResultStatus.SKIPPED)
            ctx.progress.integration_finished(skipped)
            return skipped
        ctx.progress.integration_started(integration.account, integration.name)
        clock = time.perf_counter()
        started = ctx.clock()
        progress = _Progress()
        try:
            with phase("fetch+parse"):
                fetched = fetch(client, integration, ctx.stop, progress)
                fetched = fetch_clients(ctx, client, integration, fetched)
            result = apply(ctx, integration, started, fetched)  # diff and apply
        except Interrupted:
            result = SnapshotResult(
                integration.account,
                integration.name,
                ResultStatus.INTERRUPTED,
                error="interrupted before the snapshot was written",
            )
        except SnapshotError as exc:
            result = _record_failure(ctx, integration, started, progress.pages, str(exc))
    result.pages = progress.pages
    result.seconds = time.perf_counter() - clock
    _log(result)
    ctx.progress.integration_finished(result)
    return result


@dataclass
class _Progress:
    pages: int = 0  # fetched so far


def fetch(
    client: ZisClient, integration: Integration, stop: threading.Event, progress: _Progress
) -> Fetched:
    """Every page of one integration, parsed; the first malformed thing raises."""
    where = f"{integration.account}/{integration.name}"
    connections: list[Connection] = []
    unknown: set[str] = set()
    seen: set[tuple[str, str]] = set()
    for page in client.pages(integration.name, integration.token):
        if stop.is_set():
            raise Interrupted(f"{where}: interrupted")
        parsed = parse_page(page.body, where=where, page=page.number)
        before = len(seen)
        seen.update(map(_key, parsed.connections))
        if len(seen) != before + len(parsed.connections):  # a key seen before: which?
            twice = _first_repeat(connections + parsed.connections)
            raise ResponseError(
                f"{where}: page {page.number}: {twice.type} connection "
                f"{twice.name!r} appears twice (the account changed while paging?)"
            )
        connections += parsed.connections
        unknown |= parsed.unknown_types
        progress.pages = page.number
        client.progress.page_fetched(
            integration.account, integration.name, page.number, len(connections)
        )
    digest = fetched_digest(connections)
    return Fetched(tuple(connections), progress.pages, frozenset(unknown), digest)


_key = operator.itemgetter(0, 1)  # a Connection's (type, name), as Connection.key


def _first_repeat(connections: Sequence[Connection]) -> Connection:
    """The first connection whose key an earlier one has."""
    seen: set[tuple[str, str]] = set()
    for connection in connections:
        if connection.key in seen:
            return connection
        seen.add(connection.key)
    raise ValueError("no key repeats")


def fetch_clients(
    ctx: _Run, client: ZisClient, integration: Integration, fetched: Fetched
) -> Fetched:
    """The integration's OAuth clients, after its connections, with the same token; a
    404 of the endpoint (told once per account and run) leaves them out, and the
    connections' snapshot complete; any other failure fails the snapshot."""
    where = f"{integration.account}/{integration.name}"
    if integration.account in ctx.no_clients_api:
        return fetched
    clients: list[OAuthClient] = []
    seen: set[str] = set()
    try:
        for page in client.client_pages(integration.name, integration.token):
            if ctx.stop.is_set():
                raise Interrupted(f"{where}: interrupted")
            parsed = parse_clients_page(
                page.body, integration=integration.name, where=where, page=page.number
            )
            for one in parsed:
                if one.uuid in seen:
                    raise ResponseError(
                        f"{where}: OAuth clients page {page.number}: client {one.uuid!r} "
                        "appears twice"
                    )
                seen.add(one.uuid)
            clients += parsed
    except NoClientsApi as exc:
        with ctx.lock:
            ctx.no_clients_api.setdefault(integration.account, str(exc))
        return fetched
    return replace(fetched, clients=tuple(clients))


def apply(
    ctx: _Run, integration: Integration, started: datetime, fetched: Fetched
) -> SnapshotResult:
    """Diff the fetched set with the stored rows and write the snapshot, under the
    integration's lock in one transaction (store.snapshot)."""
    account, name = integration.account, integration.name
    count = len(fetched.connections)
    with ctx.lock:
        for type_name in fetched.unknown_types:
            ctx.drift.setdefault(type_name, []).append(f"{account}/{name}")
    result = SnapshotResult(account, name, ResultStatus.COMPLETE, connection_count=count)
    row = store.SnapshotRow(
        run_id=ctx.run_id,
        account=account,
        integration=name,
        started_at=started,
        status=SnapshotStatus.COMPLETE,
        connection_count=count,
        pages=fetched.pages,
        accepted_removals=ctx.accept_removals,
        fetched_digest=fetched.digest,
    )
    sync = ctx.settings.sync
    with store.integration_transaction(
        ctx.engine, account, name, ctx.settings, ctx.committed, ctx.consumers
    ) as tx:
        if ctx.stop.is_set():
            raise Interrupted(f"{account}/{name}: interrupted")
        newer = tx.newer_snapshot(started)
        if newer is not None:  # a later view of the account is applied: record ours only
            result.superseded_by = newer
            result.snapshot_id = tx.write(replace(row, superseded_by=newer))
            return result
        # Every stored row is compared when a full compare is due (sync.full_compare_interval,
        # --compare-all); else none when the pages are the last applied snapshot's, and
        # only those whose row digests differ from the fetched ones when they can tell
        # (store.digests).
        with phase("diff"):
            full = ctx.compare_all or tx.full_compare_due(started, sync.full_compare_interval)
            interval = sync.full_compare_interval
            if not full and tx.unchanged(fetched.digest, count, started, interval):
                changes: Diff | None = Diff(present_before=count)
            else:
                changes = None if full else tx.changed_rows(fetched.connections)
            if changes is None:  # the plain path
                full, changes = True, diff(tx.load_state(), fetched.connections)
            clients = None  # the OAuth clients are few: always compared, when fetched
            if fetched.clients is not None:
                stored = tx.load_state(kind=store.CLIENTS)
                clients = diff(stored, fetched.clients, CLIENT_METADATA_FIELDS)
        reason = None
        if not ctx.accept_removals:
            reason = removal_hold_reason(
                changes, max_ratio=sync.max_removal_ratio, min_count=sync.max_removal_min
            ) or removal_hold_reason(
                clients or Diff(),
                max_ratio=sync.max_removal_ratio,
                min_count=sync.max_removal_min,
                what="OAuth clients",
            )
        if reason is not None:
            result.status, result.error = ResultStatus.HELD, f"{account}/{name}: {reason}"
            row = replace(row, status=SnapshotStatus.HELD, error=result.error, full_compare=full)
        else:
            counts = changes.counts()
            result.added, result.removed = counts[ChangeKind.ADDED], counts[ChangeKind.REMOVED]
            result.modified = counts[ChangeKind.MODIFIED]
            result.restored = counts[ChangeKind.RESTORED]
            row = replace(
                row,
                counts=(result.added, result.removed, result.modified, result.restored),
                full_compare=full,
            )
        result.snapshot_id = tx.write(row, changes, fetched.connections, clients)
    return result


def _record_failure(
    ctx: _Run, integration: Integration, started: datetime, pages: int, error: str
) -> SnapshotResult:
    """A failed snapshot row and nothing else, under the integration's lock like any other."""
    account, name = integration.account, integration.name
    row = store.SnapshotRow(
        run_id=ctx.run_id,
        account=account,
        integration=name,
        started_at=started,
        status=SnapshotStatus.FAILED,
        pages=pages,
        error=error,
    )
    try:
        with store.integration_transaction(
            ctx.engine, account, name, ctx.settings, ctx.committed, ctx.consumers
        ) as tx:
            snapshot_id = tx.write(row)
    except SnapshotError as exc:  # the database refused even that: stop the run
        raise DatabaseError(f"{account}/{name}: cannot record the failed snapshot: {exc}") from None
    return SnapshotResult(account, name, ResultStatus.FAILED, error=error, snapshot_id=snapshot_id)


def run_all(
    tasks: Sequence[Callable[[], SnapshotResult]], *, places: int, stop: threading.Event
) -> list[SnapshotResult]:
    """Run each task on one of ``places`` threads and give their results in order. A task
    holds one integration's records from its first page to its commit, so memory stays
    bounded by ``places`` integrations. Anything raised stops the others."""
    with ThreadPoolExecutor(places, thread_name_prefix="sync") as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            return [f.result() for f in futures]
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _task(ctx: _Run, client: ZisClient, integration: Integration) -> Callable[[], SnapshotResult]:
    return lambda: sync_integration(ctx, client, integration)


@contextmanager
def _claimed(ctx: _Run, integration: Integration) -> Iterator[str | None]:
    """Yields why the tick skips this integration, or None; a claim taken is held until
    the snapshot is written."""
    account, name = integration.account, integration.name
    if ctx.tick is None:
        yield None
        return
    with store.claim(ctx.engine, account, name) if ctx.tick.claim else _taken() as taken:
        if not taken:
            yield "another replica is syncing it"
            return
        done = store.fresh_snapshot(ctx.engine, account, name, ctx.tick.since)
        yield None if done is None else f"snapshot {done} already covers this tick"


@contextmanager
def _taken() -> Iterator[bool]:
    yield True


def _interruption(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (signal)"
    if isinstance(exc, InventoryError):
        return str(exc)
    return f"stopped by {type(exc).__name__}"


def _finish(
    engine: store.Engine,
    run: store.Run,
    status: RunStatus,
    error: str | None = None,
    also: Callable[[store.Connection], None] | None = None,
) -> None:
    try:
        store.finish_run(engine, run, status, error, also)
    except DatabaseError as exc:
        log.error("%s; the next run will mark it abandoned", exc)


def _log(result: SnapshotResult) -> None:
    log.log(
        logging.INFO if result.status == ResultStatus.COMPLETE else logging.WARNING,
        "%s",
        result.log_line(),
        extra={
            "account": result.account,
            "integration": result.integration,
            "status": str(result.status),
            "added": result.added,
            "removed": result.removed,
            "modified": result.modified,
            "restored": result.restored,
            "connection_count": result.connection_count,
            "pages": result.pages,
            "seconds": round(result.seconds, 3),
        },
    )
