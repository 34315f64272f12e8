"""Findings: rules that say what is wrong in the inventory (spec §12), kept with a lifecycle.

The rules are data plus one small pure function each, registered in RULES (one row per
rule, like ScoutSuite's rule files or Prowler's check metadata). They read records and
yield hits; they do no I/O. Reading the tables (``read_inventory``), keeping the
``findings`` table (``update_findings``, called in each snapshot's transaction) and the
read side (``findings_report``, ``ocsf_events``) live below them. A finding's SIEM id
(``finding_uid``) is derived from the database's id and its rule and key.

Time boundaries, the same as ``check`` and the reports: a token whose ``token_expiry`` is
at or before the evaluation time has expired (ZIS004), one after it and at most
``within_days`` ahead is expiring (ZIS005); ``updated_at`` exactly ``max_age_days`` old is
not yet stale (ZIS003), nor is a last complete snapshot exactly ``max_age`` old (ZIS010).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple, cast

import rfc8785
from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    and_,
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

from . import findings_reuse
from . import models as m
from .batches import batched
from .config import Settings, SyncSettings
from .errors import DatabaseError
from .records import METADATA_FIELDS, format_timestamp
from .render import Column, Report, day
from .rules import (
    RULES_BY_ID,
    ActiveRule,
    Finding,
    FindingsSettings,
    Freshness,
    Inventory,
    Record,
    Suppression,
    evaluate,
    lapse_note,
    rules_in_force,
    severity_rank,
    show_param,
    suppression_for,
)

log = logging.getLogger(__name__)

FINDINGS = cast(Table, m.Finding.__table__)
# What reading or judging a value edited by hand into the tables raises.
UNREADABLE = (ValueError, TypeError, UnicodeDecodeError, AttributeError)
OCSF_VERSION = "1.3.0"


RECORD_COLUMNS = ("account", "integration", "type", "name", *METADATA_FIELDS)


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
    )


def _inventory_of(
    conn: Connection,
    settings: Settings | None,
    account: str,
    integration: str,
    keys: frozenset[tuple[str, str]] | None,
) -> Inventory:
    """What one snapshot's update evaluates: the integration's present connections (those
    of ``keys`` only, unless None) and freshness (it is configured: it is being synced),
    and its account's registry."""
    return Inventory(
        _records(conn, [account], [integration], None)
        if keys is None
        else _records_of(conn, account, integration, keys),
        _freshness(conn, [(account, integration)], None),
        _configured(settings) | {(account, integration)},
        _registry(conn, [account], (), None),
    )


def _configured(settings: Settings | None) -> frozenset[tuple[str, str]]:
    accounts = settings.accounts if settings is not None else ()
    return frozenset((a.subdomain, i.name) for a in accounts for i in a.integrations)


def _records(
    conn: Connection, accounts: Sequence[str], integrations: Sequence[str], as_of: datetime | None
) -> list[Record]:
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
    return [Record(*row) for row in conn.execute(query.execution_options(yield_per=1000))]


def _records_of(
    conn: Connection, account: str, integration: str, keys: frozenset[tuple[str, str]]
) -> list[Record]:
    """The present connections of one integration with these (type, name) keys."""
    t = cast(Table, m.Connection.__table__)
    found: list[Record] = []
    for chunk in batched(sorted(keys), 500):
        query = select(*(t.c[k] for k in RECORD_COLUMNS)).where(
            t.c.account == account,
            t.c.integration == integration,
            t.c.removed_at.is_(None),
            tuple_(t.c.type, t.c.name).in_(chunk),
        )
        found += (Record(*row) for row in conn.execute(query))
    return sorted(found)


