"""The findings table's lifecycle (§12), in the snapshot's transaction: read what the
rules judge (``read_inventory``), open, move on and resolve findings (``update_findings``)
under the integration's and the account's locks. The rules themselves are ``rules``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Connection,
    String,
    Table,
    column,
    func,
    inspect,
    or_,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.sql import ColumnElement

from .. import models as m
from ..batches import batched
from ..config import Settings, SyncSettings
from ..fields import CLIENT_RECORD_FIELDS
from ..records import METADATA_FIELDS, OAuthClient
from ..records import Connection as Record
from ..rules import (
    CLIENT_URLS,
    ActiveRule,
    Finding,
    FindingsSettings,
    Freshness,
    HostChange,
    Inventory,
    Located,
    Suppression,
    evaluate,
    lapse_note,
    rules_in_force,
    suppression_for,
    url_host,
)
from . import findings_reuse
from .bulk import insert_rows
from .engine import lock_key
from .freshness import last_complete

log = logging.getLogger(__name__)

FINDINGS = cast(Table, m.Finding.__table__)
# What reading or judging a value edited by hand into the tables raises.
UNREADABLE = (ValueError, TypeError, UnicodeDecodeError, AttributeError)


RECORD_COLUMNS = ("account", "integration", "type", "name", *METADATA_FIELDS)
_key = itemgetter(0, 3, 4, 5, 6)  # Finding.key at C speed: rule, account, integration, type, name
_row_id = attrgetter("id")
OPENED = "finding"  # the event kind a sink takes to be told of findings


# --- reading the tables ----------------------------------------------------------------


def read_inventory(
    conn: Connection,
    settings: Settings | None,
    *,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    as_of: datetime | None = None,
) -> Inventory:
    """What the rules read: present connections (or those as of ``as_of``, from
    connection_versions), the configured integrations' last complete snapshots, and the
    registry's integrations when the database has the ``integrations`` table."""
    configured = _configured(settings)
    targets = [
        (a, i)
        for a, i in sorted(configured)
        if (not accounts or a in accounts) and (not integrations or i in integrations)
    ]
    return Inventory(
        _records(conn, accounts, integrations, as_of),
        _freshness(conn, targets, as_of),
        configured,
        _registry(conn, accounts, integrations, as_of),
        *_clients(conn, accounts, integrations, as_of),
    )


def _inventory_of(
    conn: Connection,
    settings: Settings | None,
    account: str,
    integration: str,
    keys: frozenset[tuple[str, str]] | None,
    present: Sequence[Record] | None = None,
) -> Inventory:
    """What one snapshot's update evaluates: the integration's present connections (those
    of ``keys`` only, unless None) and freshness (it is configured: it is being synced),
    and its account's registry. The present connections are ``present`` when the
    snapshot's transaction holds them (what it applied), else read."""
    if present is not None:
        held = present if keys is None else [r for r in present if r.key in keys]
        records = [(account, integration, r) for r in sorted(held)]
    elif keys is None:
        records = _records(conn, [account], [integration], None)
    else:
        records = _records_of(conn, account, integration, keys)
    return Inventory(
        records,
        _freshness(conn, [(account, integration)], None),
        _configured(settings) | {(account, integration)},
        _registry(conn, [account], (), None),
        *_clients(conn, [account], [integration], None),
    )


def _configured(settings: Settings | None) -> frozenset[tuple[str, str]]:
    accounts = settings.accounts if settings is not None else ()
    return frozenset((a.subdomain, i.name) for a in accounts for i in a.integrations)


def _records(
    conn: Connection, accounts: Sequence[str], integrations: Sequence[str], as_of: datetime | None
) -> list[Located]:
    if as_of is None:
        t = cast(Table, m.Connection.__table__)
        conditions: list[ColumnElement[bool]] = [t.c.removed_at.is_(None)]
    else:
        t = cast(Table, m.ConnectionVersion.__table__)
        conditions = [t.c.valid_from <= as_of, or_(t.c.valid_to.is_(None), t.c.valid_to > as_of)]
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.integration.in_(integrations))
    query = (
        select(*(t.c[k] for k in RECORD_COLUMNS))
        .where(*conditions)
        .order_by(t.c.account, t.c.integration, t.c.type, t.c.name)
    )
    # A thousand rows at a time (PostgreSQL: a server-side cursor, not the whole result).
    rows = conn.execute(query.execution_options(yield_per=1000))
    return [(row[0], row[1], Record._make(row[2:])) for row in rows]


