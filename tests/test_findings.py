"""Findings over real syncs of the fake server, on SQLite and PostgreSQL: the lifecycle in
the findings table, the `findings` command (as of a time, filters, formats, OCSF,
--explain), suppressions around their end date, exit codes of `findings` and `check`,
the metric, and the README's audit SQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import astuple, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text
from sqlalchemy import event as sa_event

from inventory import models as m
from inventory import rules, store
from inventory.cli import common as cli_common
from inventory.config import Settings, Sink, load_settings
from inventory.config import load as config_load
from inventory.report import findings as report_findings
from inventory.secret import Secret
from inventory.store import findings
from inventory.testing import sample_item

from .helpers import Harness, _norm, query, readme_sql, rows, stamp, sync_at, write

T1 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1)
T3 = T1 + timedelta(days=2)
T4 = T1 + timedelta(days=3)


def api_key(name: str, **fields: Any) -> dict[str, Any]:
    return sample_item("api_key", name, updated_at=stamp(T1 - timedelta(days=10)), **fields)


def oauth(name: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("token_expiry", stamp(T1 + timedelta(days=60)))
    return sample_item("oauth", name, **fields)


@pytest.fixture
def acme(cli: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """acme/crm: one api_key with no allowed_domain (ZIS001), one fine; the clock at T1."""
    monkeypatch.setattr(config_load, "today", lambda: T1.date())
    monkeypatch.setattr(cli_common, "now", lambda: T1)
    cli.zis.add_integration(
        "acme",
        "crm",
        cli.token("acme", "crm"),
        [("api_key", api_key("open_key", allowed_domain="")), ("api_key", api_key("fine_key"))],
    )
    cli.write_config("", acme=["crm"])
    return cli


def add_config(h: Harness, text: str) -> None:
    assert h.config is not None
    h.config.write_text(h.config.read_text() + "\n" + text)


def episodes(h: Harness) -> list[tuple[Any, ...]]:
    t = m.Finding
    return sorted(
        query(
            h.db_url,
            select(
                t.id,
                t.rule,
                t.integration,
                t.type,
                t.name,
                t.first_seen_at,
                t.last_seen_at,
                t.resolved_at,
            ),
        )
    )


def listed(h: Harness, *args: str, code: int | None = None) -> list[dict[str, Any]]:
    result = h.run("findings", "--format", "json", *args)
    if code is not None:
        assert result.code == code, result.err
    return list(json.loads(result.out))


def keys(found: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r["rule"], r["integration"], r["type"], r["name"], r["status"]) for r in found}


def test_lifecycle_open_still_open_resolved_reopened(acme: Harness) -> None:
    sync_at(acme, T1)
    ((first, *rest),) = episodes(acme)
    assert rest == ["ZIS001", "crm", "api_key", "open_key", T1, T1, None]
    sync_at(acme, T2)  # still firing: last_seen_at moves, no new row
    assert episodes(acme) == [(first, "ZIS001", "crm", "api_key", "open_key", T1, T2, None)]
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="api.example.com")
    sync_at(acme, T3)  # fixed: resolved
    assert episodes(acme) == [(first, "ZIS001", "crm", "api_key", "open_key", T1, T2, T3)]
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="")
    sync_at(acme, T4)  # fires again: a new episode, the old one stays resolved
    (old, new) = episodes(acme)
    assert old == (first, "ZIS001", "crm", "api_key", "open_key", T1, T2, T3)
    assert new[0] > first and new[1:] == ("ZIS001", "crm", "api_key", "open_key", T4, T4, None)
    t = m.Finding
    assert query(acme.db_url, select(t.slug, t.severity, t.detail, t.suppressed_by)) == {
        ("no-allowed-domain", "high", "api_key with no allowed_domain", None)
    }


def test_a_failed_snapshot_moves_the_time_based_findings(acme: Harness) -> None:
    sync_at(acme, T1)
    acme.zis.integration("acme", "crm").token = "revoked"
    late = T1 + timedelta(days=3)
    sync_at(acme, late, code=1)
    t = m.Finding
    assert query(acme.db_url, select(t.rule, t.type, t.detail, t.first_seen_at, t.resolved_at)) == {
        ("ZIS001", "api_key", "api_key with no allowed_domain", T1, None),
        (
            "ZIS010",
            None,
            "last complete snapshot 2026-06-01T12:00:00Z, more than max_age=2d ago",
            late,
            None,
        ),
    }


def told(settings: Settings, events: frozenset[str] = frozenset({"finding"})) -> Settings:
    """The settings with one sink taking ``events``: what opened and resolved is built
    for a sink told of findings."""
    hook = Sink("hook", "webhook", Secret("http://127.0.0.1:9/never"), events=events)
    return replace(settings, notify=(hook,))


def test_update_findings_returns_what_opened(acme: Harness) -> None:
    sync_at(acme, T1)
    # Opened findings are returned (built from the rows inserted, nothing read back) for a
    # sink that takes them.
    quiet = load_settings(str(acme.config), resolve_tokens=False)
    settings = told(quiet)
    engine = store.make_engine(acme.db_url)
    try:
        later = T1 + timedelta(days=10)
        with engine.begin() as conn:
            opened, resolved = findings.update_findings(conn, settings, "acme", "crm", later)
        assert resolved == []
        (stale,) = opened
        assert (stale.rule, stale.slug, stale.severity, stale.account, stale.integration) == (
            "ZIS010",
            "stale-inventory",
            "high",
            "acme",
            "crm",
        )
        assert (stale.type, stale.name, stale.first_seen_at, stale.note) == (
            None,
            None,
            later,
            None,
        )
        assert (
            stale.detail == "last complete snapshot 2026-06-01T12:00:00Z, more than max_age=2d ago"
        )
        told_fields = (
            m.Finding.rule, m.Finding.slug, m.Finding.severity, m.Finding.account,
            m.Finding.integration, m.Finding.type, m.Finding.name, m.Finding.detail,
            m.Finding.first_seen_at,
        )  # fmt: skip
        new_rows = select(*told_fields).where(m.Finding.first_seen_at == later)
        assert query(acme.db_url, new_rows) == {astuple(stale)[:-1]}  # the row opened, as told
        with engine.begin() as conn:  # nothing new the second time
            assert findings.update_findings(conn, settings, "acme", "crm", later) == ([], [])
        with engine.connect() as conn:  # all new at once: each told as its row says
            conn.execute(delete(m.Finding))
            opened, _ = findings.update_findings(conn, settings, "acme", "crm", later)
            stored = set(conn.execute(select(*told_fields)))
            conn.rollback()
        assert {astuple(f)[:-1] for f in opened} == stored
        assert len(opened) == len(stored)
        assert {(row.rule, row.name) for row in stored} == {
            ("ZIS001", "open_key"),
            ("ZIS010", None),
        }
        # With no sink told of findings, the same rows open and none is returned.
        for told_nothing in (
            quiet,
            told(quiet, events=frozenset({"added"})),
        ):
            with engine.connect() as conn:
                conn.execute(delete(m.Finding))
                opened, _ = findings.update_findings(conn, told_nothing, "acme", "crm", later)
                again = set(conn.execute(select(m.Finding.rule, m.Finding.name)))
                conn.rollback()
            assert (opened, again) == ([], {(row.rule, row.name) for row in stored})
        # A fresh snapshot resolves the stale inventory: told as resolved, with its row.
        with engine.begin() as conn:
            conn.execute(
                m.Snapshot.__table__.update().values(started_at=later - timedelta(hours=1))
            )
            opened, resolved = findings.update_findings(conn, settings, "acme", "crm", later)
        assert opened == []
        assert resolved == [
            findings.ResolvedFinding(
                "ZIS010", "stale-inventory", "high", "acme", "crm", None, None,
                "last complete snapshot 2026-06-01T12:00:00Z, more than max_age=2d ago", later,
            )
        ]  # fmt: skip
    finally:
        engine.dispose()


def test_a_snapshots_reads_of_the_findings_go_by_an_index(acme: Harness) -> None:
    """Every read of the findings table a snapshot's update makes (its open findings and
    the account-level rule's; the new episodes are not read back) is an index search on
    SQLite, not a scan of the account's findings: with an OR, one large account's
    snapshots each read all of them. Another integration's ZIS009 row (no type) is read."""
    if not acme.db_url.startswith("sqlite"):
        pytest.skip("the query plans are SQLite's (PostgreSQL's planner scans tiny tables)")
    sync_at(acme, T1)
    settings = told(load_settings(str(acme.config), resolve_tokens=False))
    engine = store.make_engine(acme.db_url)
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " findings" in statement:
            seen.append((statement, params))

    sa_event.listen(engine, "before_cursor_execute", keep)
    try:
        with engine.begin() as conn:  # a ZIS009 row of another integration, open
            conn.execute(insert(m.Finding).values(
                rule="ZIS009", slug="integration-not-inventoried", severity="medium",
                account="acme", integration="billing", type=None, name=None,
                detail="listed by the registry, not configured", first_seen_at=T1,
                last_seen_at=T1,
            ))  # fmt: skip
            conn.execute(delete(m.Finding).where(m.Finding.rule == "ZIS001"))
            opened, resolved = findings.update_findings(conn, settings, "acme", "crm", T2)
        sa_event.remove(engine, "before_cursor_execute", keep)
        # The account's ZIS009 row was read, and resolved: no registry lists billing now.
        assert {(f.rule, f.name) for f in opened} == {("ZIS001", "open_key")}
        assert [(f.rule, f.integration) for f in resolved] == [("ZIS009", "billing")]
        assert query(acme.db_url, select(m.Finding.rule, m.Finding.resolved_at)) == {
            ("ZIS001", None), ("ZIS009", T2)
        }  # fmt: skip
        plans = set()
        with engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()
            for statement, params in seen:
                for row in cursor.execute(f"EXPLAIN QUERY PLAN {statement}", params):
                    if "findings" in row[3]:
                        plans.add(row[3])
        assert plans == {
            "SEARCH findings USING INDEX ix_findings_account_integration_resolved_at "
            "(account=? AND integration=? AND resolved_at=?)",
            "SEARCH findings USING INDEX ix_findings_integration_level "
            "(account=? AND rule=? AND resolved_at=?)",
        }
    finally:
        engine.dispose()