def _freshness(
    conn: Connection, targets: Sequence[tuple[str, str]], as_of: datetime | None
) -> list[Freshness]:
    """When each target's last complete snapshot (up to ``as_of``) started."""
    if not targets:
        return []
    s = cast(Table, m.Snapshot.__table__)
    query = (
        select(s.c.account, s.c.integration, func.max(s.c.started_at))
        .where(s.c.status == "complete", s.c.account.in_({a for a, _ in targets}))
        .group_by(s.c.account, s.c.integration)
    )
    if as_of is not None:
        query = query.where(s.c.started_at <= as_of)
    last = {(a, i): when for a, i, when in conn.execute(query)}
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
class OpenedFinding:
    """A finding that became visible in this transaction: a new episode, or (``note``
    set) an open one whose suppression ended. Suppressed new episodes are not returned:
    nobody is told of what was accepted."""

    id: int
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
class ResolvedFinding:
    """A finding whose episode this transaction ended (``note`` says why, when it was not
    simply fixed). Suppressed ones are not returned: nobody was told they opened."""

    id: int
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
) -> FindingEvents:
    """Evaluate the rules of one integration (and the account-level ones of its account)
    at ``now`` and bring the ``findings`` table up to date, in the caller's transaction:
    a new (rule, key) opens an episode, one still firing moves its ``last_seen_at``
    (and detail, severity, suppression), one that no longer fires is resolved. Returns
    what opened and what was resolved, for notifications.

    Called for a snapshot (``snapshot_id``, with the (type, name) keys whose rows it
    ``changed``), the connection rules' last result is kept for the rows no snapshot
    changed since, when everything else it depends on is unchanged (findings_reuse), and
    they judge the changed rows only; the other rules are evaluated every time."""
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
        inventory = _inventory_of(conn, settings, account, integration, judged_keys)
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
        f.key: f
        for f in found
        if f.account == account and (f.integration == integration or f.rule in account_level)
    }
    t = FINDINGS
    kept_rules = per_row if kept else set()
    open_rows = list(
        conn.execute(
            select(t).where(
                t.c.resolved_at.is_(None),
                t.c.account == account,
                or_(t.c.integration == integration, t.c.rule.in_(account_level)),
                t.c.rule.not_in(kept_rules),
            )
        )
    )
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
    opened: list[OpenedFinding] = []
    resolved: list[ResolvedFinding] = []
    unchanged: list[int] = []
    for row in open_rows:
        key = (row.rule, row.account, row.integration, row.type, row.name)
        f = fired.pop(key, None)
        if f is None:
            note = "rule disabled in the configuration" if row.rule in disabled else row.note
            conn.execute(update(t).where(t.c.id == row.id).values(resolved_at=now, note=note))
            if row.suppressed_by is None:
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
                opened.append(_opened(row.id, f, row.first_seen_at, note))
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
    # New episodes: one bulk insert (PostgreSQL's COPY, SQLite's driver executemany), then
    # their ids by key (one open episode per key, under the locks taken above).
    new = [(f, suppression_for(f, findings_settings.suppress, now)) for f in fired.values()]
    if new:
        from .store.bulk import insert_rows  # (the store imports this module)

        insert_rows(
            conn,
            t,
            NEW_COLUMNS,
            ((*f.values, s.text() if s else None, s.until if s else None) for f, s in new),
            {"first_seen_at": now, "last_seen_at": now},
        )
        opened_now = conn.execute(
            select(t.c.id, t.c.rule, t.c.account, t.c.integration, t.c.type, t.c.name).where(
                t.c.resolved_at.is_(None),
                t.c.first_seen_at == now,
                t.c.account == account,
                or_(t.c.integration == integration, t.c.rule.in_(account_level)),
            )
        )
        id_of = {tuple(key): id_ for id_, *key in opened_now}
        opened.extend(_opened(id_of[f.key], f, now) for f, s in new if s is None)
    return FindingEvents(opened, resolved)


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


def _opened(
    id_: int, f: Finding, first_seen_at: datetime, note: str | None = None
) -> OpenedFinding:
    return OpenedFinding(id_, *f.values, first_seen_at, note)


def _resolved(row: Any, note: str | None) -> ResolvedFinding:
    return ResolvedFinding(
        row.id, row.rule, row.slug, row.severity, row.account, row.integration,
        row.type, row.name, row.detail, row.first_seen_at, note,
    )  # fmt: skip


