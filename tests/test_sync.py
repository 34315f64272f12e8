"""End to end through the real CLI entry point against the loopback fake ZIS server,
on SQLite and PostgreSQL; every test ends with the no-secret check (conftest.Harness)."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from inventory import models as m
from inventory import store
from inventory import sync as sync_module
from inventory.config import (
    Account,
    DatabaseSettings,
    Integration,
    ScheduleSettings,
    Settings,
    Sink,
    SyncSettings,
)
from inventory.secret import Secret
from inventory.testing import (
    FakeZisServer,
    malformed,
    pagination_loop,
    rate_limited,
    sample_item,
    server_error,
)
from inventory.testing import FakeZisServer as FakeServerType

from .helpers import (
    HEAD,
    Harness,
    changes,
    expected_keys,
    failed_error,
    items,
    last_changes,
    present,
    query,
    seed,
    snapshots,
    with_clients,
)

STAMP = datetime(2025, 3, 1, 10, 0, 0, 520000, tzinfo=UTC)


def test_first_sync_records_every_connection_as_added(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 2, "crm": 1}, "globex": {"ops": 3}})
    result = cli.run("sync")
    assert result.code == 0, result.err
    assert f"database migrated from empty to {HEAD}" in result.err
    keys = (
        expected_keys("acme", "billing", 2)
        | expected_keys("acme", "crm", 1)
        | expected_keys("globex", "ops", 3)
    )
    assert present(cli.db_url) == keys
    assert changes(cli.db_url) == {(k[1], k[2], k[3], "added", None, None, None) for k in keys}
    assert {row[2:] for row in snapshots(cli.db_url)} == {
        ("acme", "billing", "complete", 8, 8, 0, 0, 0, 3),
        ("acme", "crm", "complete", 4, 4, 0, 0, 0, 2),
        ("globex", "ops", "complete", 12, 12, 0, 0, 0, 4),
    }
    r = m.SyncRun
    assert query(cli.db_url, select(r.id, r.trigger, r.status, r.error)) == {
        (1, "cli", "complete", None)
    }
    # The whole allow-listed row of one connection of each type.
    c = m.Connection
    assert query(
        cli.db_url,
        select(
            c.type,
            c.name,
            c.allowed_domain,
            c.created_at,
            c.updated_at,
            c.header_name,
            c.username,
            c.created_by,
            c.oauth_url_subdomain,
            c.permission_scope,
            c.token_type,
            c.token_expiry,
            c.oauth_client_uuid,
            c.removed_at,
        ).where(c.integration == "crm"),
    ) == {
        (
            "api_key",
            "crm_api_key_0",
            "crm-api-key-0.example.com",
            STAMP,
            STAMP,
            "x-api-key",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            "basic_auth",
            "crm_basic_auth_0",
            "crm-basic-auth-0.example.com",
            STAMP,
            STAMP,
            None,
            "crm_basic_auth_0@example.com",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            "bearer_token",
            "crm_bearer_token_0",
            "crm-bearer-token-0.example.com",
            STAMP,
            STAMP,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            "oauth",
            "crm_oauth_0",
            "crm-oauth-0.example.com",
            None,
            None,
            None,
            None,
            "admin_user",
            "acme",
            "read write",
            "bearer",
            datetime(2027, 1, 1, tzinfo=UTC),
            "11111111-2222-4333-8444-555555555555",
            None,
        ),
    }
    v = m.ConnectionVersion
    assert (
        query(
            cli.db_url, select(v.account, v.integration, v.type, v.name).where(v.valid_to.is_(None))
        )
        == keys
    )
    # Every request identified itself, and each integration used its own token.
    assert {r.user_agent for r in cli.zis.requests} == {"zis-inventory/0.1.0"}
    assert all(r.authorized for r in cli.zis.requests)
    assert summary_rows(result.out) == [
        [
            "ACCOUNT",
            "INTEGRATION",
            "STATUS",
            "ADDED",
            "REMOVED",
            "MODIFIED",
            "RESTORED",
            "CONNECTIONS",
            "PAGES",
        ],
        ["acme", "billing", "complete", "8", "0", "0", "0", "8", "3"],
        ["acme", "crm", "complete", "4", "0", "0", "0", "4", "2"],
        ["globex", "ops", "complete", "12", "0", "0", "0", "12", "4"],
    ]
    assert result.out.splitlines()[-2:] == [
        "run 1: complete (3 of 3 snapshots complete)",
        f"  database migrated from empty to {HEAD}",
    ]


def summary_rows(out: str) -> list[list[str]]:
    """The summary table without its SECONDS column (timing varies)."""
    table = []
    for line in out.splitlines():
        if line.startswith("run "):
            return table
        table.append(line.split()[:9])
    raise AssertionError(f"no run line in {out!r}")


def test_second_sync_records_every_change_kind_and_writes_nothing_for_unchanged(
    cli: Harness,
) -> None:
    seed(cli, {"acme": {"billing": 3}})
    assert cli.run("sync").code == 0
    c = m.Connection
    before = query(cli.db_url, select(c.type, c.name, c.last_changed_at))
    # Unchanged resync: a snapshot row and nothing else.
    assert cli.run("sync").code == 0
    assert len(changes(cli.db_url)) == 12
    assert query(cli.db_url, select(c.type, c.name, c.last_changed_at)) == before
    zis = cli.zis
    zis.put("acme", "billing", "api_key", sample_item("api_key", "brand_new"))
    zis.delete("acme", "billing", "bearer_token", "billing_bearer_token_1")
    zis.update(
        "acme",
        "billing",
        "basic_auth",
        "billing_basic_auth_0",
        allowed_domain="narrow.example.com",
        password="ZIS-SENTINEL-SECRET-rotated-password",
    )
    zis.update(
        "acme",
        "billing",
        "oauth",
        "billing_oauth_2",
        token_expiry="",
        created_by="someone_else",
        access_token="ZIS-SENTINEL-SECRET-new-access",
    )
    zis.update(
        "acme",
        "billing",
        "oauth",
        "billing_oauth_1",
        refresh_token="ZIS-SENTINEL-SECRET-only-a-secret",
    )
    result = cli.run("sync", "--format", "json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["status"] == "complete" and summary["run_id"] == 3
    assert [
        {
            k: s[k]
            for k in (
                "account",
                "integration",
                "status",
                "added",
                "removed",
                "modified",
                "restored",
                "connection_count",
                "pages",
                "error",
            )
        }
        for s in summary["snapshots"]
    ] == [
        {
            "account": "acme",
            "integration": "billing",
            "status": "complete",
            "added": 1,
            "removed": 1,
            "modified": 2,
            "restored": 0,
            "connection_count": 12,
            "pages": 4,
            "error": None,
        }
    ]
    s = m.Snapshot
    third = {i for (i,) in query(cli.db_url, select(s.id).where(s.run_id == 3))}
    assert changes(cli.db_url, third) == {
        ("billing", "api_key", "brand_new", "added", None, None, None),
        ("billing", "bearer_token", "billing_bearer_token_1", "removed", None, None, None),
        (
            "billing",
            "basic_auth",
            "billing_basic_auth_0",
            "modified",
            "allowed_domain",
            "billing-basic-auth-0.example.com",
            "narrow.example.com",
        ),
        (
            "billing",
            "oauth",
            "billing_oauth_2",
            "modified",
            "token_expiry",
            "2027-01-01T00:00:00Z",
            None,
        ),
        (
            "billing",
            "oauth",
            "billing_oauth_2",
            "modified",
            "created_by",
            "admin_user",
            "someone_else",
        ),
    }
    v = m.ConnectionVersion
    versions = query(cli.db_url, select(v.type, v.name, v.allowed_domain, v.valid_to.is_(None)))
    assert (
        "basic_auth",
        "billing_basic_auth_0",
        "billing-basic-auth-0.example.com",
        False,
    ) in versions
    assert ("basic_auth", "billing_basic_auth_0", "narrow.example.com", True) in versions
    assert len(versions) == 12 + 1 + 2  # one per connection, the new one, and two new versions
    removed = query(
        cli.db_url, select(c.name, c.removed_at.is_not(None)).where(c.type == "bearer_token")
    )
    assert removed == {
        ("billing_bearer_token_0", False),
        ("billing_bearer_token_1", True),
        ("billing_bearer_token_2", False),
    }
    assert query(
        cli.db_url, select(v.name).where(v.type == "bearer_token", v.valid_to.is_(None))
    ) == {("billing_bearer_token_0",), ("billing_bearer_token_2",)}


def test_restore_after_removal(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    item = cli.zis.delete("acme", "billing", "api_key", "billing_api_key_0")
    assert cli.run("sync").code == 0
    cli.zis.put("acme", "billing", "api_key", {**item, "header_name": "x-new-header"})
    result = cli.run("sync")
    assert result.code == 0
    s = m.Snapshot
    assert [row[4:] for row in snapshots(cli.db_url)] == [
        ("complete", 4, 4, 0, 0, 0, 2),
        ("complete", 3, 0, 1, 0, 0, 1),
        ("complete", 4, 0, 0, 0, 1, 2),
    ]
    last = {i for (i,) in query(cli.db_url, select(s.id).where(s.run_id == 3))}
    assert changes(cli.db_url, last) == {
        ("billing", "api_key", "billing_api_key_0", "restored", None, None, None),
        (
            "billing",
            "api_key",
            "billing_api_key_0",
            "modified",
            "header_name",
            "x-api-key",
            "x-new-header",
        ),
    }
    v = m.ConnectionVersion
    history = sorted(
        query(
            cli.db_url, select(v.valid_from, v.valid_to, v.header_name).where(v.type == "api_key")
        ),
        key=lambda r: r[0],
    )
    assert [(h[2], h[1] is None) for h in history] == [("x-api-key", False), ("x-new-header", True)]
    assert history[0][1] < history[1][0]  # a gap while it was removed
    assert ("acme", "billing", "api_key", "billing_api_key_0") in present(cli.db_url)


def test_a_failing_page_fails_that_snapshot_only(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 2, "crm": 2}}, extra_sync="page_size = 3\nmax_retries = 1")
    assert cli.run("sync").code == 0
    cli.zis.delete("acme", "billing", "api_key", "billing_api_key_0")
    cli.zis.delete("acme", "crm", "api_key", "crm_api_key_0")
    cli.zis.fail("acme", "billing", server_error(500, times=10, page=2))
    result = cli.run("sync")
    assert result.code == 1
    assert "acme/billing: page 2: gave up after 2 attempts: HTTP 500" in result.out
    assert [row[1:] for row in snapshots(cli.db_url)][2:] == [
        (2, "acme", "billing", "failed", 0, 0, 0, 0, 0, 1),
        (2, "acme", "crm", "complete", 7, 0, 1, 0, 0, 3),
    ] or [row[1:] for row in snapshots(cli.db_url)][2:] == [
        (2, "acme", "crm", "complete", 7, 0, 1, 0, 0, 3),
        (2, "acme", "billing", "failed", 0, 0, 0, 0, 0, 1),
    ]
    # Nothing of billing was removed although its second page never arrived.
    assert expected_keys("acme", "billing", 2) <= present(cli.db_url)
    s = m.Snapshot
    assert query(cli.db_url, select(s.error).where(s.status == "failed")) == {
        ("acme/billing: page 2: gave up after 2 attempts: HTTP 500",)
    }
    r = m.SyncRun
    assert query(cli.db_url, select(r.id, r.status).where(r.id == 2)) == {(2, "partial")}


def test_malformed_json_fails_the_snapshot(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.fail("acme", "billing", malformed(page=2))
    result = cli.run("sync")
    assert result.code == 1
    assert failed_error(cli) == {
        (
            "billing",
            "failed",
            "acme/billing: page 2: response is not valid JSON (application/json, 28 bytes)",
        )
    }
    assert present(cli.db_url) == set()
    assert "Traceback" not in result.err


@pytest.mark.parametrize("value", ["a\x00b", "x\ud800y"], ids=["nul", "surrogate"])
def test_text_no_database_can_store_fails_that_snapshot_only(cli: Harness, value: str) -> None:
    """Valid JSON can carry a NUL or an unpaired surrogate; neither can be stored (nor
    printed), so the snapshot fails at the parsing boundary, on either database."""
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    cli.zis.update("acme", "billing", "api_key", "billing_api_key_0", allowed_domain=value)
    result = cli.run("sync")
    assert result.code == 1
    assert failed_error(cli) == {
        (
            "billing",
            "failed",
            "acme/billing: page 1: api_key[0] (billing_api_key_0): field 'allowed_domain' "
            "holds a NUL character or an unpaired surrogate, which cannot be stored as text",
        )
    }
    assert present(cli.db_url) == expected_keys("acme", "crm", 1)
    assert "Traceback" not in result.err


@contextmanager
def edited_by_hand(h: Harness, column: str, sql_value: str) -> Iterator[sqlite3.Connection]:
    """The SQLite row of billing_api_key_0 in connections with ``column`` set to
    ``sql_value`` (SQL) outside zis-inventory; the stored value is put back on leaving."""
    db = sqlite3.connect(h.db_url.removeprefix("sqlite:///"), isolation_level=None)
    where = "WHERE name = 'billing_api_key_0'"
    try:
        stored = db.execute(f'SELECT "{column}" FROM connections {where}').fetchone()[0]
        db.execute(f'UPDATE connections SET "{column}" = {sql_value} {where}')
        yield db
        db.execute(f'UPDATE connections SET "{column}" = ? {where}', (stored,))
    finally:
        db.close()


def test_an_unreadable_stored_timestamp_fails_that_snapshot_only(cli: Harness) -> None:
    if not cli.db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL timestamptz column cannot hold an unreadable value")
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    assert cli.run("sync").code == 0
    cli.zis.update("acme", "billing", "api_key", "billing_api_key_0", allowed_domain="new.com")
    with edited_by_hand(cli, "created_at", "'yesterday'") as db:

        def inventory() -> list[list[tuple[Any, ...]]]:
            return [
                db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in ("connections", "connection_versions", "connection_changes")
            ]

        before = inventory()
        result = cli.run("sync")
        assert result.code == 1
        assert failed_error(cli) == {
            (
                "billing",
                "failed",
                "acme/billing: the connections row of api_key 'billing_api_key_0' holds an "
                "unreadable timestamp (changed outside zis-inventory?); nothing written",
            )
        }
        assert inventory() == before
        assert "Traceback" not in result.err
    assert cli.run("sync").code == 0  # the billing change is applied once the row is sound
    assert {c for c in changes(cli.db_url) if c[3] != "added"} == {
        (
            "billing",
            "api_key",
            "billing_api_key_0",
            "modified",
            "allowed_domain",
            "billing-api-key-0.example.com",
            "new.com",
        )
    }


def test_a_binary_value_stored_by_hand_fails_that_snapshot_only(cli: Harness) -> None:
    if not cli.db_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL text column cannot hold a binary value")
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    assert cli.run("sync").code == 0
    with edited_by_hand(cli, "allowed_domain", "x'00ff'"):
        # The pages are the last applied snapshot's: no stored row needs reading.
        assert cli.run("sync").code == 0
        result = cli.run("sync", "--compare-all")
    assert result.code == 1
    ((integration, status, error),) = failed_error(cli)
    assert (integration, status) == ("billing", "failed")
    assert error == (
        "acme/billing: the connections row of api_key 'billing_api_key_0' holds a value "
        "that is not text (changed outside zis-inventory?); nothing written"
    )
    assert "Traceback" not in result.err
    assert cli.run("sync").code == 0  # sound again: nothing to record
    assert {c for c in changes(cli.db_url) if c[3] != "added"} == set()


class StateReads:
    """The integrations whose stored rows a sync read: every row, or some by key."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[str] = []
        self.by_key: set[str] = set()
        load_state = store.IntegrationTransaction.load_state

        def spy(tx: store.IntegrationTransaction, *where: Any, **kind: Any) -> Any:
            if kind.get("kind") is store.CLIENTS:  # the OAuth clients are read every time
                pass
            elif where:
                self.by_key.add(tx.integration)
            else:
                self.reads.append(tx.integration)
            return load_state(tx, *where, **kind)

        monkeypatch.setattr(store.IntegrationTransaction, "load_state", spy)

    def taken(self) -> list[str]:
        """The integrations every row of which was read since the last call, in name
        order."""
        reads, self.reads = sorted(self.reads), []
        return reads

    def keyed(self) -> list[str]:
        """The integrations some rows of which were read by key since the last call."""
        reads, self.by_key = sorted(self.by_key), set()
        return reads


