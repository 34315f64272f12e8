"""`discover` and the registry in `sync`, end to end through the CLI against the fake
server, on SQLite and PostgreSQL: the integrations table's add/remove/restore, a failed
listing that changes nothing, the snippet that syncs, and no secret anywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory import store
from inventory.registry import RegisteredIntegration, RegistryListing
from inventory.store.registry import apply_listing
from inventory.testing import (
    REGISTRY,
    SENTINEL,
    Fault,
    pagination_loop,
    rate_limited,
    server_error,
)

from .helpers import Harness, items, leaky, query

T1 = datetime(2026, 5, 1, tzinfo=UTC)
T2 = datetime(2026, 5, 2, tzinfo=UTC)
T3 = datetime(2026, 5, 3, tzinfo=UTC)


REGISTRY_ITEMS = [
    leaky("billing", "Invoices from Stripe"),
    leaky("legacy_export", "Nightly export to the old ERP"),
    leaky("crm", ""),
]


def setup(cli: Harness, kind: str = "oauth", extra_sync: str = "", **more: list[str]) -> None:
    """acme: billing and crm configured (and synced), legacy_export only in the registry."""
    for name in ("billing", "crm"):
        cli.zis.add_integration("acme", name, cli.token("acme", name), items(name, 1))
    cli.registry("acme", list(REGISTRY_ITEMS), kind)
    cli.write_config(extra_sync, acme=["billing", "crm"], **more)


def integrations(url: str) -> set[tuple[Any, ...]]:
    i = m.RegistryIntegration
    return query(
        url,
        select(
            i.account,
            i.name,
            i.description,
            i.first_seen_at,
            i.last_seen_at,
            i.removed_at,
            i.configured,
        ),
    )


def listings(url: str) -> list[tuple[Any, ...]]:
    r = m.RegistryListing
    return sorted(
        query(
            url,
            select(
                r.id,
                r.run_id,
                r.account,
                r.started_at,
                r.status,
                r.integration_count,
                r.added,
                r.removed,
                r.restored,
                r.pages,
                r.error,
                r.superseded_by,
            ),
        )
    )


def snapshot_statuses(url: str) -> set[tuple[Any, ...]]:
    s = m.Snapshot
    return query(url, select(s.run_id, s.integration, s.status))


@pytest.mark.parametrize("kind", ["basic", "oauth"])
def test_discover_lists_the_registry_and_prints_a_snippet(cli: Harness, kind: str) -> None:
    setup(cli, kind)
    result = cli.run("discover")
    assert result.code == 0, result.err
    assert result.out == (
        "ACCOUNT  INTEGRATION    CONFIGURED  DESCRIPTION\n"
        "acme     billing        yes         Invoices from Stripe\n"
        "acme     crm            yes\n"
        "acme     legacy_export  no          Nightly export to the old ERP\n"
        "3 integrations, 1 not configured\n"
        "\n"
        f"# acme: add to accounts[0].integrations in {cli.config}; each ZIS token is\n"
        "# bound to one integration: export each variable with that integration's token.\n"
        '{ name = "legacy_export", token_env = "ACME_LEGACY_EXPORT_ZIS_TOKEN" },\n'
    )
    registry_requests = [r for r in cli.zis.requests if r.integration == REGISTRY]
    assert [(r.account, r.authorized, r.status) for r in registry_requests] == [("acme", True, 200)]
    assert [r for r in cli.zis.requests if r.integration != REGISTRY] == []  # no connections


def test_discover_as_json_and_a_configured_integration_missing_from_the_registry(
    cli: Harness,
) -> None:
    setup(cli, ghost=["old_one"])  # a second account whose admin is not set
    cli.zis.unregister("acme", "crm")
    result = cli.run("discover", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == [
        {
            "account": "acme",
            "status": "complete",
            "error": None,
            "integrations": [
                {"name": "billing", "description": "Invoices from Stripe", "configured": True},
                {
                    "name": "legacy_export",
                    "description": "Nightly export to the old ERP",
                    "configured": False,
                },
            ],
            "configured_not_in_registry": ["crm"],
            "snippet": '{ name = "legacy_export", token_env = "ACME_LEGACY_EXPORT_ZIS_TOKEN" },',
        },
        {
            "account": "ghost",
            "status": "no admin",
            "error": None,
            "integrations": [],
            "configured_not_in_registry": [],
            "snippet": "",
        },
    ]
    table = cli.run("discover", "--account", "acme").out.splitlines()
    assert table[3:5] == [
        "2 integrations, 1 not configured",
        "  acme: configured but not in the registry: crm",
    ]


def test_discover_exit_codes(cli: Harness) -> None:
    for name in ("billing", "crm"):
        cli.zis.add_integration("acme", name, cli.token("acme", name))
    cli.write_config(acme=["billing", "crm"])
    result = cli.run("discover")
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        f"configuration error: {cli.config}: accounts: no account has admin credentials; "
        'discover needs admin = { email = "...", token_env = "NAME" } (an API token) or '
        'admin = { oauth_token_env = "NAME" } (see config.example.toml)\n'
    )
    assert cli.run("discover", "--account", "nope").code == 2
    setup(cli, "basic")
    cli.zis.registry("acme").forbidden = True
    result = cli.run("discover")
    assert result.code == 1
    assert result.out == (
        "ACCOUNT  INTEGRATION  CONFIGURED  DESCRIPTION\n"
        "0 integrations, 0 not configured\n"
        "  acme: the registry could not be read: "
        "acme/registry: page 1: HTTP 403 1003: Forbidden: admins only\n"
    )
    cli.zis.registry("acme").forbidden = False
    cli.monkeypatch.setenv(cli.admin_env("acme"), "revoked-token")
    result = cli.run("discover")
    assert result.code == 1
    assert "acme/registry: page 1: HTTP 401 1001: Couldn't authenticate you" in result.out
    cli.monkeypatch.delenv(cli.admin_env("acme"))
    result = cli.run("discover")
    assert result.code == 2
    assert result.err == (
        f"configuration error: {cli.config}: accounts[0].admin.token_env: environment "
        f"variable {cli.admin_env('acme')} is not set or empty; "
        f"export {cli.admin_env('acme')}=<an admin's API token>\n"
    )


def test_the_snippet_pasted_into_the_config_syncs(cli: Harness) -> None:
    setup(cli)
    snippet = [line for line in cli.run("discover").out.splitlines() if line.startswith("{")]
    assert cli.config is not None
    text = cli.config.read_text()
    assert text.count("}]\n") == 1
    cli.config.write_text(text.replace("}]\n", "},\n" + "\n".join(snippet) + "\n]\n"))
    token = f"{SENTINEL}-TOKEN-legacy"
    cli.tokens[("acme", "legacy_export")] = token
    cli.monkeypatch.setenv("ACME_LEGACY_EXPORT_ZIS_TOKEN", token)
    cli.zis.add_integration("acme", "legacy_export", token, items("legacy_export", 1))
    result = cli.run("sync")
    assert result.code == 0, result.err
    assert snapshot_statuses(cli.db_url) == {
        (1, "billing", "complete"),
        (1, "crm", "complete"),
        (1, "legacy_export", "complete"),
    }
    assert {(r[1], r[6]) for r in integrations(cli.db_url)} == {
        ("billing", True),
        ("crm", True),
        ("legacy_export", True),
    }
    out = cli.run("discover").out
    assert "3 integrations, 0 not configured" in out and "{ name" not in out


def test_sync_keeps_the_registry_added_removed_restored(cli: Harness) -> None:
    setup(cli)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: T1)
        first = cli.run("sync")
        assert first.code == 0, first.err
        patch.setattr(store, "now", lambda: T2)
        cli.zis.unregister("acme", "legacy_export")
        cli.zis.unregister("acme", "crm")
        cli.zis.register("acme", leaky("crm", "Now described"))
        second = cli.run("sync")
        assert second.code == 0, second.err
        assert integrations(cli.db_url) == {
            ("acme", "billing", "Invoices from Stripe", T1, T2, None, True),
            ("acme", "crm", "Now described", T1, T2, None, True),
            ("acme", "legacy_export", "Nightly export to the old ERP", T1, T1, T2, False),
        }
        patch.setattr(store, "now", lambda: T3)
        cli.zis.register("acme", leaky("legacy_export", "Back"))
        third = cli.run("sync", "--format", "json")
        assert third.code == 0, third.err
    assert integrations(cli.db_url) == {
        ("acme", "billing", "Invoices from Stripe", T1, T3, None, True),
        ("acme", "crm", "Now described", T1, T3, None, True),
        ("acme", "legacy_export", "Back", T1, T3, None, False),
    }
    assert listings(cli.db_url) == [
        (1, 1, "acme", T1, "complete", 3, 3, 0, 0, 1, None, None),
        (2, 2, "acme", T2, "complete", 2, 0, 1, 0, 1, None, None),
        (3, 3, "acme", T3, "complete", 3, 0, 0, 1, 1, None, None),
    ]
    assert first.out.splitlines()[-1] == (
        "  registry: acme/registry: complete: 3 integrations, 1 not configured; "
        "+3 added, -0 removed, ^0 restored"
    )
    assert (
        "acme/registry: complete: 2 integrations, 0 not configured; +0 added, -1 removed"
        in second.err
    )
    assert json.loads(third.out)["registry"] == [
        {
            "account": "acme",
            "status": "complete",
            "integration_count": 3,
            "not_configured": 1,
            "added": 0,
            "removed": 0,
            "restored": 1,
            "pages": 1,
            "error": None,
            "listing_id": 3,
            "superseded_by": None,
        }
    ]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (
            Fault("status", times=1000, status=401, body=b"Couldn't authenticate you"),
            "acme/registry: page 1: HTTP 401: Couldn't authenticate you",
        ),
        (
            server_error(503, times=1000),
            "acme/registry: page 1: gave up after 2 attempts: HTTP 503",
        ),
        (
            rate_limited("0", times=1000),
            "acme/registry: page 1: gave up after 2 attempts: HTTP 429",
        ),
    ],
    ids=["401", "503", "429"],
)
def test_sync_goes_on_when_the_registry_fails(cli: Harness, fault: Fault, error: str) -> None:
    setup(cli, extra_sync="max_retries = 1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: T1)
        assert cli.run("sync").code == 0
        before = integrations(cli.db_url)
        patch.setattr(store, "now", lambda: T2)
        cli.zis.registry("acme").items = []  # would remove all three, had it been read
        cli.zis.fail_registry("acme", fault)
        result = cli.run("sync")
        assert result.code == 0, result.err
        assert cli.run("sync", "--strict-discovery").code == 1
    if fault.status == 429:
        error += " rate limited"
    assert integrations(cli.db_url) == before  # nothing changed, nothing removed
    assert [row[4:] for row in listings(cli.db_url)] == [
        ("complete", 3, 3, 0, 0, 1, None, None),
        ("failed", 0, 0, 0, 0, 0, error, None),
        ("failed", 0, 0, 0, 0, 0, error, None),
    ]
    assert snapshot_statuses(cli.db_url) == {
        (run, name, "complete") for run in (1, 2, 3) for name in ("billing", "crm")
    }
    assert f"WARNING inventory.discovery: acme/registry: failed: {error}" in result.err
    assert result.out.splitlines()[-2:] == [
        "run 2: complete (2 of 2 snapshots complete)",
        f"  registry: acme/registry: failed: {error}",
    ]


def test_a_429_pauses_and_the_listing_then_succeeds(cli: Harness) -> None:
    setup(cli)
    cli.zis.fail_registry("acme", rate_limited("0", times=1))
    cli.zis.fail_registry("acme", server_error(502, times=1))
    assert cli.run("sync").code == 0
    assert [r[4:8] for r in listings(cli.db_url)] == [("complete", 3, 3, 0)]
    registry_statuses = [r.status for r in cli.zis.requests if r.integration == REGISTRY]
    assert registry_statuses == [429, 502, 200]


@pytest.mark.parametrize("pagination", ["meta", "next_page", "links"])
def test_a_paginated_registry_and_a_pagination_loop(cli: Harness, pagination: str) -> None:
    setup(cli)
    fake = cli.zis.registry("acme")
    fake.page_size, fake.pagination = 1, pagination
    assert cli.run("sync").code == 0
    assert [r[4:10] for r in listings(cli.db_url)] == [("complete", 3, 3, 0, 0, 3)]
    cli.zis.fail_registry("acme", pagination_loop(page=2))
    assert cli.run("sync").code == 0
    assert listings(cli.db_url)[-1][4:11] == (
        "failed",
        0,
        0,
        0,
        0,
        0,
        "acme/registry: page 2: pagination loop: next page seen twice",
    )
    assert len(integrations(cli.db_url)) == 3


def test_an_account_without_admin_lists_nothing(cli: Harness) -> None:
    for name in ("billing",):
        cli.zis.add_integration("acme", name, cli.token("acme", name), items(name, 1))
    cli.write_config(acme=["billing"])
    result = cli.run("sync", "--strict-discovery")
    assert result.code == 0
    assert listings(cli.db_url) == [] and integrations(cli.db_url) == set()
    assert "registry" not in result.out


def test_a_listing_that_started_before_an_applied_one_is_recorded_not_applied(
    db_url: str,
) -> None:
    """Two syncs listing one account at once: the one that started later may write first;
    the older view is then kept as a row (superseded_by) and changes nothing."""
    engine = store.make_engine(db_url)
    try:
        store.ensure_schema(engine, migrate=True)
        run = store.start_run(engine, "cli")
        newer = RegistryListing("acme", (RegisteredIntegration("a", None),), 1)
        older = RegistryListing("acme", (RegisteredIntegration("b", "gone since"),), 1)
        first = apply_listing(engine, run.id, T2, newer, {"a"})
        second = apply_listing(engine, run.id, T1, older, set())
        assert (first.added, first.superseded_by) == (1, None)
        assert (second.added, second.removed, second.superseded_by) == (0, 0, first.listing_id)
        assert integrations(db_url) == {("acme", "a", None, T2, T2, None, True)}
        assert [row[3:] for row in listings(db_url)] == [
            (T2, "complete", 1, 1, 0, 0, 1, None, None),
            (T1, "complete", 1, 0, 0, 0, 1, None, first.listing_id),
        ]
        store.finish_run(engine, run, "complete")
    finally:
        engine.dispose()


def test_doctor_lists_the_registry_once(cli: Harness) -> None:
    setup(cli, "basic")
    result = cli.run("doctor", "--config", str(cli.config), "--format", "json")
    assert result.code == 0, result.out
    probes = {p["subject"]: (p["ok"], p["detail"]) for p in json.loads(result.out)}
    assert probes["acme/registry"] == (True, "HTTP 200, 3 integrations listed")
    cli.zis.registry("acme").forbidden = True
    result = cli.run("doctor", "--config", str(cli.config), "--format", "json")
    assert result.code == 1
    probes = {p["subject"]: (p["ok"], p["detail"]) for p in json.loads(result.out)}
    assert probes["acme/registry"] == (
        False,
        "acme/registry: page 1: HTTP 403 1003: Forbidden: admins only",
    )
