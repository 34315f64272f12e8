"""One matrix for the promise that no secret comes out: every command, in every output and
log format, at DEBUG, through success and failure paths, with sentinels in every secret
field and in the tokens. The Harness then searches every table, output and file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.testing import Fault, malformed, rate_limited, sample_client, server_error

from .helpers import (
    NO_FINDINGS,
    SCHEDULE,
    Harness,
    Receiver,
    configure_webhook,
    dump_database,
    leaky,
    query,
    seed,
    snapshot_count,
    wait_for,
)
from .helpers import start as start_daemon
from .helpers import stop as stop_daemon

FORMATS = ("table", "json", "csv")


def rows_of_findings(url: str) -> set[tuple[object, ...]]:
    f = m.Finding
    return query(url, select(f.rule, f.detail))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_comes_out_of_any_command(cli: Harness, log_format: str) -> None:
    # The registry's items carry sentinels in the OAuth client's secret, the JWT key and
    # an unknown field; the admin's API token is a sentinel too (basic auth).
    cli.registry("acme", [leaky("billing"), leaky("not_configured", "Nobody watches it")], "basic")
    seed(
        cli,
        {"acme": {"billing": 2, "crm": 1, "ops": 1}},
        extra_sync="page_size = 3\nmax_retries = 1",
    )
    # OAuth clients with client_id, client_secret and an unknown field holding sentinels,
    # one of them redirected and one removed later, so every client table holds rows.
    for name in ("billing", "crm", "ops"):
        cli.zis.put_client("acme", name, sample_client(f"{name}_app", name))
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert cli.config is not None
    cli.config.write_text(  # accepted: check and findings below stay below fail_on
        cli.config.read_text()
        + "".join(
            f'\n[[findings.suppress]]\nrule = "{rule}"\ntype = "oauth_client"\n'
            f'reason = "test clients"\nuntil = "{until}"\n'
            for rule in ("ZIS011", "ZIS012")
        )
    )
    run = lambda *args: cli.run(*args, log_format=log_format)  # noqa: E731
    assert run("sync").code == 0
    cli.zis.update_client(
        "acme", "ops", sample_client("ops_app", "ops")["uuid"], token_url="http://x.example/t"
    )
    cli.zis.put_client("acme", "billing", sample_client("billing_two", "billing"))
    cli.zis.delete_client("acme", "billing", sample_client("billing_app", "billing")["uuid"])
    # Failure paths: a server that echoes the token, rate limits, 5xx, a malformed page.
    token = cli.token("acme", "crm")
    echo = json.dumps({"errors": [{"code": "Bad", "title": f"token {token} is not valid here"}]})
    cli.zis.fail("acme", "crm", Fault("status", times=1000, status=401, body=echo.encode()))
    cli.zis.fail("acme", "billing", rate_limited("0", times=5, page=2))
    cli.zis.fail("acme", "ops", server_error(503, times=1))
    assert run("sync", "--format", "json").code == 1
    cli.zis.fail("acme", "ops", malformed(page=1))
    assert run("sync").code == 1
    # The registry fails too, echoing the admin's token: the listing row keeps it redacted.
    admin = cli.token("acme", "(admin)")
    echo = json.dumps({"errors": [{"code": "1001", "detail": f"token {admin} is revoked"}]})
    cli.zis.fail_registry("acme", Fault("status", times=2, status=401, body=echo.encode()))
    assert run("sync", "--strict-discovery").code == 1
    assert run("discover").code == 1
    r = m.RegistryListing
    assert query(cli.db_url, select(r.status, r.error)) == {
        ("complete", None),
        ("failed", "acme/registry: page 1: HTTP 401 1001: token [REDACTED] is revoked"),
    }
    # The sentinel search below covers the new tables: they hold rows.
    dump = dump_database(cli.db_url)
    assert dump["integrations"] and dump["registry_listings"] and dump["row_digests"]
    assert dump["oauth_clients"] and dump["oauth_client_versions"]
    assert {r[0] for r in rows_of_findings(cli.db_url)} >= {"ZIS011", "ZIS012"}
    s = m.Snapshot
    assert query(
        cli.db_url, select(s.error).where(s.integration == "crm", s.status == "failed")
    ) == {("acme/crm: page 1: HTTP 401 Bad: token [REDACTED] is not valid here",)}
    cfg = ("--config", str(cli.config))
    for fmt in FORMATS:
        for args in (
            ("connections",),
            ("connections", "--include-removed", "--expiring-within", "3650d", "--expired"),
            ("connections", "--as-of", "2030-01-01"),
            ("changes", "--since", "1d"),
            ("snapshots", "--failed"),
            ("clients", "--include-removed"),
            ("clients", "--as-of", "2030-01-01"),
        ):
            assert run(*args, "--format", fmt).code == 0, args
        assert run("check", "--format", fmt).code == 0  # every integration completed today
        # Nothing at or above high now; in 2030 every integration is stale (ZIS010, high).
        assert run("findings", "--format", fmt).code == 0
        as_of_2030 = ("findings", "--include-suppressed", "--as-of", "2030-01-01")
        assert run(*as_of_2030, "--format", fmt).code == 1
        assert run("db", "check", *cfg, "--format", fmt).code == 0
        assert run("db", "verify", *cfg, "--format", fmt).code == 0
        assert run("doctor", *cfg, "--format", fmt).code == 1  # crm still answers 401
        if fmt != "csv":
            assert run("discover", "--format", fmt).code == 0
    assert run("findings", "--format", "ocsf", "--include-suppressed").code == 0
    assert run("findings", "--explain", "ZIS001").code == 0
    assert rows_of_findings(cli.db_url)  # the findings table was written, and searched
    pack = str(cli.tmp_path / "evidence")  # every file of it is searched too
    assert run("evidence", *cfg, "--out", pack, "--since", "1d").code == 0
    assert run("evidence", "verify", pack).code == 0
    assert run("db", "current", *cfg).code == 0
    assert run("db", "heads", *cfg).code == 0
    assert run("db", "upgrade", *cfg).code == 0
    assert run("demo", "--database", str(cli.tmp_path / "demo.db")).code == 0
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=1))
    before = snapshot_count(cli, "billing")
    daemon = start_daemon(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") > before)
    finally:
        code, _, logs = stop_daemon(cli, daemon)
    assert code == 0 and logs


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_sink_url_secret_or_header_comes_out_of_notifications(
    cli: Harness, log_format: str
) -> None:
    """Sinks whose URL, signing secret and header value are sentinels, through failing
    and working deliveries, every command that touches them and the daemon: the harness
    then searches the outbox (payloads included), every table, output and file."""
    receiver = Receiver()
    receiver.up()
    try:
        # The registry lists an integration nobody configured (a run_findings message), and
        # the rules are on: every payload type and event kind is made and searched.
        cli.registry("acme", [leaky("billing"), leaky("not_configured", "Nobody watches it")])
        configure_webhook(
            cli,
            receiver,
            {"billing": 1},
            sink='events = ["added", "modified", "failed", "finding", "expiring", "expired"]',
        )
        assert cli.config is not None
        cli.config.write_text(cli.config.read_text().replace(NO_FINDINGS, ""))
        slack_url = receiver.url.replace("URL-PATH", "SLACK-PATH")
        cli.monkeypatch.setenv("SLACK_URL", slack_url)
        cli.tokens[("notify", "slack")] = slack_url
        cli.config.write_text(
            cli.config.read_text()
            + '\n[[notify]]\nname = "chat"\nkind = "slack"\nurl_env = "SLACK_URL"\n'
        )
        run = lambda *args: cli.run(*args, log_format=log_format)  # noqa: E731
        cfg = ("--config", str(cli.config))
        receiver.default = 500
        assert run("sync").code == 0
        receiver.down()
        cli.zis.update(
            "acme", "billing", "api_key", "billing_api_key_0", allowed_domain="*.x.example"
        )
        assert run("sync").code == 0
        assert run("notify", *cfg).code == 0
        assert run("notify", *cfg, "--test", "siem").code == 1  # refused
        receiver.up()
        receiver.default = 200
        assert run("notify", *cfg).code == 0
        for sink in ("siem", "chat"):
            test = run("notify", *cfg, "--test", sink)
            assert test.code == 0, test
        assert "chat (slack, http://127.0.0.1:" in test.out and "/***): HTTP 200: ok" in test.out
        for fmt in FORMATS:
            assert run("notifications", *cfg, "--format", fmt).code == 0
            assert run("doctor", *cfg, "--send-test", "--format", fmt).code == 0
        assert {g.headers.get("authorization") for g in receiver.got} >= {
            cli.tokens[("notify", "auth")]
        }
        slack = [g for g in receiver.got if "webhook-id" not in g.headers]
        assert slack and all("blocks" in g.payload for g in slack)
        cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=1))
        cli.zis.update(
            "acme", "billing", "api_key", "billing_api_key_0", allowed_domain="y.example"
        )
        before = snapshot_count(cli, "billing")
        daemon = start_daemon(cli)
        try:
            wait_for(lambda: snapshot_count(cli, "billing") > before)
            wait_for(lambda: not pending(cli))
        finally:
            code, _, logs = stop_daemon(cli, daemon)
        assert code == 0 and logs
        n = m.Notification
        assert {r[0] for r in query(cli.db_url, select(n.event))} == {
            "first_inventory", "run_findings", "snapshot",
        }  # fmt: skip
        kinds = {
            e["change"]
            for (payload,) in query(cli.db_url, select(n.payload))
            for e in json.loads(payload)["events"]
        }
        assert kinds == {"finding_opened", "finding_resolved", "modified"}
    finally:
        receiver.down()


def pending(cli: Harness) -> list[tuple[object, ...]]:
    n = m.Notification
    return sorted(query(cli.db_url, select(n.id).where(n.status == "pending")))