def _records_of(
    conn: Connection, account: str, integration: str, keys: frozenset[tuple[str, str]]
) -> list[Located]:
    """The present connections of one integration with these (type, name) keys."""
    t = cast(Table, m.Connection.__table__)
    found: list[Located] = []
    for chunk in batched(sorted(keys), 500):
        query = select(*(t.c[k] for k in RECORD_COLUMNS)).where(
            t.c.account == account,
            t.c.integration == integration,
            t.c.removed_at.is_(None),
            tuple_(t.c.type, t.c.name).in_(chunk),
        )
        found += ((row[0], row[1], Record._make(row[2:])) for row in conn.execute(query))
    return sorted(found)


ClientFacts = tuple[
    list[tuple[str, str, OAuthClient]], list[HostChange], dict[tuple[str, str], frozenset[str]]
]


def _clients(
    conn: Connection, accounts: Sequence[str], integrations: Sequence[str], as_of: datetime | None
) -> ClientFacts:
    """What the OAuth client rules read (§17): the present clients (or those as of
    ``as_of``), the host changes of their URLs up to then (from oauth_client_versions),
    and per integration whose present oauth connections name a client, the uuids named."""
    v = cast(Table, m.OAuthClientVersion.__table__)
    if as_of is None:
        t = cast(Table, m.OAuthClient.__table__)
        k = cast(Table, m.Connection.__table__)
        present: list[ColumnElement[bool]] = [t.c.removed_at.is_(None)]
        named: list[ColumnElement[bool]] = [k.c.removed_at.is_(None)]
        until: list[ColumnElement[bool]] = []
    else:
        t, k = v, cast(Table, m.ConnectionVersion.__table__)
        present = [t.c.valid_from <= as_of, or_(t.c.valid_to.is_(None), t.c.valid_to > as_of)]
        named = [k.c.valid_from <= as_of, or_(k.c.valid_to.is_(None), k.c.valid_to > as_of)]
        until = [v.c.valid_to <= as_of]
    scope = _scope(t, accounts, integrations)
    rows = conn.execute(
        select(t.c.account, t.c.integration, *(t.c[f] for f in CLIENT_RECORD_FIELDS))
        .where(*present, *scope)
        .order_by(t.c.account, t.c.integration, t.c.uuid)
    )
    clients = [(row[0], row[1], OAuthClient._make(row[2:])) for row in rows]
    later = v.alias("later")
    pairs = conn.execute(
        select(v.c.account, v.c.integration, v.c.uuid, later.c.valid_from,
               *(v.c[f] for f in CLIENT_URLS), *(later.c[f] for f in CLIENT_URLS))
        .join(later, (later.c.account == v.c.account) & (later.c.integration == v.c.integration)
              & (later.c.uuid == v.c.uuid) & (later.c.valid_from == v.c.valid_to))
        .where(*until, *_scope(v, accounts, integrations))
    )  # fmt: skip
    changes = []
    for account, integration, uuid, at, *urls in pairs:
        for i, f in enumerate(CLIENT_URLS):
            old, new = url_host(urls[i]), url_host(urls[i + len(CLIENT_URLS)])
            if old != new:
                changes.append(HostChange(account, integration, uuid, f, old, new, at))
    uses: dict[tuple[str, str], set[str]] = {}
    # DISTINCT: a client is named by many connections; the database folds them.
    for account, integration, uuid in conn.execute(
        select(k.c.account, k.c.integration, k.c.oauth_client_uuid).distinct().where(
            *named, k.c.type == "oauth", k.c.oauth_client_uuid.is_not(None),
            *_scope(k, accounts, integrations),
        )
    ):  # fmt: skip
        uses.setdefault((account, integration), set()).add(uuid)
    return clients, changes, {key: frozenset(u) for key, u in uses.items()}