def test_as_of_across_a_change(acme: Harness) -> None:
    sync_at(acme, T1)
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="api.example.com")
    acme.zis.put("acme", "crm", "api_key", api_key("wild_key", allowed_domain="*.example.com"))
    sync_at(acme, T2)
    before = listed(acme, "--as-of", stamp(T2 - timedelta(seconds=1)), code=1)
    assert keys(before) == {("ZIS001", "crm", "api_key", "open_key", "open")}
    assert before[0]["first_seen_at"] == stamp(T1) and before[0]["id"] is not None
    assert keys(listed(acme, "--as-of", stamp(T2), code=0)) == {
        ("ZIS002", "crm", "api_key", "wild_key", "open")
    }
    # Before the first snapshot: nothing was inventoried, and the integration was stale.
    assert keys(listed(acme, "--as-of", "2026-05-01", code=1)) == {
        ("ZIS010", "crm", None, None, "open")
    }
    assert listed(acme, code=0)[0]["rule"] == "ZIS002"


def test_filters_and_table(acme: Harness) -> None:
    acme.zis.put("acme", "crm", "oauth", oauth("no_expiry", token_expiry=""))
    acme.zis.put("acme", "crm", "api_key", api_key("wild_key", allowed_domain="*.example.com"))
    sync_at(acme, T1)
    assert keys(listed(acme)) == {
        ("ZIS001", "crm", "api_key", "open_key", "open"),
        ("ZIS002", "crm", "api_key", "wild_key", "open"),
        ("ZIS006", "crm", "oauth", "no_expiry", "open"),
    }
    assert keys(listed(acme, "--rule", "ZIS006", "--rule", "ZIS002")) == {
        ("ZIS002", "crm", "api_key", "wild_key", "open"),
        ("ZIS006", "crm", "oauth", "no_expiry", "open"),
    }
    assert {r["rule"] for r in listed(acme, "--severity", "medium")} == {"ZIS001", "ZIS002"}
    assert listed(acme, "--account", "beta") == [] and listed(acme, "--integration", "x") == []
    table = acme.run("findings")
    assert table.code == 1
    assert table.out.splitlines() == [
        "SEVERITY  RULE    ACCOUNT/INTEGRATION  TYPE     NAME       SINCE",
        "high      ZIS001  acme/crm             api_key  open_key   2026-06-01",
        "    api_key with no allowed_domain",
        "medium    ZIS002  acme/crm             api_key  wild_key   2026-06-01",
        "    allowed_domain=*.example.com",
        "low       ZIS006  acme/crm             oauth    no_expiry  2026-06-01",
        "    oauth with no token_expiry",
        "3 findings",
        "findings: FAILED: 1 unsuppressed at or above high",
    ]
    long = "a_connection_name_of_sixty_characters_to_be_cut_in_the_table"
    acme.zis.put("acme", "crm", "api_key", api_key(long, allowed_domain="*.example.com"))
    sync_at(acme, T1)
    assert (
        max(len(line) for line in acme.run("findings", "--rule", "ZIS002").out.splitlines()[:4])
        <= 80
    )
    acme.zis.delete("acme", "crm", "api_key", long)
    sync_at(acme, T1 + timedelta(hours=1))
    csv_out = acme.run("findings", "--format", "csv", "--rule", "ZIS002").out.splitlines()
    assert csv_out[0] == ",".join(report_findings.FINDING_KEYS)
    assert csv_out[1].split(",")[1:10] == [
        "ZIS002",
        "wild-domain" if False else "wildcard-domain",
        "medium",
        "open",
        "acme",
        "crm",
        "api_key",
        "wild_key",
        "allowed_domain=*.example.com",
    ]
    result = acme.run("findings", "--rule", "ZIS077")
    assert result.code == 2 and "unknown rule 'ZIS077'" in result.err
    result = acme.run("findings", "--severity", "urgent")
    assert result.code == 2 and "Invalid value for '--severity'" in result.err
    result = acme.run("findings", "--as-of", "yesterday")
    assert result.code == 2