def _lock(conn: Connection, account: str, integration: str) -> None:
    """PostgreSQL: the integration's write lock (already held by a snapshot's transaction;
    advisory locks are re-entrant) and then the account's findings lock, since the
    account-level rules' rows are shared by the account's integrations. SQLite's one
    write lock already serializes the writers."""
    if conn.dialect.name != "postgresql":
        return
    for a, i, salt in ((account, integration, "write"), (account, "", "findings")):
        digest = hashlib.blake2b(f"{salt}\0{a}\0{i}".encode(), digest_size=8).digest()
        conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))


# --- the read side ---------------------------------------------------------------------

FINDING_KEYS = (
    "id",
    "rule",
    "slug",
    "severity",
    "status",
    "account",
    "integration",
    "type",
    "name",
    "detail",
    "first_seen_at",
    "last_seen_at",
    "suppressed_by",
    "suppressed_until",
    "note",
    "uid",  # finding_uid: the same on every output, from the first report to the last
)


@dataclass
class Evaluation:
    """The rows of a findings report, before rendering."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    suppressed_hidden: int = 0
    at: datetime | None = None


def evaluate_database(
    conn: Connection,
    settings: Settings,
    *,
    at: datetime,
    as_of: datetime | None,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    rules: Sequence[str] = (),
    min_severity: str | None = None,
) -> list[dict[str, Any]]:
    """The rules over the inventory (now, or as of a time), each finding with its status
    (open | suppressed) and the episode of the findings table it belongs to."""
    inventory = read_inventory(
        conn, settings, accounts=accounts, integrations=integrations, as_of=as_of
    )
    found = evaluate(inventory, rules_in_force(settings.findings), at)
    episodes = _episodes(conn, at, accounts, integrations)
    namespace = database_id(conn)
    out: list[dict[str, Any]] = []
    floor = severity_rank(min_severity) if min_severity else 0
    for f in found:
        if rules and f.rule not in rules:
            continue
        if severity_rank(f.severity) < floor:
            continue
        s = suppression_for(f, settings.findings.suppress, at)
        episode = episodes.get(f.key)
        note = None
        if s is None and episode is not None and episode["suppressed_by"] is not None:
            note = lapse_note(f.rule, f.where, episode["suppressed_until"], at)
        elif s is None and episode is not None and episode["note"]:
            note = str(episode["note"]).split("; it said: ")[0]
        out.append(
            {
                "id": episode["id"] if episode else None,
                "rule": f.rule,
                "slug": f.slug,
                "severity": f.severity,
                "status": "suppressed" if s else "open",
                "account": f.account,
                "integration": f.integration,
                "type": f.type,
                "name": f.name,
                "detail": f.detail,
                "first_seen_at": episode["first_seen_at"] if episode else None,
                # every sync moves it on: as of a time, when it was last seen by then is
                # not kept, so the view at T stays the same as syncs run
                "last_seen_at": episode["last_seen_at"] if episode and as_of is None else None,
                "suppressed_by": s.reason if s else None,
                "suppressed_until": s.until.isoformat() if s else None,
                "note": note,
                "uid": finding_uid(namespace, f.key),
            }
        )
    out.sort(
        key=lambda r: (
            -severity_rank(r["severity"]),
            r["rule"],
            r["account"],
            r["integration"],
            r["type"] or "",
            r["name"] or "",
        )
    )
    return out


def database_id(conn: Connection) -> uuid.UUID:
    """The database's own id (database_identity, made once by its migration)."""
    t = cast(Table, m.DatabaseIdentity.__table__)
    found = conn.execute(select(t.c.database_id)).scalar_one_or_none()
    if found is None:
        raise DatabaseError(
            "database_identity holds no row, so findings have no SIEM ids: restore it from "
            "a backup of this database (its database_id), or ids made anew will not match "
            "those already sent"
        )
    try:
        return uuid.UUID(found)
    except (ValueError, TypeError):
        raise DatabaseError(
            "database_identity.database_id is not a UUID; restore it from a backup"
        ) from None