def digests(url: str) -> list[tuple[Any, ...]]:
    s = m.Snapshot
    return sorted(query(url, select(s.id, s.integration, s.status, s.fetched_digest)))


def test_pages_the_same_as_the_last_applied_ones_compare_no_rows(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 2, "crm": 2}})
    reads = StateReads(cli.monkeypatch)
    assert cli.run("sync").code == 0
    assert reads.taken() == ["billing", "crm"]
    assert cli.run("sync").code == 0
    assert reads.taken() == []  # nothing changed: no stored row read
    cli.zis.update("acme", "crm", "oauth", "crm_oauth_1", permission_scope="read")
    assert cli.run("sync").code == 0
    # The integration that changed only, and of it the row whose digest differs.
    assert (reads.taken(), reads.keyed()) == ([], ["crm"])
    assert cli.run("sync", "--compare-all").code == 0
    assert reads.taken() == ["billing", "crm"]
    assert {c for c in changes(cli.db_url) if c[3] != "added"} == {
        ("crm", "oauth", "crm_oauth_1", "modified", "permission_scope", "read write", "read")
    }
    # Every complete snapshot records what its pages gave: the same pages, the same digest.
    rows = digests(cli.db_url)
    assert {(i, status) for _, i, status, _ in rows} == {
        ("billing", "complete"),
        ("crm", "complete"),
    }
    billing = [d for _, i, _, d in rows if i == "billing"]
    crm = [d for _, i, _, d in rows if i == "crm"]
    assert len(billing) == len(crm) == 4
    assert len(set(billing)) == 1 and crm[0] == crm[1] != crm[2] == crm[3]
    assert all(re.fullmatch("[0-9a-f]{64}", d) for d in billing + crm), billing + crm
    assert billing[0] != crm[0]