SUPPRESS = """
[[findings.suppress]]
rule = "ZIS001"
account = "acme"
integration = "crm"
name = "open_*"
reason = "vendor has no fixed host; SEC-123"
until = "2026-07-01"
"""


@pytest.mark.parametrize(
    ("now", "status", "code"),
    [
        (datetime(2026, 6, 30, 12, 0, tzinfo=UTC), "suppressed", 0),
        (datetime(2026, 7, 1, 23, 59, 59, tzinfo=UTC), "suppressed", 0),
        (datetime(2026, 7, 2, 0, 0, tzinfo=UTC), "open", 1),
    ],
)
def test_suppressions_before_on_and_after_until(
    acme: Harness, monkeypatch: pytest.MonkeyPatch, now: datetime, status: str, code: int
) -> None:
    add_config(acme, SUPPRESS)
    sync_at(acme, T1)
    t = m.Finding
    assert query(acme.db_url, select(t.rule, t.suppressed_by, t.suppressed_until)) == {
        (
            "ZIS001",
            "findings.suppress[0] ZIS001 on acme/crm/*/open_*: vendor has no fixed host; SEC-123",
            date(2026, 7, 1),
        )
    }
    monkeypatch.setattr(cli_common, "now", lambda: now)
    monkeypatch.setattr(config_load, "today", lambda: T1.date())  # the config was valid
    shown = listed(acme, "--rule", "ZIS001", code=code)
    both = listed(acme, "--rule", "ZIS001", "--include-suppressed", code=code)
    (row,) = both
    assert row["status"] == status
    if status == "suppressed":
        assert shown == []
        assert (row["suppressed_by"], row["suppressed_until"], row["note"]) == (
            "vendor has no fixed host; SEC-123",
            "2026-07-01",
            None,
        )
        table = acme.run("findings", "--rule", "ZIS001").out.splitlines()
        assert table[-2:] == [
            "1 suppressed finding not shown (--include-suppressed lists them)",
            "findings: OK (none unsuppressed at or above high)",
        ]
        table = acme.run("findings", "--rule", "ZIS001", "--include-suppressed").out
        assert (
            "SUPPRESSED (1)" in table
            and (
                "    api_key with no allowed_domain; suppressed until 2026-07-01: vendor has no "
                "fixed host; SEC-123"
            )
            in table
        )
    else:
        assert shown == both
        assert (row["suppressed_by"], row["note"]) == (
            None,
            "suppression for ZIS001 on acme/crm/api_key/open_key expired 2026-07-01",
        )
        # What the lapse tells (notifications): the episode as it opened at T1.
        settings = told(load_settings(str(acme.config), resolve_tokens=False))
        engine = store.make_engine(acme.db_url)
        with engine.connect() as conn:
            lapsed, _ = findings.update_findings(conn, settings, "acme", "crm", now)
            conn.rollback()
        engine.dispose()
        assert {(f.rule, f.name, f.first_seen_at, f.note) for f in lapsed} == {
            (
                "ZIS001",
                "open_key",
                T1,
                "suppression for ZIS001 on acme/crm/api_key/open_key expired 2026-07-01",
            ),
            ("ZIS010", None, now, None),  # the last sync is more than max_age ago
        }
        # The next sync after the end date records the lapse in the table.
        sync_at(acme, now)
        assert query(acme.db_url, select(t.suppressed_by, t.suppressed_until, t.note)) == {
            (
                None,
                None,
                "suppression for ZIS001 on acme/crm/api_key/open_key expired 2026-07-01; it "
                "said: findings.suppress[0] ZIS001 on acme/crm/*/open_*: vendor has no fixed "
                "host; SEC-123",
            )
        }
        assert listed(acme, "--rule", "ZIS001")[0]["note"].startswith(
            "suppression for ZIS001 on acme/crm/api_key/open_key expired 2026-07-01"
        )