def finding_uid(database: uuid.UUID, key: tuple[str, str, str, str | None, str | None]) -> str:
    """A finding's id for SIEMs (OCSF ``finding_info.uid``): a version 5 UUID, in the
    database's namespace, of the canonical JSON of its rule and key (``Finding.key``).
    The same before and after a snapshot records it, for every episode of it, on every
    output; another database gives the same finding another id."""
    return str(uuid.uuid5(database, rfc8785.dumps(list(key)).decode()))


def _episodes(
    conn: Connection, at: datetime, accounts: Sequence[str], integrations: Sequence[str]
) -> dict[tuple[str, str, str, str | None, str | None], dict[str, Any]]:
    """The findings table's episode of each key that was open at ``at``."""
    t = FINDINGS
    conditions = [t.c.first_seen_at <= at, or_(t.c.resolved_at.is_(None), t.c.resolved_at > at)]
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.integration.in_(integrations))
    out = {}
    for row in conn.execute(select(t).where(and_(*conditions)).order_by(t.c.id)):
        out[(row.rule, row.account, row.integration, row.type, row.name)] = dict(row._mapping)
    return out


def findings_report(
    engine: Engine,
    settings: Settings,
    *,
    as_of: datetime | None,
    accounts: Sequence[str],
    integrations: Sequence[str],
    include_suppressed: bool,
    rules: Sequence[str] = (),
    min_severity: str | None = None,
    now: datetime | None = None,
) -> Report:
    """What ``python -m inventory findings`` shows (and evidence's findings.csv)."""

    at = as_of or now or datetime.now(UTC)
    with engine.connect() as conn, _readable():
        rows = evaluate_database(
            conn,
            settings,
            at=at,
            as_of=as_of,
            accounts=accounts,
            integrations=integrations,
            rules=rules,
            min_severity=min_severity,
        )
        registry_known = inspect(conn).has_table("integrations")
    shown = [r for r in rows if include_suppressed or r["status"] == "open"]
    hidden = len(rows) - len(shown)
    for r in shown:
        r["where"] = f"{r['account']}/{r['integration']}"
        line = r["detail"]
        if r["status"] == "suppressed":
            line += f"; suppressed until {r['suppressed_until']}: {r['suppressed_by']}"
        if r["note"]:
            line += f"; {r['note']}"
        r["line"] = line
    table = [
        Column("severity", "SEVERITY", 8),
        Column("rule", "RULE", 6),
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("type", "TYPE", 12, lambda v: v or "-"),
        Column("name", "NAME", 15, lambda v: v or "-"),
        Column("first_seen_at", "SINCE", 10, day),
    ]
    report = Report(FINDING_KEYS, shown, table, "finding", detail="line")
    if include_suppressed:
        report.rows = [r for r in shown if r["status"] == "open"] + [
            r for r in shown if r["status"] == "suppressed"
        ]
        report.sections = [
            ("OPEN", [r for r in shown if r["status"] == "open"]),
            ("SUPPRESSED", [r for r in shown if r["status"] == "suppressed"]),
        ]
    if hidden:
        report.notes.append(
            f"{hidden} suppressed finding{'' if hidden == 1 else 's'} not shown "
            "(--include-suppressed lists them)"
        )
    if not registry_known and (not rules or "ZIS009" in rules):
        report.notes.append(f"ZIS009: {REGISTRY_UNKNOWN}")
    if as_of is not None:
        report.notes.append(f"as of {format_timestamp(as_of)}")
    return report


@contextmanager
def _readable() -> Iterator[None]:
    try:
        yield
    except UNREADABLE as exc:
        raise DatabaseError(
            f"a stored value cannot be read ({type(exc).__name__}); "
            "python -m inventory db check names it"
        ) from None


REGISTRY_UNKNOWN = (
    "reports nothing: this database has no integrations table (it is below the schema "
    "head: python -m inventory db upgrade)"
)


def failing(rows: Iterable[Mapping[str, Any]], fail_on: str) -> list[Mapping[str, Any]]:
    """The open (unsuppressed) findings at or above ``fail_on`` ("none": never)."""
    floor = severity_rank(fail_on)
    return [r for r in rows if r["status"] == "open" and severity_rank(r["severity"]) >= floor]