def _scope(
    t: Table, accounts: Sequence[str], integrations: Sequence[str]
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.integration.in_(integrations))
    return conditions


def _freshness(
    conn: Connection, targets: Sequence[tuple[str, str]], as_of: datetime | None
) -> list[Freshness]:
    """When each target's last complete snapshot (up to ``as_of``) started."""
    if not targets:
        return []
    s = cast(Table, m.Snapshot.__table__)
    conditions: list[ColumnElement[bool]] = [s.c.account.in_({a for a, _ in targets})]
    if as_of is not None:
        conditions.append(s.c.started_at <= as_of)
    last = last_complete(conn, *conditions)
    return [Freshness(a, i, last.get((a, i))) for a, i in targets]


def _registry(
    conn: Connection, accounts: Sequence[str], integrations: Sequence[str], as_of: datetime | None
) -> list[tuple[str, str]] | None:
    """(account, name) the registry listed (as of a time), from discovery's table; None
    when this database has no such table."""
    if not inspect(conn).has_table("integrations"):
        return None
    t = REGISTRY
    conditions: list[ColumnElement[bool]] = (
        [t.c.removed_at.is_(None)]
        if as_of is None
        else [t.c.first_seen_at <= as_of, or_(t.c.removed_at.is_(None), t.c.removed_at > as_of)]
    )
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.name.in_(integrations))
    query = select(t.c.account, t.c.name).where(*conditions).order_by(t.c.account, t.c.name)
    return [(a, n) for a, n in conn.execute(query)]


# Discovery's table (spec §14, another migration): only the columns read here.
REGISTRY = table(
    "integrations",
    column("account", String()),
    column("name", String()),
    column("first_seen_at", m.UTCDateTime()),
    column("removed_at", m.UTCDateTime()),
)


# --- the lifecycle, in the snapshot's transaction ----------------------------------------

NEW_COLUMNS = ("rule", "slug", "severity", "account", "integration", "type", "name", "detail",
               "suppressed_by", "suppressed_until")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToldFinding:
    """A finding as a notification tells it: the rule and key, what it says, when its
    episode began, and a note. No row id: no message carries one (a new episode's would
    be read back only to be dropped)."""

    rule: str
    slug: str
    severity: str
    account: str
    integration: str
    type: str | None
    name: str | None
    detail: str
    first_seen_at: datetime
    note: str | None = None


@dataclass(frozen=True, slots=True)
class OpenedFinding(ToldFinding):
    """A finding that became visible in this transaction: a new episode, or (``note``
    set) an open one whose suppression ended. Suppressed new episodes are not returned:
    nobody is told of what was accepted."""


@dataclass(frozen=True, slots=True)
class ResolvedFinding(ToldFinding):
    """A finding whose episode this transaction ended (``note`` says why, when it was not
    simply fixed). Suppressed ones are not returned: nobody was told they opened."""


class FindingEvents(NamedTuple):
    """What one evaluation changed that is told (notifications, §11)."""

    opened: list[OpenedFinding]
    resolved: list[ResolvedFinding]