@pytest.mark.parametrize(
    ("fail_on", "option", "code"),
    [
        ("critical", None, 0),
        ("high", None, 1),
        ("medium", None, 1),
        ("low", None, 1),
        ("none", None, 0),
        ("high", "critical", 0),
        ("critical", "high", 1),
        ("high", "none", 0),
    ],
)
def test_exit_codes_of_findings_and_check(
    acme: Harness, fail_on: str, option: str | None, code: int
) -> None:
    add_config(acme, f'[findings]\nfail_on = "{fail_on}"\n')
    sync_at(acme, T1)
    extra = ("--fail-on", option) if option else ()
    assert acme.run("findings", *extra).code == code
    assert acme.run("findings", "--format", "ocsf", *extra).code == code
    result = acme.run("check", *extra)
    assert result.code == code, result.out
    lines = result.out.splitlines()
    if code:
        assert lines[-2:] == [
            "check: OK (0 with no expiry known)",
            f"findings: FAILED: 1 unsuppressed at or above {option or fail_on} "
            "(python -m inventory findings)",
        ]
    else:
        assert lines[-1] == "check: OK (0 with no expiry known)"


def test_only_the_severities_at_or_above_fail(acme: Harness) -> None:
    acme.zis.delete("acme", "crm", "api_key", "open_key")
    acme.zis.put("acme", "crm", "oauth", oauth("no_expiry", token_expiry=""))
    sync_at(acme, T1)
    assert acme.run("findings").code == 0  # ZIS006 is low
    assert acme.run("findings", "--fail-on", "low").code == 1
    assert acme.run("findings", "--fail-on", "medium").code == 0
    assert acme.run("check", "--fail-on", "low").code == 1
    assert acme.run("check", "--fail-on", "medium").code == 0