def test_rows_inserted_or_deleted_by_hand_are_compared(cli: Harness) -> None:
    """The digest says the pages are the same; the count of present rows says the table
    is not what they left: the rows are compared, and the difference recorded."""
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    reads = StateReads(cli.monkeypatch)
    url = cli.db_url
    engine = store.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                m.Connection.__table__.delete().where(m.Connection.name == "billing_oauth_0")
            )
    finally:
        engine.dispose()
    assert cli.run("sync").code == 0
    assert reads.taken() == ["billing"]
    assert last_changes(url) == {("billing", "oauth", "billing_oauth_0", "added", None, None, None)}
    assert present(url) == expected_keys("acme", "billing", 1)
    assert cli.run("sync").code == 0
    assert reads.taken() == []


def test_a_held_snapshot_is_not_taken_for_the_stored_rows(cli: Harness) -> None:
    """A held snapshot applied nothing: its pages are compared with the rows the last
    applied one left, every time, until they are accepted."""
    seed(cli, {"acme": {"billing": 3}})
    assert cli.run("sync").code == 0
    kept = items("billing", 3)[:2] + items("other", 3)[2:]  # as many present as before
    for type_name, item in items("billing", 3)[2:]:
        cli.zis.delete("acme", "billing", type_name, item["name"])
    for type_name, item in items("other", 3)[2:]:
        cli.zis.put("acme", "billing", type_name, item)
    reads = StateReads(cli.monkeypatch)
    assert cli.run("sync").code == 1
    assert cli.run("sync").code == 1
    assert reads.taken() == ["billing", "billing"]
    assert [r[4] for r in snapshots(cli.db_url)] == ["complete", "held", "held"]
    assert cli.run("sync", "--accept-removals").code == 0
    assert reads.taken() == ["billing"]
    assert present(cli.db_url) == {("acme", "billing", t, i["name"]) for t, i in kept}
    assert cli.run("sync").code == 0
    assert reads.taken() == []


