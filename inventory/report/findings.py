"""The findings read side (§12): the rules evaluated over the inventory as of any time
with the findings table's lifecycle beside them, the `findings` report, `--explain`, a
finding's SIEM id (``finding_uid``) and its OCSF form.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import rfc8785
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    inspect,
    or_,
    select,
)

from .. import models as m
from ..config import Settings
from ..errors import DatabaseError
from ..records import format_timestamp
from ..render import Column, Report, day
from ..rules import (
    RULES_BY_ID,
    evaluate,
    lapse_note,
    rules_in_force,
    severity_rank,
    show_param,
    suppression_for,
)
from ..store.findings import FINDINGS, UNREADABLE, read_inventory

log = logging.getLogger(__name__)

OCSF_VERSION = "1.3.0"


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