# OCSF 1.x Compliance Finding (class_uid 2003): the attributes the published schema marks
# required, for the class, its parent finding, the base event and their objects.
OCSF_REQUIRED = (
    "activity_id",
    "category_uid",
    "class_uid",
    "type_uid",
    "severity_id",
    "time",
    "metadata",
    "finding_info",
    "compliance",
)
OCSF_REQUIRED_OBJECTS = {
    "metadata": ("product", "version"),
    "finding_info": ("uid", "title"),
    "compliance": ("standards",),
}


def test_ocsf_lines_parse_and_carry_the_required_fields(acme: Harness) -> None:
    acme.zis.put("acme", "crm", "oauth", oauth("no_expiry", token_expiry=""))
    add_config(acme, SUPPRESS.replace('name = "open_*"', 'name = "nothing_*"'))
    sync_at(acme, T1)
    result = acme.run("findings", "--format", "ocsf", "--include-suppressed")
    assert result.code == 1
    events = [json.loads(line) for line in result.out.splitlines()]
    assert len(events) == 2
    for event in events:
        for name in OCSF_REQUIRED:
            assert name in event, name
        for name, fields in OCSF_REQUIRED_OBJECTS.items():
            for inner in fields:
                assert event[name][inner], (name, inner)
        assert event["class_uid"] == 2003 and event["category_uid"] == 2
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["activity_id"] in (1, 2, 3)
        assert event["severity_id"] in (1, 2, 3, 4, 5, 6, 99)
        assert event["time"] == int(T1.timestamp() * 1000)
        assert event["metadata"]["product"]["name"] == "zis-inventory"
        assert isinstance(event["compliance"]["standards"], list)
        assert event["compliance"]["status_id"] == 3
    by_rule = {e["finding_info"]["title"]: e for e in events}
    assert set(by_rule) == {"ZIS001 no-allowed-domain", "ZIS006 no-expiry-known"}
    high = by_rule["ZIS001 no-allowed-domain"]
    assert (high["severity_id"], high["severity"], high["status_id"]) == (4, "High", 1)
    assert high["resources"][0]["uid"] == "acme/crm/api_key/open_key"
    assert by_rule["ZIS006 no-expiry-known"]["severity_id"] == 2