def update_findings(
    conn: Connection,
    settings: Settings | None,
    account: str,
    integration: str,
    now: datetime,
    snapshot_id: int | None = None,
    changed: frozenset[tuple[str, str]] | None = None,
    present: Sequence[Record] | None = None,
) -> FindingEvents:
    """Evaluate the rules of one integration (and the account-level ones of its account)
    at ``now`` and bring the ``findings`` table up to date, in the caller's transaction:
    a new (rule, key) opens an episode, one still firing moves its ``last_seen_at``
    (and detail, severity, suppression), one that no longer fires is resolved. Returns
    what opened and what was resolved, for notifications (nothing when no sink takes
    findings).

    Called for a snapshot (``snapshot_id``, with the (type, name) keys whose rows it
    ``changed``), the connection rules' last result is kept for the rows no snapshot
    changed since, when everything else it depends on is unchanged (findings_reuse), and
    they judge the changed rows only; the other rules are evaluated every time.
    ``present``: the integration's present connections, when the caller holds them (a
    snapshot that applied its fetched set); read from ``connections`` otherwise."""
    _lock(conn, account, integration)
    findings_settings = settings.findings if settings is not None else FindingsSettings()
    active = rules_in_force(findings_settings)
    account_level = {a.rule.id for a in active if a.rule.scope == "account"}
    per_row = {a.rule.id for a in active if a.rule.scope == "connection"}
    digest = findings_reuse.settings_digest(
        [(a.rule.id, a.enabled, a.severity, sorted(a.params.items())) for a in active]
        + [s for s in findings_settings.suppress if s.rule in per_row]
    )
    held = None
    if snapshot_id is not None:
        mine = snapshot_id if changed is not None else None  # its changed rows are named
        held = findings_reuse.standing(conn, account, integration, digest, now, mine)
    kept = held is not None
    # The rows the connection rules judge: every present row, or (a result kept) those
    # this snapshot changed.
    judged_keys = (changed or frozenset()) if kept else None
    try:
        inventory = _inventory_of(conn, settings, account, integration, judged_keys, present)
        found = evaluate(inventory, active, now)
    except UNREADABLE as exc:
        # A value edited by hand that no rule can read: the snapshot fails on it (or
        # `db check` names it); its findings stay as they were rather than failing it.
        log.warning(
            "%s/%s: findings not updated: a stored value cannot be read (%s); "
            "python -m inventory db check names it",
            account,
            integration,
            type(exc).__name__,
        )
        return FindingEvents([], [])
    fired = {
        _key(f): f
        for f in found
        if f.account == account and (f.integration == integration or f.rule in account_level)
    }
    t = FINDINGS
    kept_rules = per_row if kept else set()
    # Two reads, each by an index: the integration's own open findings, and the account's
    # of the account-level rules, which have no type (an OR of the two would read every
    # finding of the account; ``type IS NULL`` is the partial index's own condition).
    open_rows = list(
        conn.execute(
            select(t).where(
                t.c.resolved_at.is_(None),
                t.c.account == account,
                t.c.integration == integration,
                t.c.rule.not_in(kept_rules | account_level),
            )
        )
    )
    if account_level:
        open_rows += conn.execute(
            select(t).where(
                t.c.resolved_at.is_(None),
                t.c.account == account,
                t.c.rule.in_(account_level),
                t.c.type.is_(None),
            )
        )
    open_rows.sort(key=_row_id)
    for keys in batched(sorted(judged_keys or ()), 500):  # the kept rules' on the rows judged
        open_rows += conn.execute(
            select(t).where(
                t.c.resolved_at.is_(None),
                t.c.account == account,
                t.c.integration == integration,
                t.c.rule.in_(kept_rules),
                tuple_(t.c.type, t.c.name).in_(keys),
            )
        )
    disabled = {a.rule.id for a in active if not a.enabled}
    told = _told(settings)  # what opened and resolved is built only for a sink told of it
    opened: list[OpenedFinding] = []
    resolved: list[ResolvedFinding] = []
    unchanged: list[int] = []
    for row in open_rows:
        key = (row.rule, row.account, row.integration, row.type, row.name)
        f = fired.pop(key, None)
        if f is None:
            note = "rule disabled in the configuration" if row.rule in disabled else row.note
            conn.execute(update(t).where(t.c.id == row.id).values(resolved_at=now, note=note))
            if row.suppressed_by is None and told:
                resolved.append(_resolved(row, note))
            continue
        s = suppression_for(f, findings_settings.suppress, now)
        values: dict[str, Any] = {}
        if (f.detail, f.severity, f.slug) != (row.detail, row.severity, row.slug):
            values.update(detail=f.detail, severity=f.severity, slug=f.slug)
        suppressed_by = s.text() if s else None
        suppressed_until = s.until if s else None
        if (suppressed_by, suppressed_until) != (row.suppressed_by, row.suppressed_until):
            values.update(suppressed_by=suppressed_by, suppressed_until=suppressed_until)
            if s is None and row.suppressed_by is not None:
                note = lapse_note(f.rule, f.where, row.suppressed_until, now)
                values["note"] = f"{note}; it said: {row.suppressed_by}"
                if told:
                    opened.append(_opened(f, row.first_seen_at, note))
        if values:
            conn.execute(update(t).where(t.c.id == row.id).values(last_seen_at=now, **values))
        else:
            unchanged.append(row.id)
    for ids in batched(unchanged, 500):
        conn.execute(update(t).where(t.c.id.in_(ids)).values(last_seen_at=now))
    if kept:  # the connection rules' open findings, as the last evaluation left them
        conn.execute(
            update(t)
            .where(
                t.c.resolved_at.is_(None),
                t.c.account == account,
                t.c.integration == integration,
                t.c.rule.in_(kept_rules),
            )
            .values(last_seen_at=now)
        )
    if snapshot_id is not None and (held is None or judged_keys):  # rows were judged
        interval = (settings.sync if settings is not None else SyncSettings()).full_compare_interval
        until = _standing_until(
            inventory, active, per_row, findings_settings.suppress, now, interval
        )
        if held is None:
            findings_reuse.keep(conn, account, integration, snapshot_id, digest, now, until)
        else:  # the kept result, moved on to this snapshot's rows
            until = None if until is None else min(until, held.valid_until)
            findings_reuse.keep(
                conn, account, integration, snapshot_id, digest, now, until, held.evaluated_at
            )
    # New episodes: one bulk insert (PostgreSQL's COPY, SQLite's driver executemany); told
    # as opened from what was inserted, with nothing read back.
    suppress = findings_settings.suppress
    new = [(f, suppression_for(f, suppress, now) if suppress else None) for f in fired.values()]
    if new:
        insert_rows(
            conn,
            t,
            NEW_COLUMNS,
            ((*f, s.text() if s else None, s.until if s else None) for f, s in new),
            {"first_seen_at": now, "last_seen_at": now},
        )
    if told:
        opened.extend(_opened(f, now) for f, s in new if s is None)
    return FindingEvents(opened, resolved)