def test_pagination_loop_fails_the_snapshot(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.fail("acme", "billing", pagination_loop(page=2))
    assert cli.run("sync").code == 1
    assert failed_error(cli) == {
        ("billing", "failed", "acme/billing: page 2: pagination loop: cursor seen twice")
    }


def test_429_then_success(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.fail("acme", "billing", rate_limited("1", page=2))
    result = cli.run("sync")
    assert result.code == 0, result.out
    assert present(cli.db_url) == expected_keys("acme", "billing", 1)
    assert [(r.clients, r.status) for r in cli.zis.requests] == [
        (False, 200),
        (False, 429),
        (False, 200),
        (True, 200),  # then its OAuth clients
    ]


def test_5xx_then_success(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.fail("acme", "billing", server_error(502, times=2, page=1))
    assert cli.run("sync").code == 0
    assert [r.status for r in cli.zis.requests if not r.clients] == [502, 502, 200, 200]
    assert present(cli.db_url) == expected_keys("acme", "billing", 1)


def test_a_bad_token_fails_without_retry_and_never_shows_the_token(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    cli.zis.integration("acme", "billing").token = "another-token"
    result = cli.run("sync")
    assert result.code == 1
    assert failed_error(cli) == {
        (
            "billing",
            "failed",
            "acme/billing: page 1: HTTP 401 InvalidCredentials: Token length is invalid",
        )
    }
    assert [(r.integration, r.status) for r in cli.zis.requests if r.integration == "billing"] == [
        ("billing", 401)
    ]
    assert present(cli.db_url) == expected_keys("acme", "crm", 1)


def test_forbidden_and_unknown_integration(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.integration("acme", "billing").forbidden = True
    cli.write_config("", acme=["billing", "ghost"])
    assert cli.run("sync").code == 1
    assert failed_error(cli) == {
        (
            "billing",
            "failed",
            "acme/billing: page 1: HTTP 403 Forbidden: Cannot access this resource. Missing scope read",
        ),
        ("ghost", "failed", "acme/ghost: page 1: HTTP 404 NotFound: Integration not found"),
    }


def test_mass_removal_is_held_until_accepted(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 3}})
    assert cli.run("sync").code == 0
    for t in ("api_key", "basic_auth", "bearer_token"):
        for i in range(3):
            cli.zis.delete("acme", "billing", t, f"billing_{t}_{i}")
    result = cli.run("sync")
    assert result.code == 1
    held = (
        "acme/billing: would remove 9 of 12 present connections (75% > sync.max_removal_ratio 50%); "
        "nothing applied; re-run sync with --accept-removals to apply"
    )
    assert failed_error(cli) == {("billing", "held", held)}
    assert f"held: {held}" in result.out
    assert len(present(cli.db_url)) == 12 and len(changes(cli.db_url)) == 12
    result = cli.run("sync", "--accept-removals")
    assert result.code == 0
    assert present(cli.db_url) == {
        ("acme", "billing", "oauth", f"billing_oauth_{i}") for i in range(3)
    }
    assert [row[4:] for row in snapshots(cli.db_url)] == [
        ("complete", 12, 12, 0, 0, 0, 4),
        ("held", 3, 0, 0, 0, 0, 1),
        ("complete", 3, 0, 9, 0, 0, 1),
    ]


def test_unknown_type_is_kept_and_reported_once(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    for name in ("billing", "crm"):
        cli.zis.integration("acme", name).extra_top_level = {
            "jwt": [
                {
                    "name": f"{name}_signer",
                    "private_key": "ZIS-SENTINEL-SECRET-jwt",
                    "allowed_domain": "x.io",
                }
            ]
        }
    result = cli.run("sync")
    assert result.code == 0
    c = m.Connection
    assert query(
        cli.db_url, select(c.integration, c.name, c.allowed_domain).where(c.type == "jwt")
    ) == {("billing", "billing_signer", "x.io"), ("crm", "crm_signer", "x.io")}
    assert result.err.count("connection type 'jwt' is not known to this version") == 1
    assert "drift: unknown connection type 'jwt' in acme/billing, acme/crm" in result.out


def test_no_migrate_refuses_an_empty_database(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    result = cli.run("sync", "--no-migrate")
    assert result.code == 1
    assert (
        f"database error: database is empty, not at schema head {HEAD}; run "
        "'python -m inventory db upgrade'" in result.err
    )
    assert cli.zis.requests == []
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    result = cli.run("sync", "--no-migrate")
    assert result.code == 0
    assert "migrated" not in result.err


def test_db_commands(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cfg = str(cli.config)
    shown = store.safe_url(cli.db_url)
    assert (
        cli.run("db", "current", "--config", cfg).out
        == f"{shown}: revision none (empty), head {HEAD}: needs 'db upgrade'\n"
    )
    assert (
        cli.run("db", "upgrade", "--config", cfg).out == f"{shown}: migrated from empty to {HEAD}\n"
    )
    assert cli.run("db", "upgrade", "--config", cfg).out == f"{shown}: already at revision {HEAD}\n"
    assert (
        cli.run("db", "current", "--config", cfg).out
        == f"{shown}: revision {HEAD}, head {HEAD}: up to date\n"
    )


def test_filters_select_integrations(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1, "crm": 1}, "globex": {"ops": 1}})
    assert cli.run("sync", "--account", "acme", "--integration", "crm").code == 0
    assert present(cli.db_url) == expected_keys("acme", "crm", 1)
    result = cli.run("sync", "--account", "initech")
    assert result.code == 2
    assert (
        result.err
        == "configuration error: --account initech: not a configured account (configured: acme, globex)\n"
    )


def test_unreachable_database_exits_1(cli: Harness, zis: FakeZisServer) -> None:
    seed(cli, {"acme": {"billing": 1}})
    bad = "postgresql://nobody:hunter2@127.0.0.1:1/none"
    cli.monkeypatch.setenv("INVENTORY_DATABASE_URL", bad)
    result = cli.run("sync")
    assert result.code == 1
    assert result.err.startswith(
        "database error: database unreachable: postgresql+psycopg://nobody:***@127.0.0.1:1/none: "
    )
    assert "hunter2" not in result.err and zis.requests == []


def test_json_logs_one_object_per_line_with_the_snapshot_fields(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    cli.zis.fail("acme", "billing", server_error(503, page=1))
    result = cli.run("sync", log_format="json")
    assert result.code == 0
    records = [json.loads(line) for line in result.err.splitlines()]
    snapshot_lines = [r for r in records if r.get("integration") == "billing"]
    assert len(snapshot_lines) == 1
    line = snapshot_lines[0]
    assert {
        k: line[k]
        for k in (
            "level",
            "logger",
            "account",
            "integration",
            "status",
            "added",
            "removed",
            "modified",
            "restored",
            "connection_count",
            "pages",
        )
    } == {
        "level": "info",
        "logger": "inventory.sync",
        "account": "acme",
        "integration": "billing",
        "status": "complete",
        "added": 4,
        "removed": 0,
        "modified": 0,
        "restored": 0,
        "connection_count": 4,
        "pages": 2,
    }
    assert line["message"].startswith("acme/billing: complete: +4 added")


def test_an_older_view_committed_late_is_recorded_but_not_applied(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    cli.zis.delete("acme", "billing", "api_key", "billing_api_key_0")
    # A sync whose fetch started before the one already applied (as when two overlap).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: datetime(2000, 1, 1, tzinfo=UTC))
        result = cli.run("sync")
    assert result.code == 0
    assert "acme/billing: not applied, snapshot 1 saw the account later" in result.out
    s = m.Snapshot
    assert query(cli.db_url, select(s.id, s.status, s.superseded_by, s.removed)) == {
        (1, "complete", None, 0),
        (2, "complete", 1, 0),
    }
    assert len(changes(cli.db_url)) == 4
    assert cli.run("sync").code == 0  # a current view applies the removal
    assert changes(cli.db_url, {3}) == {
        ("billing", "api_key", "billing_api_key_0", "removed", None, None, None)
    }


def rate_limit_windows(zis: FakeServerType) -> Counter[int]:
    return Counter(zis.window(r.at) for r in zis.requests if r.status == 429)


def test_quota_headers_avoid_every_429(cli: Harness) -> None:
    seed(cli, {"acme": {"a": 2, "b": 2, "c": 2, "d": 2}}, extra_sync="page_size = 1")
    cli.zis.rate_limit, cli.zis.quota_headers = (10, 1.0), True
    result = cli.run("sync")
    assert result.code == 0
    assert [r.status for r in cli.zis.requests].count(429) == 0
    assert len(present(cli.db_url)) == 32


def test_without_quota_headers_a_spent_window_costs_at_most_one_429(cli: Harness) -> None:
    seed(cli, {"acme": {"a": 2, "b": 2, "c": 2, "d": 2}}, extra_sync="page_size = 1")
    cli.zis.rate_limit = (10, 1.0)
    result = cli.run("sync")
    assert result.code == 0
    per_window = rate_limit_windows(cli.zis)
    first = min(per_window)
    assert per_window[first] <= 4  # the requests already in flight when the first window ran out
    assert all(n == 1 for w, n in per_window.items() if w != first), per_window
    assert len(present(cli.db_url)) == 32


def one_key_integrations(names: list[str]) -> tuple[httpx.MockTransport, Account]:
    """Account acme with an integration of each of ``names``, each holding one key."""
    body = {
        "api_key": [sample_item("api_key", "only_key")],
        "meta": {"has_more": False, "after": None},
    }
    transport = httpx.MockTransport(with_clients(lambda request: httpx.Response(200, json=body)))
    account = Account(
        "acme",
        "https://acme.zendesk.com",
        tuple(Integration("acme", n, Secret("t")) for n in names),
    )
    return transport, account


def sync_pages(tmp_path: Path, pages: list[dict[str, Any]]) -> tuple[Any, set[tuple[Any, ...]]]:
    """One sync of integration acme/crm whose pages are ``pages``: its result, and the
    connections present afterwards."""

    def page(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params.get("page[after]", "0"))
        more = number + 1 < len(pages)
        meta = {"has_more": more, "after": str(number + 1) if more else None}
        return httpx.Response(200, json={**pages[number], "meta": meta})

    transport = httpx.MockTransport(with_clients(page))
    account = Account(
        "acme", "https://acme.zendesk.com", (Integration("acme", "crm", Secret("t")),)
    )
    url = f"sqlite:///{tmp_path / 'pages.db'}"
    settings = Settings(
        "(test)", url, DatabaseSettings(), SyncSettings(), ScheduleSettings(), (account,)
    )
    engine = store.engine_for(settings)
    try:
        store.ensure_schema(engine, migrate=True)
        result = sync_module.run_sync(settings, engine, transport=lambda a: transport)
    finally:
        engine.dispose()
    return result, present(url)


@pytest.mark.parametrize(
    ("pages", "error"),
    [
        (  # on a later page
            [{"api_key": [{"name": "a"}, {"name": "b"}]}, {"api_key": [{"name": "c"}, {"name": "b"}]}],
            "acme/crm: page 2: api_key connection 'b' appears twice (the account changed while paging?)",
        ),
        (  # on the same page
            [{"oauth": [{"name": "x"}]}, {"basic_auth": [{"name": "y"}, {"name": "z"}, {"name": "y"}]}],
            "acme/crm: page 2: basic_auth connection 'y' appears twice (the account changed while paging?)",
        ),
    ],
)  # fmt: skip
def test_a_connection_twice_in_one_fetch_fails_the_snapshot_naming_it(
    tmp_path: Path, pages: list[dict[str, Any]], error: str
) -> None:
    result, rows = sync_pages(tmp_path, pages)
    assert [(s.status, s.error) for s in result.snapshots] == [("failed", error)]
    assert rows == set()


def test_one_name_in_two_types_is_two_connections(tmp_path: Path) -> None:
    pages = [
        {"api_key": [{"name": "a"}], "oauth": [{"name": "a"}]},
        {"basic_auth": [{"name": "a"}]},
    ]
    result, rows = sync_pages(tmp_path, pages)
    assert [s.status for s in result.snapshots] == ["complete"]
    assert rows == {("acme", "crm", t, "a") for t in ("api_key", "oauth", "basic_auth")}


def test_no_more_integrations_are_held_than_sync_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From its first page until its snapshot is committed, an integration holds one of
    sync.concurrency places: a slow write makes the next fetches wait instead of piling
    up fetched sets in memory."""
    names = [f"i{n}" for n in range(8)]
    transport, account = one_key_integrations(names)
    settings = Settings(
        "(test)", f"sqlite:///{tmp_path / 'held.db'}", DatabaseSettings(),
        SyncSettings(concurrency=3), ScheduleSettings(), (account,),
    )  # fmt: skip
    engine = store.engine_for(settings)
    store.ensure_schema(engine, migrate=True)
    lock, held, most = threading.Lock(), [0], [0]
    real_fetch, real_apply = sync_module.fetch, sync_module.apply

    def counted_fetch(*args: Any) -> Any:
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        return real_fetch(*args)

    def slow_apply(*args: Any) -> Any:
        time.sleep(0.05)
        try:
            return real_apply(*args)
        finally:
            with lock:
                held[0] -= 1

    monkeypatch.setattr(sync_module, "fetch", counted_fetch)
    monkeypatch.setattr(sync_module, "apply", slow_apply)
    result = sync_module.run_sync(settings, engine, transport=lambda a: transport)
    engine.dispose()
    assert [s.status for s in result.snapshots] == ["complete"] * 8
    assert (held[0], most[0]) == (0, 3)


def test_a_run_keeps_only_the_findings_its_end_tells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until its end a run keeps, of what each committed snapshot's findings opened and
    resolved, the findings about no connection only (the ones the run's end tells): the
    others (told with their snapshot) are not held for the whole run."""
    names = ["i0", "i1", "i2"]
    transport, account = one_key_integrations(names)
    settings = Settings(
        "(test)", f"sqlite:///{tmp_path / 'kept.db'}", DatabaseSettings(),
        SyncSettings(concurrency=2), ScheduleSettings(), (account,),
        notify=(Sink("siem", "webhook", Secret("https://example.invalid/x")),),
    )  # fmt: skip
    engine = store.engine_for(settings)
    store.ensure_schema(engine, migrate=True)
    told: list[Any] = []
    real_enqueue_run = sync_module.enqueue_run

    def kept(conn: Any, settings: Any, run_id: int, found: Any, now: datetime) -> None:
        told.extend((f.rule, f.integration, f.type) for one in found for f in one.opened)
        told.extend((f.rule, f.integration, f.type) for one in found for f in one.resolved)
        real_enqueue_run(conn, settings, run_id, found, now)

    monkeypatch.setattr(sync_module, "enqueue_run", kept)
    result = sync_module.run_sync(settings, engine, transport=lambda a: transport)
    engine.dispose()
    opened = query(
        settings.database_url, text("SELECT rule, integration, type, name FROM findings")
    )
    assert [s.status for s in result.snapshots] == ["complete"] * 3
    # Each snapshot opened a finding about its connection (its key is older than a year)...
    assert opened == {("ZIS003", n, "api_key", "only_key") for n in names}
    # ...which the run did not keep for its end: it holds none about no connection either.
    assert told == []