Uids = set[tuple[str, str, str]]


def ocsf_uids(h: Harness, *args: str) -> Uids:
    """(rule, the finding's key as its resource uid, finding_info.uid) of each OCSF line."""
    result = h.run("findings", "--format", "ocsf", "--include-suppressed", *args)
    assert result.code in (0, 1), result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    found = {(e["compliance"]["control"], e["resources"][0]["uid"], e["finding_info"]["uid"])
             for e in events}  # fmt: skip
    assert len(found) == len(events)
    return found


def format_uids(h: Harness, fmt: str, *args: str) -> Uids:
    """The same triples from the json or csv output."""
    out = h.run("findings", "--format", fmt, "--include-suppressed", *args).out
    found = json.loads(out) if fmt == "json" else list(csv.DictReader(io.StringIO(out)))
    return {
        (r["rule"], "/".join(r[k] for k in ("account", "integration", "type", "name") if r[k]),
         r["uid"])
        for r in found
    }  # fmt: skip


def expected_uid(url: str, rule: str, *key: str | None) -> str:
    """A finding's uid, worked out here: the version 5 UUID, in the namespace of the
    database's id, of the JSON array of its rule and key."""
    ((database,),) = query(url, select(m.DatabaseIdentity.database_id))
    name = json.dumps([rule, "acme", *key], separators=(",", ":"))
    return str(uuid.uuid5(uuid.UUID(database), name))


