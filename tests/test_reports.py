"""The read side: connections / changes / snapshots / check over a database filled by real
syncs at fixed times, in all three formats, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import InternalError, OperationalError

from inventory import store

from .helpers import NOW, T1, T2, T3, Harness, sync_at


def as_json(h: Harness, *args: str) -> list[dict[str, Any]]:
    result = h.run(*args, "--format", "json")
    assert result.code == 0, result.err
    return list(json.loads(result.out))


def names(rows: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    return {(r["integration"], r["type"], r["name"]) for r in rows}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (T1 - timedelta(seconds=1), set()),
        (
            T1,
            {
                ("key_a", "a.example.com"),
                ("user_b", "user-b.example.com"),
                ("tok_c", "tok-c.example.com"),
                ("tok_d", "tok-d.example.com"),
                ("tok_e", "tok-e.example.com"),
                ("crm_tok", "crm-tok.example.com"),
            },
        ),
        (
            T2 - timedelta(microseconds=1),
            {
                ("key_a", "a.example.com"),
                ("user_b", "user-b.example.com"),
                ("tok_c", "tok-c.example.com"),
                ("tok_d", "tok-d.example.com"),
                ("tok_e", "tok-e.example.com"),
                ("crm_tok", "crm-tok.example.com"),
            },
        ),
        (
            T2,
            {
                ("key_a", "narrow.example.com"),
                ("tok_c", "tok-c.example.com"),
                ("tok_d", "tok-d.example.com"),
                ("tok_e", "tok-e.example.com"),
                ("crm_tok", "crm-tok.example.com"),
            },
        ),
        (
            T3 + timedelta(days=1),
            {
                ("key_a", "narrow.example.com"),
                ("user_b", "user-b.example.com"),
                ("tok_c", "tok-c.example.com"),
                ("tok_d", "tok-d.example.com"),
                ("tok_e", "tok-e.example.com"),
                ("tok_f", "tok-f.example.com"),
                ("crm_tok", "crm-tok.example.com"),
            },
        ),
    ],
)
def test_as_of_answers_from_the_history(
    history: Harness, when: datetime, expected: set[tuple[str, str]]
) -> None:
    rows = as_json(history, "connections", "--as-of", when.isoformat().replace("+00:00", "Z"))
    assert {(r["name"], r["allowed_domain"]) for r in rows} == expected
    if rows:
        assert list(rows[0]) == [
            "account",
            "integration",
            "type",
            "name",
            "allowed_domain",
            "created_at",
            "updated_at",
            "header_name",
            "username",
            "created_by",
            "uuid",
            "oauth_url_subdomain",
            "permission_scope",
            "token_type",
            "token_expiry",
            "oauth_client_uuid",
            "valid_from",
        ]


def test_as_of_accepts_a_date(history: Harness) -> None:
    rows = as_json(history, "connections", "--as-of", "2026-04-15", "--integration", "billing")
    assert {r["name"] for r in rows} == {"key_a", "tok_c", "tok_d", "tok_e"}


def test_present_connections_in_three_formats(history: Harness) -> None:
    result = history.run("connections", "--integration", "billing")
    assert result.code == 0
    assert result.out.splitlines() == [
        "ACCOUNT/INTEGRATION  TYPE        NAME    DOMAIN          EXPIRES",
        "acme/billing         api_key     key_a   narrow.exampl~  -",
        "acme/billing         basic_auth  user_b  user-b.exampl~  -",
        "acme/billing         oauth       tok_c   tok-c.example~  2026-07-01",
        "acme/billing         oauth       tok_d   tok-d.example~  2026-05-31",
        "acme/billing         oauth       tok_e   tok-e.example~  -",
        "acme/billing         oauth       tok_f   tok-f.example~  2026-07-02",
        "6 connections",
    ]
    assert max(len(line) for line in result.out.splitlines()) <= 80
    rows = as_json(history, "connections", "--type", "oauth", "--account", "acme")
    assert [(r["name"], r["token_expiry"], r["removed_at"]) for r in rows] == [
        ("tok_c", "2026-07-01T00:00:00Z", None),
        ("tok_d", "2026-05-31T23:59:59Z", None),
        ("tok_e", None, None),
        ("tok_f", "2026-07-02T00:00:00Z", None),
    ]
    assert (
        rows[0]["first_seen_at"] == "2026-03-01T12:00:00Z"
        and rows[3]["first_seen_at"] == "2026-05-01T12:00:00Z"
    )
    result = history.run("connections", "--type", "bearer_token", "--format", "csv")
    parsed = list(csv.reader(io.StringIO(result.out)))
    assert parsed[0] == [
        "account",
        "integration",
        "type",
        "name",
        "allowed_domain",
        "created_at",
        "updated_at",
        "header_name",
        "username",
        "created_by",
        "uuid",
        "oauth_url_subdomain",
        "permission_scope",
        "token_type",
        "token_expiry",
        "oauth_client_uuid",
        "first_seen_at",
        "last_changed_at",
        "removed_at",
    ]
    assert parsed[1][:7] == [
        "acme",
        "crm",
        "bearer_token",
        "crm_tok",
        "crm-tok.example.com",
        "2025-03-01T10:00:00.520000Z",
        "2025-03-01T10:00:00.520000Z",
    ]
    assert len(parsed) == 2


def test_expiry_windows_and_their_edges(history: Harness) -> None:
    assert names(as_json(history, "connections", "--expiring-within", "30d")) == {
        ("billing", "oauth", "tok_c")
    }
    assert names(as_json(history, "connections", "--expiring-within", "31d")) == {
        ("billing", "oauth", "tok_c"),
        ("billing", "oauth", "tok_f"),
    }
    assert names(as_json(history, "connections", "--expired")) == {("billing", "oauth", "tok_d")}
    assert names(as_json(history, "connections", "--expired", "--expiring-within", "30d")) == {
        ("billing", "oauth", "tok_c"),
        ("billing", "oauth", "tok_d"),
    }
    assert names(as_json(history, "connections", "--expiring-within", "719h")) == set()


def test_not_updated_for_lists_unknown_apart(history: Harness) -> None:
    result = history.run("connections", "--not-updated-for", "180d")
    assert result.code == 0
    assert result.out.splitlines() == [
        "not updated for 180d (2)",
        "ACCOUNT/INTEGRATION  TYPE          NAME     DOMAIN          UPDATED",
        "acme/billing         api_key       key_a    narrow.exampl~  2025-11-13",
        "acme/crm             bearer_token  crm_tok  crm-tok.examp~  2025-03-01",
        "",
        "no updated_at known (4)",
        "ACCOUNT/INTEGRATION  TYPE   NAME   DOMAIN          UPDATED",
        "acme/billing         oauth  tok_c  tok-c.example~  -",
        "acme/billing         oauth  tok_d  tok-d.example~  -",
        "acme/billing         oauth  tok_e  tok-e.example~  -",
        "acme/billing         oauth  tok_f  tok-f.example~  -",
        "6 connections",
    ]


def test_include_removed(history: Harness) -> None:
    history.zis.delete("acme", "crm", "bearer_token", "crm_tok")
    sync_at(history, T3 + timedelta(days=1))
    assert names(as_json(history, "connections", "--integration", "crm")) == set()
    rows = as_json(history, "connections", "--integration", "crm", "--include-removed")
    assert [(r["name"], r["removed_at"]) for r in rows] == [("crm_tok", "2026-05-02T12:00:00Z")]
    table = history.run("connections", "--integration", "crm", "--include-removed").out.splitlines()
    assert table[1].startswith("*acme/crm") and table[-1] == "* removed (removed_at is set)"


def test_changes_with_filters(history: Harness) -> None:
    rows = as_json(history, "changes", "--since", "2026-04-01")
    assert [
        (r["detected_at"], r["name"], r["change"], r["field"], r["old_value"], r["new_value"])
        for r in rows
    ] == [
        (
            "2026-04-01T12:00:00Z",
            "key_a",
            "modified",
            "allowed_domain",
            "a.example.com",
            "narrow.example.com",
        ),
        ("2026-04-01T12:00:00Z", "user_b", "removed", None, None, None),
        ("2026-05-01T12:00:00Z", "user_b", "restored", None, None, None),
        ("2026-05-01T12:00:00Z", "tok_f", "added", None, None, None),
    ]
    assert list(rows[0]) == [
        "id",
        "snapshot_id",
        "detected_at",
        "account",
        "integration",
        "type",
        "name",
        "change",
        "field",
        "old_value",
        "new_value",
    ]
    assert {r["name"] for r in as_json(history, "changes", "--until", "2026-04-01")} == {
        "key_a",
        "user_b",
        "tok_c",
        "tok_d",
        "tok_e",
        "crm_tok",
    }
    assert {
        (r["name"], r["change"])
        for r in as_json(history, "changes", "--change", "removed,restored")
    } == {("user_b", "removed"), ("user_b", "restored")}
    assert {r["name"] for r in as_json(history, "changes", "--since", "45d")} == {"tok_f", "user_b"}
    (added,) = as_json(history, "changes", "--change", "added", "--since", "2026-05-01T00:00:00Z")
    by_snapshot = as_json(history, "changes", "--snapshot", str(added["snapshot_id"]))
    assert [r["name"] for r in by_snapshot] == ["user_b", "tok_f"]
    csv_rows = list(
        csv.reader(
            io.StringIO(history.run("changes", "--change", "modified", "--format", "csv").out)
        )
    )
    assert [row[2:] for row in csv_rows] == [
        [
            "detected_at",
            "account",
            "integration",
            "type",
            "name",
            "change",
            "field",
            "old_value",
            "new_value",
        ],
        [
            "2026-04-01T12:00:00Z",
            "acme",
            "billing",
            "api_key",
            "key_a",
            "modified",
            "allowed_domain",
            "a.example.com",
            "narrow.example.com",
        ],
    ]
    table = history.run("changes", "--change", "modified").out.splitlines()
    assert table == [
        "DETECTED          ACCOUNT/INTEGRATION  TYPE     NAME   CHANGE",
        "2026-04-01 12:00  acme/billing         api_key  key_a  modified",
        "    allowed_domain: a.example.com -> narrow.example.com",
        "1 change",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("changes", "--since", "yesterday"),
            "Invalid value for '--since': 'yesterday' is not a duration (7d, 12h, 90m), a date or an RFC 3339 time",
        ),
        (
            ("changes", "--change", "added,deleted"),
            "Invalid value for '--change': deleted (choose from added, removed, modified, restored)",
        ),
        (
            ("connections", "--expiring-within", "30"),
            "Invalid value for '--expiring-within': '30' is not a duration such as 30d, 12h or 90m",
        ),
        (
            ("connections", "--as-of", "2026-13-01"),
            "Invalid value for '--as-of': '2026-13-01' is not a date (2026-06-01) or an RFC 3339 time (2026-06-01T12:00:00Z)",
        ),
        (
            ("connections", "--as-of", "2026-01-01", "--include-removed"),
            "--as-of and --include-removed cannot be combined",
        ),
        (("snapshots", "--limit", "0"), "Invalid value for '--limit': 0 is not in the range x>=1."),
        (
            ("check", "--max-age", "2 days"),
            "Invalid value for '--max-age': '2 days' is not a duration such as 30d, 12h or 90m",
        ),
    ],
)
def test_bad_values_exit_2_naming_the_option(
    history: Harness, args: tuple[str, ...], message: str
) -> None:
    result = history.run(*args)
    assert result.code == 2
    assert message in result.err


def test_snapshots_report(history: Harness) -> None:
    history.zis.integration("acme", "crm").token = "rotated-elsewhere"
    sync_at(history, T3 + timedelta(hours=1), code=1)
    rows = as_json(history, "snapshots", "--limit", "4")
    assert {
        (
            r["run_id"],
            r["integration"],
            r["status"],
            r["added"],
            r["removed"],
            r["modified"],
            r["restored"],
            r["connection_count"],
            r["seconds"] >= 0,
        )
        for r in rows
    } == {
        (4, "crm", "failed", 0, 0, 0, 0, 0, True),
        (4, "billing", "complete", 0, 0, 0, 0, 6, True),
        (3, "billing", "complete", 1, 0, 0, 1, 6, True),
        (3, "crm", "complete", 0, 0, 0, 0, 1, True),
    }
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert list(rows[0]) == [
        "id",
        "run_id",
        "account",
        "integration",
        "started_at",
        "finished_at",
        "seconds",
        "status",
        "connection_count",
        "added",
        "removed",
        "modified",
        "restored",
        "pages",
        "error",
        "superseded_by",
    ]
    failed = as_json(history, "snapshots", "--failed")
    assert [(r["integration"], r["error"]) for r in failed] == [
        ("crm", "acme/crm: page 1: HTTP 401 InvalidCredentials: Token length is invalid")
    ]
    table = history.run("snapshots", "--failed").out.splitlines()
    assert table[0] == "ID  STARTED           ACCOUNT/INTEGRATION  STATUS  CONN  +A -R ~M ^R"
    assert table[1].split()[1:] == [
        "2026-05-01",
        "13:00",
        "acme/crm",
        "failed",
        "0",
        "+0",
        "-0",
        "~0",
        "^0",
    ]
    assert table[2:] == [
        "    acme/crm: page 1: HTTP 401 InvalidCredentials: Token length is invalid",
        "1 snapshot",
    ]


def test_check_exit_codes(history: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    result = history.run("check", "--max-age", "60d")
    assert result.code == 1
    assert result.out.splitlines() == [
        "EXPIRED (1)",
        "ACCOUNT/INTEGRATION  TYPE   NAME   WHEN        DETAIL",
        "acme/billing         oauth  tok_d  2026-05-31  expired 0m ago",
        "",
        "EXPIRING within 14d (0)",
        "ACCOUNT/INTEGRATION  TYPE  NAME  WHEN  DETAIL",
        "",
        "STALE: no complete snapshot within 60d (0)",
        "ACCOUNT/INTEGRATION  TYPE  NAME  WHEN  DETAIL",
        "",
        "NO EXPIRY KNOWN (oauth; not an alert) (1)",
        "ACCOUNT/INTEGRATION  TYPE   NAME   WHEN  DETAIL",
        "acme/billing         oauth  tok_e  -     no expiry known",
        "2 findings",
        "check: FAILED: 1 expired, 0 expiring, 0 stale",
        # ZIS004 tok_d, and ZIS010 for both integrations (its max_age is 2d, not --max-age)
        "findings: FAILED: 3 unsuppressed at or above high (python -m inventory findings)",
    ]
    rows = as_json_code(history, 1, "check", "--expiring-within", "30d")
    # billing and crm last completed at T3, a month before NOW: both stale at the 2d default
    assert [(r["kind"], r["integration"], r["name"], r["detail"]) for r in rows] == [
        ("expired", "billing", "tok_d", "expired 0m ago"),
        ("expiring", "billing", "tok_c", "expires in 30d"),
        ("stale", "billing", None, "last 30d ago"),
        ("stale", "crm", None, "last 30d ago"),
        ("no_expiry", "billing", "tok_e", "no expiry known"),
    ]
    history.zis.delete("acme", "billing", "oauth", "tok_d")
    sync_at(history, NOW - timedelta(hours=1))
    ok = history.run("check")
    assert ok.code == 0
    assert ok.out.splitlines()[-1] == "check: OK (1 with no expiry known)"
    assert as_json_code(
        history, 1, "check", "--expiring-within", "30d", "--integration", "billing"
    ) == [
        {
            "kind": "expiring",
            "account": "acme",
            "integration": "billing",
            "type": "oauth",
            "name": "tok_c",
            "at": "2026-07-01T00:00:00Z",
            "detail": "expires in 30d",
        },
        {
            "kind": "no_expiry",
            "account": "acme",
            "integration": "billing",
            "type": "oauth",
            "name": "tok_e",
            "at": None,
            "detail": "no expiry known",
        },
    ]


def as_json_code(h: Harness, code: int, *args: str) -> list[dict[str, Any]]:
    result = h.run(*args, "--format", "json")
    assert result.code == code, result.err
    return list(json.loads(result.out))


def test_reports_on_an_empty_or_missing_database_exit_2(cli: Harness) -> None:
    cli.write_config("", acme=["billing"])
    for command in ("connections", "changes", "snapshots", "check"):
        result = cli.run(command)
        assert result.code == 2, command
        if cli.db_url.startswith("sqlite"):
            path = cli.db_url.removeprefix("sqlite:///")
            assert (
                result.err
                == f"configuration error: database {path} does not exist; run a sync first\n"
            )
        else:
            assert "has no zis-inventory schema; run 'python -m inventory sync'" in result.err
    if cli.db_url.startswith("sqlite"):
        assert not Path(cli.db_url.removeprefix("sqlite:///")).exists()
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    result = cli.run("connections")
    assert (result.code, result.out) == (
        0,
        "ACCOUNT/INTEGRATION  TYPE  NAME  DOMAIN  EXPIRES\n0 connections\n",
    )
    assert cli.run("changes", "--format", "json").out == "[]\n"
    assert cli.run("snapshots", "--format", "csv").out.startswith(
        "id,run_id,account,integration,started_at"
    )


def test_reports_never_write(history: Harness) -> None:
    engine = store.make_engine(history.db_url, readonly=True)
    try:
        # SQLite: OperationalError (a read-only file); PostgreSQL: InternalError (25006).
        with (
            pytest.raises((OperationalError, InternalError), match=r"(?i)read-only|readonly"),
            engine.begin() as conn,
        ):
            conn.exec_driver_sql("DELETE FROM connections")
    finally:
        engine.dispose()
    if history.db_url.startswith("sqlite"):
        path = Path(history.db_url.removeprefix("sqlite:///"))
        before = path.read_bytes()
        for command in ("connections", "changes", "snapshots"):
            assert history.run(command).code == 0
        assert path.read_bytes() == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_database_error_while_reading_is_named_once(history: Harness) -> None:
    """A report on a database at the schema head that lacks a table fails at the store's
    boundary: exit 1, one line saying what failed, no SQL and no traceback."""
    engine = store.make_engine(history.db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE connection_changes")
    finally:
        engine.dispose()
    result = history.run("changes")
    reader = store.make_engine(history.db_url, readonly=True)  # the URL the report opened
    where = store.safe_url(reader.url.render_as_string(hide_password=False))
    reader.dispose()
    assert (result.code, result.out) == (1, "")
    assert (
        result.err == f"database error: cannot read: {where}: no such table: connection_changes\n"
    )