def _told(settings: Settings | None) -> bool:
    """Whether a sink takes findings: only then are new episodes' ids read back and the
    findings that opened and resolved built for its messages."""
    sinks = settings.notify if settings is not None else ()
    return any(OPENED in sink.events for sink in sinks)


def _standing_until(
    inventory: Inventory,
    active: Sequence[ActiveRule],
    per_row: set[str],
    suppressions: Sequence[Suppression],
    now: datetime,
    interval: timedelta,
) -> datetime | None:
    """Until when the connection rules' hits over these rows stand as they are at ``now``
    (None: a rule cannot say): the first change by time of a rule or of a suppression of
    one, and at the latest ``interval`` (the full compare interval) from now."""
    until = now + interval
    for a in active:
        if a.rule.id not in per_row or not a.enabled:
            continue
        if a.rule.changes_at is None:
            return None
        change = a.rule.changes_at(inventory, a.params, now)
        if change is not None:
            until = min(until, change)
    for s in suppressions:  # in force through its until day (UTC)
        ends = datetime.combine(s.until + timedelta(days=1), time(), UTC)
        if s.rule in per_row and ends > now:
            until = min(until, ends)
    return until


def _opened(f: Finding, first_seen_at: datetime, note: str | None = None) -> OpenedFinding:
    return OpenedFinding(*f, first_seen_at, note)


def _resolved(row: Any, note: str | None) -> ResolvedFinding:
    return ResolvedFinding(
        row.rule, row.slug, row.severity, row.account, row.integration,
        row.type, row.name, row.detail, row.first_seen_at, note,
    )  # fmt: skip


def _lock(conn: Connection, account: str, integration: str) -> None:
    """PostgreSQL: the integration's write lock (already held by a snapshot's transaction;
    advisory locks are re-entrant) and then the account's findings lock, since the
    account-level rules' rows are shared by the account's integrations. SQLite's one
    write lock already serializes the writers."""
    if conn.dialect.name != "postgresql":
        return
    for key in (lock_key(account, integration), lock_key(account, "", salt="findings")):
        conn.execute(select(func.pg_advisory_xact_lock(key)))