def test_a_findings_uid_is_the_same_from_its_first_report_to_its_last(
    acme: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any sync, evaluated on the fly, recorded by a sync, as of an earlier time,
    reopened after it was resolved, in every format, across `db upgrade` re-runs."""
    url = acme.db_url
    assert acme.run("db", "upgrade").code == 0
    stale = ("ZIS010", "acme/crm", expected_uid(url, "ZIS010", "crm", None, None))
    assert ocsf_uids(acme) == {stale}  # nothing inventoried yet, nothing recorded
    assert acme.run("db", "upgrade").code == 0
    assert ocsf_uids(acme) == {stale}
    open_key = ("ZIS001", "acme/crm/api_key/open_key",
                expected_uid(url, "ZIS001", "crm", "api_key", "open_key"))  # fmt: skip
    sync_at(acme, T1)  # ZIS010 resolved; ZIS001 recorded
    assert ocsf_uids(acme) == {open_key}
    # A rule turned on shows at once, before a snapshot records it; then recorded.
    add_config(acme, '[findings.rules.ZIS008]\nenabled = true\npattern = "^fine_"\n')
    named = ("ZIS008", "acme/crm/api_key/open_key",
             expected_uid(url, "ZIS008", "crm", "api_key", "open_key"))  # fmt: skip
    assert [r["id"] for r in listed(acme, "--rule", "ZIS008")] == [None]
    assert ocsf_uids(acme) == {open_key, named}
    sync_at(acme, T2)
    monkeypatch.setattr(cli_common, "now", lambda: T2)
    assert None not in {r["id"] for r in listed(acme)}
    assert ocsf_uids(acme) == {open_key, named}
    assert ocsf_uids(acme, "--as-of", stamp(T1)) == {open_key, named}  # ZIS008 unrecorded then
    assert ocsf_uids(acme, "--as-of", stamp(T1 - timedelta(hours=1))) == {stale}
    # Resolved, then firing again: a new episode in the table, the same finding for a SIEM.
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="api.example.com")
    sync_at(acme, T3)
    monkeypatch.setattr(cli_common, "now", lambda: T3)
    assert ocsf_uids(acme) == {named}  # ZIS008 still fires
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="")
    sync_at(acme, T4)
    monkeypatch.setattr(cli_common, "now", lambda: T4)
    assert len({r[0] for r in episodes(acme) if r[1] == "ZIS001"}) == 2
    assert acme.run("db", "upgrade").code == 0
    assert ocsf_uids(acme) == {open_key, named}
    assert format_uids(acme, "json") == format_uids(acme, "csv") == {open_key, named}
    assert ocsf_uids(acme, "--as-of", stamp(T2)) == {open_key, named}


def test_two_databases_with_the_same_content_give_their_findings_other_uids(
    acme: Harness, other_db_url: str
) -> None:
    """The same syncs of the same server into two databases: the same findings, event for
    event, but for finding_info.uid, which no two databases share."""

    def events() -> list[dict[str, Any]]:
        sync_at(acme, T1)
        result = acme.run("findings", "--format", "ocsf")
        return [json.loads(line) for line in result.out.splitlines()]

    acme.zis.put("acme", "crm", "oauth", oauth("no_expiry", token_expiry=""))
    first = events()
    acme.monkeypatch.setenv("INVENTORY_DATABASE_URL", other_db_url)
    second = events()
    assert {e["finding_info"]["uid"] for e in first} == {
        expected_uid(acme.db_url, "ZIS001", "crm", "api_key", "open_key"),
        expected_uid(acme.db_url, "ZIS006", "crm", "oauth", "no_expiry"),
    }
    assert {e["finding_info"]["uid"] for e in second} == {
        expected_uid(other_db_url, "ZIS001", "crm", "api_key", "open_key"),
        expected_uid(other_db_url, "ZIS006", "crm", "oauth", "no_expiry"),
    }
    assert not {e["finding_info"]["uid"] for e in first} & {
        e["finding_info"]["uid"] for e in second
    }

    def without_uid(e: dict[str, Any]) -> dict[str, Any]:
        return {**e, "finding_info": {**e["finding_info"], "uid": None}}

    assert [without_uid(e) for e in first] == [without_uid(e) for e in second]


def test_a_database_without_its_id_is_named_not_given_a_new_one(acme: Harness) -> None:
    sync_at(acme, T1)
    if acme.db_url.startswith("sqlite"):
        guards = ["DROP TRIGGER database_identity_fixed_delete"]
    else:
        guards = ["ALTER TABLE database_identity DISABLE TRIGGER database_identity_fixed"]
    write(acme.db_url, *(text(g) for g in guards), text("DELETE FROM database_identity"))
    for fmt in ("ocsf", "json", "table"):
        result = acme.run("findings", "--format", fmt)
        assert (result.code, result.out) == (1, ""), fmt
        assert "database error: database_identity holds no row, so findings have no SIEM " in (
            result.err
        )
    assert query(acme.db_url, select(m.DatabaseIdentity.database_id)) == set()


def test_explain_shows_rationale_remediation_and_parameters(acme: Harness) -> None:
    add_config(acme, '[findings.rules.ZIS003]\nmax_age_days = 180\nseverity = "high"\n')
    result = acme.run("findings", "--explain", "ZIS003")
    assert result.code == 0
    assert result.out.splitlines() == [
        "ZIS003 not-rotated",
        "severity: high (default medium)",
        "enabled: yes",
        "scope: connection",
        f"rationale: {rules.RULES_BY_ID['ZIS003'].rationale}",
        f"remediation: {rules.RULES_BY_ID['ZIS003'].remediation}",
        "parameters in force:",
        "  max_age_days = 180 (default 365): days since updated_at before it fires",
    ]
    zis009 = acme.run("findings", "--explain", "ZIS009").out
    assert "note: reports nothing: this database has no integrations table" in zis009
    zis010 = acme.run("findings", "--explain", "ZIS010").out
    assert "  max_age = 2d: duration such as 2d, 48h or 90m" in zis010
    assert acme.run("findings", "--explain", "ZIS404").code == 2


def test_zis009_reads_the_integrations_table(acme: Harness) -> None:
    sync_at(acme, T1)
    engine = store.make_engine(acme.db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO integrations (account, name, first_seen_at, last_seen_at, configured)"
                " VALUES ('acme', 'crm', '2026-05-01 00:00:00', '2026-05-01 00:00:00', TRUE),"
                " ('acme', 'shadow', '2026-05-01 00:00:00', '2026-05-01 00:00:00', FALSE)"
            )
    finally:
        engine.dispose()
    assert keys(listed(acme, "--rule", "ZIS009")) == {("ZIS009", "shadow", None, None, "open")}
    sync_at(acme, T2)  # the account's integration-level keys are kept by any of its snapshots
    t = m.Finding
    assert query(
        acme.db_url, select(t.rule, t.integration, t.first_seen_at).where(t.rule == "ZIS009")
    ) == {("ZIS009", "shadow", T2)}
    assert "note:" not in acme.run("findings", "--explain", "ZIS009").out


def test_the_metric_counts_open_unsuppressed_findings(acme: Harness) -> None:
    from prometheus_client import generate_latest

    from inventory.metrics import Metrics

    acme.zis.put("acme", "crm", "api_key", api_key("wild_key", allowed_domain="*.example.com"))
    add_config(acme, SUPPRESS.replace("open_*", "wild_*").replace("ZIS001", "ZIS002"))
    sync_at(acme, T1)
    engine = store.make_engine(acme.db_url)
    try:
        metrics = Metrics(lambda: engine, lambda: timedelta(minutes=30), now=lambda: T1)
        text = generate_latest(metrics.registry).decode()
    finally:
        engine.dispose()
    lines = [line for line in text.splitlines() if line.startswith("zis_inventory_findings{")]
    assert lines == [
        'zis_inventory_findings{account="acme",integration="crm",rule="ZIS001",severity="high"} 1.0'
    ]


def test_readme_findings_sql(acme: Harness) -> None:
    add_config(acme, SUPPRESS.replace("open_*", "wild_*").replace("ZIS001", "ZIS002"))
    acme.zis.put("acme", "crm", "api_key", api_key("wild_key", allowed_domain="*.example.com"))
    sync_at(acme, T1)
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="api.example.com")
    sync_at(acme, T2)
    acme.zis.update("acme", "crm", "api_key", "open_key", allowed_domain="")
    sync_at(acme, T3)
    reason = "findings.suppress[0] ZIS002 on acme/crm/*/wild_*: vendor has no fixed host; SEC-123"
    expected: dict[str, list[tuple[Any, ...]]] = {
        "Findings: open now, most severe first": [
            ("ZIS001", "high", "acme", "crm", "api_key", "open_key", _t(T3), None),
            ("ZIS002", "medium", "acme", "crm", "api_key", "wild_key", _t(T1), reason),
        ],
        "Findings: when each opened, was last seen, and was fixed": [
            ("ZIS001", "acme", "crm", "api_key", "open_key", _t(T1), _t(T1), _t(T2)),
            ("ZIS001", "acme", "crm", "api_key", "open_key", _t(T3), _t(T3), None),
            ("ZIS002", "acme", "crm", "api_key", "wild_key", _t(T1), _t(T3), None),
        ],
        "Findings: who suppressed which, why, and until when": [
            ("ZIS002", "acme", "crm", "api_key", "wild_key", reason, "2026-07-01", None),
        ],
    }
    dialect = "PostgreSQL" if acme.db_url.startswith("postgresql") else "SQLite"
    ran = set()
    for title, only, sql in readme_sql():
        if title not in expected or only not in (None, dialect):
            continue
        got = [tuple(_norm(v) for v in row) for row in rows(acme.db_url, sql)]
        got = [tuple(v.isoformat() if isinstance(v, date) else v for v in row) for row in got]
        assert got == expected[title], title
        ran.add(title)
    assert ran == set(expected)


def _t(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture(autouse=True)
def _no_leftover_patches() -> Iterator[None]:
    yield
