"""The demo, the README's first command: two syncs, the changes, and no secret anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.cli import main
from inventory.testing import SAMPLE_CLIENTS, SENTINEL

from .helpers import dump_database, query


def test_demo_shows_the_changes_and_keeps_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "demo.db"
    assert main(["demo", "--database", str(db)]) == 0
    out, err = capsys.readouterr()
    url = f"sqlite:///{db}"
    c = m.ConnectionChange
    s = m.Snapshot
    second = query(
        url,
        select(c.integration, c.type, c.name, c.change, c.field, c.old_value, c.new_value)
        .join(s, s.id == c.snapshot_id)
        .where(s.run_id == 2),
    )
    assert {r[:5] for r in second} == {
        ("billing_sync", "oauth", "xero", "modified", "token_expiry"),
        ("crm_bridge", "api_key", "gong_key", "added", None),
        ("crm_bridge", "api_key", "clearbit_key", "modified", "allowed_domain"),
        ("crm_bridge", "api_key", "clearbit_key", "modified", "updated_at"),
        ("slack_alerts", "basic_auth", "statuspage_bot", "removed", None),
        ("crm_bridge", "oauth_client", "salesforce", "modified", "token_url"),
    }
    # The OAuth clients are stored without their client_id or client_secret; the
    # redirected token_url is one critical finding, which the demo prints.
    assert query(url, select(m.OAuthClient.integration, m.OAuthClient.name)) == {
        (integration, name) for integration, name in SAMPLE_CLIENTS
    }
    f = m.Finding
    assert query(url, select(f.rule, f.integration, f.name).where(f.severity == "critical")) == {
        ("ZIS012", "crm_bridge", "salesforce")
    }
    assert any(
        line.split()[:4] == ["ZIS012", "crm_bridge", "oauth_client", "salesforce"]
        and "from salesforce.example.com to sso.attacker.example at" in line
        for line in out.splitlines()
    )
    assert (
        "crm_bridge",
        "api_key",
        "clearbit_key",
        "modified",
        "allowed_domain",
        "*.example.com",
        "person.clearbit.com",
    ) in second
    assert query(url, select(m.Connection.type).distinct()) == {
        ("api_key",),
        ("basic_auth",),
        ("bearer_token",),
        ("oauth",),
    }
    assert query(url, select(s.run_id, s.status).distinct()) == {(1, "complete"), (2, "complete")}
    lines = out.splitlines()
    assert "4. What connection_changes recorded in the second sync:" in lines
    assert any(
        line.split() == ["slack_alerts", "basic_auth", "statuspage_bot", "removed"]
        for line in lines
    )
    assert "SELECT detected_at, integration, type, name, change, field, old_value, new_value" in out
    # The registry lists one integration that nobody configured, and discover says so.
    i = m.RegistryIntegration
    assert query(url, select(i.name, i.configured, i.removed_at)) == {
        ("billing_sync", True, None),
        ("crm_bridge", True, None),
        ("slack_alerts", True, None),
        ("legacy_ftp_export", False, None),
    }
    assert any(line.split()[:3] == ["acme", "legacy_ftp_export", "no"] for line in lines)
    assert (
        '{ name = "legacy_ftp_export", token_env = "ACME_LEGACY_FTP_EXPORT_ZIS_TOKEN" },' in lines
    )
    assert "inventory.discovery" not in err  # quiet, like the per-snapshot lines
    assert SENTINEL not in out + err
    assert SENTINEL not in repr(dump_database(url))
    assert SENTINEL.encode() not in db.read_bytes()
    # Run again: the previous demo database is replaced, not added to.
    assert main(["demo", "--database", str(db)]) == 0
    assert query(url, select(m.SyncRun.id)) == {(1,), (2,)}


def test_demo_refuses_to_overwrite_another_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "precious.db"
    other.write_text("my notes")
    assert main(["demo", "--database", str(other)]) == 2
    assert capsys.readouterr().out == (
        f"demo: {other} exists and is not a zis-inventory database; choose another --database\n"
    )
    assert other.read_text() == "my notes"