def explain(rule_id: str, settings: Settings, registry_known: bool | None) -> str:
    active = {a.rule.id: a for a in rules_in_force(settings.findings)}[rule_id]
    rule = active.rule
    lines = [
        f"{rule.id} {rule.slug}",
        f"severity: {active.severity} (default {rule.severity})",
        f"enabled: {'yes' if active.enabled else 'no'}"
        + (
            ""
            if active.enabled == rule.enabled
            else f" (default {'yes' if rule.enabled else 'no'})"
        ),
        f"scope: {rule.scope}",
        f"rationale: {rule.rationale}",
        f"remediation: {rule.remediation}",
    ]
    if rule.params:
        lines.append("parameters in force:")
        for p in rule.params:
            value = active.params[p.name]
            default = "" if value == p.default else f" (default {show_param(p.default)})"
            lines.append(f"  {p.name} = {show_param(value)}{default}: {p.help}")
    else:
        lines.append("parameters: none")
    suppressions = [s for s in settings.findings.suppress if s.rule == rule.id]
    for s in suppressions:
        lines.append(f"suppressed on {s.scope} until {s.until.isoformat()}: {s.reason}")
    if rule.id == "ZIS009" and not registry_known:
        lines.append(f"note: {REGISTRY_UNKNOWN}")
    return "\n".join(lines)


# --- OCSF -------------------------------------------------------------------------------

OCSF_SEVERITY_ID = {"low": 2, "medium": 3, "high": 4, "critical": 5}


def ocsf_events(
    rows: Iterable[Mapping[str, Any]], at: datetime, version: str
) -> Iterator[dict[str, Any]]:
    """Each finding as one OCSF Compliance Finding (class_uid 2003, category 2 Findings,
    activity 1 Create; type_uid = class_uid * 100 + activity_id); ``finding_info.uid`` is
    the row's ``uid`` (finding_uid), which a SIEM deduplicates on."""
    millis = int(at.timestamp() * 1000)
    for r in rows:
        rule = RULES_BY_ID[r["rule"]]
        suppressed = r["status"] == "suppressed"
        key = "/".join(str(r[k]) for k in ("account", "integration", "type", "name") if r[k])
        first = r.get("first_seen_at")
        event: dict[str, Any] = {
            "activity_id": 1,
            "activity_name": "Create",
            "category_uid": 2,
            "category_name": "Findings",
            "class_uid": 2003,
            "class_name": "Compliance Finding",
            "type_uid": 200301,
            "type_name": "Compliance Finding: Create",
            "severity_id": OCSF_SEVERITY_ID[r["severity"]],
            "severity": r["severity"].capitalize(),
            "time": millis,
            "message": f"{r['rule']} {r['slug']}: {key}: {r['detail']}",
            "status_id": 3 if suppressed else 1,
            "status": "Suppressed" if suppressed else "New",
            "metadata": {
                "version": OCSF_VERSION,
                "product": {
                    "name": "zis-inventory",
                    "vendor_name": "zis-inventory",
                    "version": version,
                },
            },
            "finding_info": {
                "uid": r["uid"],
                "title": f"{r['rule']} {r['slug']}",
                "desc": rule.rationale,
                "types": [r["slug"]],
                **({"first_seen_time": int(first.timestamp() * 1000)} if first else {}),
            },
            "compliance": {
                "standards": ["zis-inventory findings rules"],
                "control": r["rule"],
                "status_id": 3,
                "status": "Fail",
                "status_detail": r["detail"],
            },
            "remediation": {"desc": rule.remediation},
            "resources": [
                {
                    "uid": key,
                    "type": r["type"] or "zis_integration",
                    "name": r["name"] or r["integration"],
                    "labels": [f"account:{r['account']}", f"integration:{r['integration']}"],
                }
            ],
        }
        if suppressed:
            event["comment"] = f"suppressed until {r['suppressed_until']}: {r['suppressed_by']}"
        yield event
