"""notify: the outbox written with each snapshot, and its delivery to a real loopback
receiver, on SQLite and PostgreSQL: every payload type, signatures, outages, dead letters,
a deliverer killed mid-send, two deliverers at once, and the expiry ledger."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from inventory import models as m
from inventory import store
from inventory.config import load_settings
from inventory.metrics import Metrics
from inventory.notify.deliver import Deliverer, Pacer
from inventory.notify.messages import slack_message
from inventory.records import format_timestamp
from inventory.report.notifications import notifications_report
from inventory.store import consumers as store_consumers
from inventory.store.findings import FindingEvents
from inventory.store.outbox import expiry_warnings
from inventory.testing import sample_item, server_error

from .helpers import (
    AUTH,
    SECRET,
    Harness,
    Receiver,
    add_slack_sink,
    assert_valid_slack,
    far_expiry,
    items,
    query,
    rows,
    snapshots,
    sync_at,
    wait_for,
)
from .helpers import (
    configure_webhook as configure,
)

NOW = datetime.now(UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()


def stamp(at: datetime) -> str:
    return format_timestamp(at.replace(microsecond=0))


def outbox(url: str) -> list[tuple[Any, ...]]:
    n = m.Notification
    return sorted(
        query(url, select(n.id, n.sink, n.event, n.account, n.integration, n.snapshot_id, n.status))
    )


def attempts(url: str, notification_id: int) -> list[tuple[Any, ...]]:
    a = m.NotificationAttempt
    return sorted(
        query(
            url,
            select(a.attempt, a.status, a.error, a.outcome).where(
                a.notification_id == notification_id
            ),
        )
    )


def notify(h: Harness, *args: str) -> int:
    assert h.config is not None
    return h.run("notify", "--config", str(h.config), *args).code


@dataclass(frozen=True)
class Finding:
    rule: str
    slug: str
    severity: str
    account: str
    integration: str
    type: str | None
    name: str | None
    detail: str
    first_seen_at: datetime


# --- every payload type ------------------------------------------------------------------


def test_every_event_kind_reaches_the_receiver_signed_as_documented(
    cli: Harness, receiver: Receiver
) -> None:
    soon = (NOW + timedelta(days=10)).replace(microsecond=0)

    def made(name: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        out = far_expiry(items(name, count))
        out[-2][1]["token_expiry"] = format_timestamp(soon)  # oauth_0 expires in 10 days
        return out

    configure(cli, receiver, {"billing": 2}, connections=made)
    z = cli.zis
    # The findings the rules open are tested in test_findings; here the seam passes only
    # the one finding given below, at the snapshot it is given for.
    opened: list[Any] = []
    real = store_consumers.enqueue_snapshot
    cli.monkeypatch.setattr(
        store_consumers,
        "enqueue_snapshot",
        lambda conn, settings, sid, found, now, events: real(
            conn, settings, sid, FindingEvents(list(opened), []), now, events
        ),
    )
    assert cli.run("sync").code == 0  # first inventory, with a 14-day expiry warning
    z.update("acme", "billing", "api_key", "billing_api_key_0", allowed_domain="evil.example.com")
    removed = z.delete("acme", "billing", "basic_auth", "billing_basic_auth_0")
    z.put("acme", "billing", "api_key", sample_item("api_key", "billing_new_key"))
    assert cli.run("sync").code == 0  # added, removed, modified
    z.put("acme", "billing", "basic_auth", removed)
    assert cli.run("sync").code == 0  # restored
    z.fail("acme", "billing", server_error(500, times=2))
    assert cli.run("sync").code == 1  # failed
    assert cli.run("sync").code == 1  # failed again, nothing else: told once
    assert cli.run("sync").code == 0  # recovered
    z.update("acme", "billing", "oauth", "billing_oauth_1", token_expiry="2026-01-01T00:00:00Z")
    assert cli.run("sync").code == 0  # modified token_expiry, and expired
    finding = Finding("ZIS001", "wide-domain", "high", "acme", "billing", "api_key",
                      "billing_api_key_0", "allowed_domain is a wildcard", NOW)  # fmt: skip
    opened.append(finding)  # what the findings engine passes: a finding this snapshot opened
    for t, name in [(t, i["name"]) for t, i in far_expiry(items("billing", 2))][:6]:
        z.delete("acme", "billing", t, name)
    assert cli.run("sync", "--no-notify").code == 1  # held, with the finding inside
    held = max(s[0] for s in snapshots(cli.db_url))
    assert notify(cli) == 0

    got = receiver.delivered()
    assert len(got) == len(receiver.got)  # nothing needed a second attempt
    for g in got:
        assert Webhook(SECRET).verify(g.body, g.headers) == g.payload
        assert g.headers["authorization"] == AUTH
        assert g.payload["id"] == g.webhook_id
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"another-secret").decode()).verify(
                g.body, g.headers
            )
    ids = [s[0] for s in snapshots(cli.db_url)]
    # One message per snapshot; the repeated failure (ids[4]) has nothing to tell.
    assert [(g.payload["type"], g.payload["snapshot_id"]) for g in got] == [
        ("snapshot", ids[0]),
        ("snapshot", ids[1]),
        ("snapshot", ids[2]),
        ("snapshot_failed", ids[3]),
        ("snapshot", ids[5]),
        ("snapshot", ids[6]),
        ("snapshot_failed", held),
    ]
    first, changed = got[0].payload, got[1].payload
    (soon_event,) = first["events"]
    assert soon_event["days_left"] in (9, 10)
    assert first == {
        "type": "snapshot",
        "id": got[0].webhook_id,
        "account": "acme",
        "integration": "billing",
        "snapshot_id": ids[0],
        "detected_at": first["detected_at"],
        "first_inventory": True,
        "connection_count": 8,
        "connection_types": {"api_key": 2, "basic_auth": 2, "bearer_token": 2, "oauth": 2},
        "recovered_from": None,
        "counts": {"added": 8, "removed": 0, "modified": 0, "restored": 0,
                   "finding_opened": 0, "finding_resolved": 0, "expiring": 1, "expired": 0},
        "findings_by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "events": [
            {"change": "expiring", "type": "oauth", "name": "billing_oauth_0",
             "threshold_days": 14, "days_left": soon_event["days_left"],
             "token_expiry": stamp(soon)},
        ],
        "events_total": 1,
        "more": None,
        "summary": "acme/billing: first inventory: 8 connections (2 api_key, 2 basic_auth, "
        "2 bearer_token, 2 oauth); 1 expiring",
    }  # fmt: skip
    assert {k: v for k, v in changed.items() if k != "events"} == {
        "type": "snapshot",
        "id": got[1].webhook_id,
        "account": "acme",
        "integration": "billing",
        "snapshot_id": ids[1],
        "detected_at": changed["detected_at"],
        "first_inventory": False,
        "connection_count": 8,
        "connection_types": {},
        "recovered_from": None,
        "counts": {"added": 1, "removed": 1, "modified": 1, "restored": 0,
                   "finding_opened": 0, "finding_resolved": 0, "expiring": 0, "expired": 0},
        "findings_by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "events_total": 3,
        "more": None,
        "summary": "acme/billing: 1 added, 1 removed, 1 modified",
    }  # fmt: skip
    assert sorted(changed["events"], key=lambda e: e["change"]) == [
        {"change": "added", "type": "api_key", "name": "billing_new_key", "field": None,
         "old_value": None, "new_value": None},
        {"change": "modified", "type": "api_key", "name": "billing_api_key_0",
         "field": "allowed_domain", "old_value": "billing-api-key-0.example.com",
         "new_value": "evil.example.com"},
        {"change": "removed", "type": "basic_auth", "name": "billing_basic_auth_0", "field": None,
         "old_value": None, "new_value": None},
    ]  # fmt: skip
    assert [e["change"] for e in got[2].payload["events"]] == ["restored"]
    failed = got[3].payload
    assert {k: v for k, v in failed.items() if k != "error"} == {
        "type": "snapshot_failed",
        "id": got[3].webhook_id,
        "account": "acme",
        "integration": "billing",
        "snapshot_id": ids[3],
        "detected_at": failed["detected_at"],
        "kind": "failed",
        "status": "failed",
        "previous_status": "complete",
        "counts": {"added": 0, "removed": 0, "modified": 0, "restored": 0,
                   "finding_opened": 0, "finding_resolved": 0, "expiring": 0, "expired": 0},
        "findings_by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "events": [],
        "events_total": 0,
        "more": None,
        "summary": "acme/billing: snapshot failed",
    }  # fmt: skip
    assert failed["error"].startswith("acme/billing: page 1: ")
    recovered = got[4].payload
    assert (recovered["recovered_from"], recovered["events"], recovered["summary"]) == (
        "failed",
        [],
        "acme/billing: recovered (was failed)",
    )
    expired = got[5].payload
    assert expired["events"] == [
        {"change": "expired", "type": "oauth", "name": "billing_oauth_1", "threshold_days": 0,
         "days_left": 0, "token_expiry": "2026-01-01T00:00:00Z"},
        {"change": "modified", "type": "oauth", "name": "billing_oauth_1",
         "field": "token_expiry", "old_value": "2099-01-01T00:00:00Z",
         "new_value": "2026-01-01T00:00:00Z"},
    ]  # fmt: skip
    assert expired["summary"] == "acme/billing: 1 modified; 1 expired"
    on_hold = got[6].payload
    assert (on_hold["kind"], on_hold["previous_status"], on_hold["events"]) == (
        "held",
        "complete",
        [{"change": "finding_opened", "rule": "ZIS001", "slug": "wide-domain",
          "severity": "high", "type": "api_key", "name": "billing_api_key_0",
          "detail": "allowed_domain is a wildcard"}],
    )  # fmt: skip
    assert on_hold["summary"] == "acme/billing: snapshot held; 1 finding opened: 1 high"
    assert on_hold["error"]
    assert {r[6] for r in outbox(cli.db_url)} == {"sent"}
    # The delivery log, as the command shows it.
    out = cli.run("notifications", "--config", str(cli.config), "--format", "json")
    log = json.loads(out.out)
    assert [r["event"] for r in log] == [
        "first_inventory", "snapshot", "snapshot", "failed", "recovered", "snapshot", "held",
    ]  # fmt: skip
    assert [r["webhook_id"] for r in log] == [g.webhook_id for g in got]
    assert [r["summary"] for r in log] == [g.payload["summary"] for g in got]
    assert {(r["status"], r["attempts"], r["last_status"]) for r in log} == {("sent", 1, 200)}
    table = cli.run("notifications", "--config", str(cli.config), "--sink", "siem")
    assert table.code == 0 and "7 notifications" in table.out and "7 sent" in table.out
    for g in got:  # every message as Slack would get it is within Block Kit's limits
        assert_valid_slack(slack_message(g.payload))


def test_a_sink_gets_only_the_events_fields_and_integrations_it_asks_for(
    cli: Harness, receiver: Receiver
) -> None:
    configure(
        cli,
        receiver,
        {"billing": 1, "crm": 1},
        sink='events = ["modified"]\nfields = ["allowed_domain"]\nintegrations = ["billing"]',
    )
    assert cli.run("sync").code == 0  # first inventories: "added", not asked for
    for name in ("billing", "crm"):
        cli.zis.update("acme", name, "api_key", f"{name}_api_key_0", allowed_domain="x.example")
        cli.zis.update("acme", name, "basic_auth", f"{name}_basic_auth_0", username="other")
    cli.zis.delete("acme", "billing", "bearer_token", "billing_bearer_token_0")
    assert cli.run("sync").code == 0
    (got,) = receiver.delivered()
    assert got.payload["integration"] == "billing"
    assert [(e["change"], e["field"]) for e in got.payload["events"]] == [
        ("modified", "allowed_domain")
    ]
    # counts say what the snapshot did; events_total how many events this sink gets.
    assert got.payload["counts"] == {"added": 0, "removed": 1, "modified": 2, "restored": 0,
                                     "finding_opened": 0, "finding_resolved": 0,
                                     "expiring": 0, "expired": 0}  # fmt: skip
    assert got.payload["events_total"] == 1


@pytest.fixture
def chat() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()


def test_a_sync_changing_1100_connections_sends_one_message_per_sink_with_true_counts(
    cli: Harness, receiver: Receiver, chat: Receiver
) -> None:
    configure(cli, receiver, {"billing": 275}, extra_sync="page_size = 100\nmax_retries = 0")
    add_slack_sink(cli, chat)
    assert cli.run("sync", "--no-notify").code == 0
    for type_name, item in items("billing", 275):
        cli.zis.update("acme", "billing", type_name, item["name"], allowed_domain="<!channel>")
    assert cli.run("sync", "--no-notify").code == 0
    first, second = (s[0] for s in snapshots(cli.db_url))
    n = m.Notification
    assert query(cli.db_url, select(n.sink, n.event).where(n.snapshot_id == second)) == {
        ("siem", "snapshot"),
        ("chat", "snapshot"),
    }
    assert len(outbox(cli.db_url)) == 4  # and one row per sink for the first inventory
    assert notify(cli) == 0
    (webhook,) = [g.payload for g in receiver.delivered() if g.payload["snapshot_id"] == second]
    assert webhook["counts"] == {"added": 0, "removed": 0, "modified": 1100, "restored": 0,
                                 "finding_opened": 0, "finding_resolved": 0,
                                 "expiring": 0, "expired": 0}  # fmt: skip
    assert (webhook["events_total"], len(webhook["events"]), webhook["more"]) == (
        1100,
        50,
        {"count": 1050, "commands": [f"python -m inventory changes --snapshot {second}"]},
    )
    assert webhook["summary"] == "acme/billing: 1,100 modified"
    # The command the message names lists the rest.
    listed = cli.run("changes", "--config", str(cli.config), "--snapshot", str(second),
                     "--format", "json")  # fmt: skip
    assert listed.code == 0 and len(json.loads(listed.out)) == 1100
    slack = [g.payload for g in chat.delivered()]
    for message in slack:
        assert_valid_slack(message)
    assert [m["text"] for m in slack] == [
        "`acme/billing`: first inventory: 1,100 connections (275 `api_key`, 275 `basic_auth`, "
        "275 `bearer_token`, 275 `oauth`)",
        "`acme/billing`: 1,100 modified",
    ]
    blocks = slack[1]["blocks"]
    lines = [line for b in blocks[2:-1] for line in b["text"]["text"].split("\n")]
    assert lines[0] == (
        "modified `api_key` `billing_api_key_0` `allowed_domain`: "
        "`billing-api-key-0.example.com` → `&lt;!channel&gt;`"
    )
    assert len(lines) == 51
    assert lines[-1] == f"and 1,050 more: `python -m inventory changes --snapshot {second}`"
    assert "<!channel>" not in json.dumps(slack)
    # Paced: the Slack sink's two messages came at least a second apart (a lower bound).
    arrivals = [g.at for g in chat.delivered()]
    assert arrivals[1] - arrivals[0] >= 0.9
    assert first < second


def test_connections_with_hostile_names_reach_slack_as_text(
    cli: Harness, receiver: Receiver, chat: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1})
    add_slack_sink(cli, chat)
    assert cli.run("sync").code == 0
    for name in ("<!channel>", "<!here>", "<@U123>", "<https://evil.example|x>", "*bold*"):
        cli.zis.put("acme", "billing", "api_key", sample_item("api_key", name))
    assert cli.run("sync").code == 0
    message = chat.delivered()[-1].payload
    assert_valid_slack(message)
    assert message["text"] == "`acme/billing`: 5 added"
    assert message["blocks"][2] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "\n".join([  # in key order, as stored
            "added `api_key` `*bold*`",
            "added `api_key` `&lt;!channel&gt;`",
            "added `api_key` `&lt;!here&gt;`",
            "added `api_key` `&lt;@U123&gt;`",
            "added `api_key` `&lt;https://evil.example|x&gt;`",
        ])},
    }  # fmt: skip
    assert not any(c in json.dumps(message) for c in ("<!", "<@", "<http"))
    # The webhook gets the names as they are (JSON, not mrkdwn).
    webhook = receiver.delivered()[-1].payload
    assert {e["name"] for e in webhook["events"]} == {
        "<!channel>", "<!here>", "<@U123>", "<https://evil.example|x>", "*bold*",
    }  # fmt: skip


def test_the_first_sync_of_the_demo_account_sends_one_summary_per_integration(
    receiver: Receiver, db_url: str
) -> None:
    from inventory.config import (
        Account,
        AdminCredential,
        DatabaseSettings,
        Integration,
        ScheduleSettings,
        Secret,
        Settings,
        Sink,
        SyncSettings,
    )
    from inventory.notify.deliver import deliver_pending
    from inventory.sync import run_sync
    from inventory.testing import ACCOUNT, FakeZisServer, sample_account, sample_registry

    now = datetime.now(UTC).replace(microsecond=0)
    with FakeZisServer() as server:
        integrations = []
        for name, made in sample_account(now).items():
            server.add_integration(ACCOUNT, name, f"token-{name}", made)
            integrations.append(Integration(ACCOUNT, name, Secret(f"token-{name}")))
        server.add_registry(ACCOUNT, sample_registry(), oauth="admin-token")
        account = Account(ACCOUNT, server.base_url(ACCOUNT), tuple(integrations),
                          AdminCredential(Secret("admin-token")))  # fmt: skip
        settings = Settings(
            source="(test)",
            database_url=db_url,
            database=DatabaseSettings(),
            sync=SyncSettings(concurrency=3),
            schedule=ScheduleSettings(),
            accounts=(account,),
            notify=(Sink("siem", "webhook", Secret(receiver.url)),),
        )
        engine = store.make_engine(db_url)
        try:
            store.ensure_schema(engine, migrate=True)
            run_sync(settings, engine)
            assert deliver_pending(engine, settings).line() == (
                "notifications: 4 sent, 0 to retry, 0 dead"
            )
        finally:
            engine.dispose()
    got = sorted((g.payload for g in receiver.delivered()), key=lambda p: p["summary"])
    assert [p["summary"] for p in got] == [
        "acme/billing_sync: first inventory: 12 connections (3 api_key, 3 basic_auth, "
        "3 bearer_token, 3 oauth); 14 findings opened: 1 high, 12 medium, 1 low; 1 expiring",
        "acme/crm_bridge: first inventory: 12 connections (3 api_key, 2 basic_auth, "
        "3 bearer_token, 4 oauth); 14 findings opened: 2 high, 11 medium, 1 low; 1 expired; "
        "1 expiring",
        "acme/slack_alerts: first inventory: 12 connections (3 api_key, 2 basic_auth, "
        "3 bearer_token, 4 oauth); 11 findings opened: 10 medium, 1 low; 1 expiring",
        "run 1: 1 finding opened: 1 medium",
    ]
    for payload in got[:3]:  # the findings named, the most severe first
        severities = [e["severity"] for e in payload["events"] if "severity" in e]
        assert severities == sorted(severities, key=["critical", "high", "medium", "low"].index)
        assert len(payload["events"]) == payload["events_total"]
        assert_valid_slack(slack_message(payload))
    assert [(e["rule"], e["integration"]) for e in got[3]["events"]] == [
        ("ZIS009", "legacy_ftp_export")
    ]


def test_findings_about_no_connection_are_one_message_per_run(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1, "crm": 1})
    assert cli.config is not None
    cli.config.write_text(
        cli.config.read_text().replace(
            "[findings.rules.ZIS010]\nenabled = false",
            '[findings.rules.ZIS010]\nenabled = true\nmax_age = "1d"',
        )
    )
    t1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    sync_at(cli, t1)
    for name in ("billing", "crm"):
        cli.zis.fail("acme", name, server_error(500, times=1))
    sync_at(cli, t1 + timedelta(days=2), code=1)  # both failed: stale, in one message
    sync_at(cli, t1 + timedelta(days=2, hours=1))  # both recovered: resolved, in one
    n = m.Notification
    by_run = select(m.Snapshot.run_id, n.event, n.integration).outerjoin(
        m.Snapshot, m.Snapshot.id == n.snapshot_id
    )
    assert query(cli.db_url, by_run) == {
        (1, "first_inventory", "billing"),
        (1, "first_inventory", "crm"),
        (2, "failed", "billing"),
        (2, "failed", "crm"),
        (None, "run_findings", None),
        (3, "recovered", "billing"),
        (3, "recovered", "crm"),
    }
    assert [r[2] for r in outbox(cli.db_url)][-1] == "run_findings"
    assert len(outbox(cli.db_url)) == 8
    runs = [g.payload for g in receiver.delivered() if g.payload["type"] == "run_findings"]
    detail = "last complete snapshot 2026-03-01T12:00:00Z, more than max_age=1d ago"
    stale = [
        {"change": "finding_opened", "rule": "ZIS010", "slug": "stale-inventory",
         "severity": "high", "type": None, "name": None, "detail": detail,
         "account": "acme", "integration": name}
        for name in ("billing", "crm")
    ]  # fmt: skip
    assert runs == [
        {
            "type": "run_findings",
            "id": runs[0]["id"],
            "account": None,
            "integration": None,
            "snapshot_id": None,
            "run_id": 2,
            "detected_at": format_timestamp(t1 + timedelta(days=2)),
            "counts": {"finding_opened": 2, "finding_resolved": 0},
            "findings_by_severity": {"critical": 0, "high": 2, "medium": 0, "low": 0},
            "events": stale,
            "events_total": 2,
            "more": None,
            "summary": "run 2: 2 findings opened: 2 high",
        },
        {
            "type": "run_findings",
            "id": runs[1]["id"],
            "account": None,
            "integration": None,
            "snapshot_id": None,
            "run_id": 3,
            "detected_at": format_timestamp(t1 + timedelta(days=2, hours=1)),
            "counts": {"finding_opened": 0, "finding_resolved": 2},
            "findings_by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0},
            "events": [{**e, "change": "finding_resolved"} for e in stale],
            "events_total": 2,
            "more": None,
            "summary": "run 3: 2 findings resolved",
        },
    ]
    failed = [g.payload for g in receiver.delivered() if g.payload["type"] == "snapshot_failed"]
    assert [p["events"] for p in failed] == [[], []]  # not told twice


def test_a_slack_sink_gets_at_most_one_message_a_second_and_webhooks_are_not_paced() -> None:
    t = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        t[0] += seconds

    pacer = Pacer(clock=lambda: t[0], sleep=sleep)
    chat = load_sink("slack")
    hook = load_sink("webhook")
    assert pacer.wait(chat) and slept == []  # the first at once
    t[0] += 0.25
    assert pacer.wait(chat) and slept == [0.75]  # the next a second after the first
    assert pacer.wait(hook) and pacer.wait(hook) and slept == [0.75]
    t[0] += 5
    assert pacer.wait(chat) and slept == [0.75]  # a second has passed: at once
    stop = threading.Event()
    stop.set()
    assert not pacer.wait(chat, stop)  # stopped while waiting: not sent, not counted
    assert pacer.wait(chat) and slept == [0.75, 1.0]


def load_sink(kind: str) -> Any:
    from inventory.config import Sink
    from inventory.secret import Secret

    return Sink(kind, kind, Secret("https://example.invalid/x"))


# --- delivery through outages ------------------------------------------------------------


def test_every_message_arrives_once_in_order_after_refusals_500s_and_429s(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1, "crm": 1})
    receiver.down()  # connection refused
    assert cli.run("sync").code == 0
    receiver.up()
    receiver.default = 500
    for name in ("billing", "crm"):
        cli.zis.update("acme", name, "api_key", f"{name}_api_key_0", allowed_domain="a.example")
    assert cli.run("sync").code == 0
    receiver.default = 429
    receiver.script = [(429, {"Retry-After": "0"}), (429, {"Retry-After": "0"})]
    for name in ("billing", "crm"):
        cli.zis.update("acme", name, "api_key", f"{name}_api_key_0", allowed_domain="b.example")
    result = cli.run("sync")
    assert result.code == 0
    assert {r[6] for r in outbox(cli.db_url)} == {"pending"}
    receiver.default = 200
    assert notify(cli) == 0
    box = outbox(cli.db_url)
    for name in ("billing", "crm"):
        assert [(r[2], r[6]) for r in box if r[4] == name] == [
            ("first_inventory", "sent"),
            ("snapshot", "sent"),
            ("snapshot", "sent"),
        ]
    delivered = receiver.delivered()
    ids = [g.webhook_id for g in delivered]
    stored = [r[0] for r in rows(cli.db_url, "SELECT webhook_id FROM notifications ORDER BY id")]
    assert sorted(ids) == sorted(stored) and len(set(ids)) == len(ids)
    for name in ("billing", "crm"):
        mine = [r[0] for r in rows(
            cli.db_url, "SELECT webhook_id FROM notifications WHERE integration = :i ORDER BY id",
            i=name,
        )]  # fmt: skip
        assert [g.webhook_id for g in delivered if g.payload["integration"] == name] == mine
    refused = "cannot connect (refused, unreachable or TLS failed)"
    assert attempts(cli.db_url, box[0][0]) == [
        (1, None, refused, "retry"),
        (2, 500, "HTTP 500", "retry"),
        (3, 429, "HTTP 429", "retry"),
        (4, 200, None, "sent"),
    ]
    # Every attempt of a message carried its one webhook-id.
    by_id = Counter(g.webhook_id for g in receiver.got)
    assert by_id[stored[0]] == 3  # 500, 429, 200: the refusal never reached it
    assert "attempt 1: cannot connect" in "".join(cli.outputs)


def test_400_is_dead_at_once_max_attempts_is_dead_and_neither_blocks_the_others(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1, "crm": 1, "ops": 1}, notifications="max_attempts = 2")
    answers = {"billing": 400, "crm": 503, "ops": 200}
    receiver.decide = lambda payload: answers[payload["integration"]]
    assert cli.run("sync").code == 0
    for name in answers:
        cli.zis.update("acme", name, "api_key", f"{name}_api_key_0", allowed_domain="c.example")
    assert cli.run("sync").code == 0
    assert {(r[2], r[4], r[6]) for r in outbox(cli.db_url)} == {
        ("first_inventory", "billing", "dead"),
        ("first_inventory", "crm", "dead"),
        ("first_inventory", "ops", "sent"),
        ("snapshot", "billing", "dead"),
        ("snapshot", "crm", "pending"),
        ("snapshot", "ops", "sent"),
    }
    (first_crm,) = [r[0] for r in outbox(cli.db_url) if r[2:5:2] == ("first_inventory", "crm")]
    assert attempts(cli.db_url, first_crm) == [
        (1, 503, "HTTP 503", "retry"),
        (2, 503, "HTTP 503", "dead"),
    ]
    dead = cli.run("notifications", "--config", str(cli.config), "--status", "dead")
    assert dead.code == 0 and "3 notifications" in dead.out
    engine = store.make_engine(cli.db_url)
    try:
        text = generate_latest(Metrics(lambda: engine, lambda: timedelta(hours=1)).registry)
    finally:
        engine.dispose()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name.startswith("zis_inventory_notifications")
    }
    assert samples == {
        ("zis_inventory_notifications_total", (("sink", "siem"), ("status", "dead"))): 3.0,
        ("zis_inventory_notifications_total", (("sink", "siem"), ("status", "sent"))): 2.0,
        ("zis_inventory_notifications_total", (("sink", "siem"), ("status", "pending"))): 1.0,
        ("zis_inventory_notifications_pending", (("sink", "siem"),)): 1.0,
    }


def test_a_deliverer_killed_mid_send_resends_with_the_same_webhook_id(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1, "crm": 1}, notifications="lease_seconds = 0.5")
    assert cli.run("sync", "--no-notify").code == 0
    assert receiver.got == []
    receiver.script = ["block"]
    assert cli.config is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "inventory", "notify", "--config", str(cli.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cli.tmp_path,
        env={**os.environ},
    )  # fmt: skip
    try:
        wait_for(lambda: len(receiver.got) == 1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        out, err = proc.communicate(timeout=20)
        cli.outputs += [out, err]
    receiver.release.set()
    assert [r[6] for r in outbox(cli.db_url)] == ["pending", "pending"]
    time.sleep(0.6)  # the killed deliverer's lease ends
    assert notify(cli) == 0
    assert [r[6] for r in outbox(cli.db_url)] == ["sent", "sent"]
    seen = Counter(g.webhook_id for g in receiver.got)
    first = receiver.got[0].webhook_id
    assert seen[first] == 2 and sorted(seen.values()) == [1, 2]
    assert receiver.got[0].body == [g for g in receiver.got if g.webhook_id == first][1].body


def test_two_deliverers_never_send_the_same_message_at_once(
    cli: Harness, receiver: Receiver
) -> None:
    layout = {f"i{n}": 1 for n in range(6)}
    configure(cli, receiver, layout)
    assert cli.run("sync", "--no-notify").code == 0
    for name in layout:
        cli.zis.update("acme", name, "api_key", f"{name}_api_key_0", allowed_domain="d.example")
    assert cli.run("sync", "--no-notify").code == 0
    receiver.delay = 0.02
    settings = load_settings(str(cli.config))
    engines = [store.make_engine(cli.db_url) for _ in range(2)]
    try:
        threads = [threading.Thread(target=Deliverer(engine, settings).run) for engine in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # What one pass left behind (a message behind another's lease) the next one sends.
        Deliverer(engines[0], settings).run()
    finally:
        for engine in engines:
            engine.dispose()
    assert receiver.overlaps == 0
    ids = [g.webhook_id for g in receiver.got]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert {r[6] for r in outbox(cli.db_url)} == {"sent"}


def test_a_claim_still_sending_when_half_its_lease_has_gone_leases_the_rest_anew(
    cli: Harness, receiver: Receiver
) -> None:
    """Twelve messages at 0.7 s each outlive a 6 s lease: half of it gone (3 s, which
    leaves more than a send's 2 s deadline and a Slack second), the deliverer leases what
    it has not sent yet anew, so a second one polling all the while takes none of them."""
    layout = {f"i{n}": 1 for n in range(12)}
    configure(cli, receiver, layout, notifications="lease_seconds = 6\ntimeout_seconds = 2")
    assert cli.run("sync", "--no-notify").code == 0
    receiver.delay = 0.7
    settings = load_settings(str(cli.config))
    engines = [store.make_engine(cli.db_url) for _ in range(2)]
    done = threading.Event()
    first: list[Any] = []
    other: list[Any] = []

    def deliver_once() -> None:
        try:
            first.append(Deliverer(engines[0], settings).run())
        finally:
            done.set()

    def poll() -> None:
        while not done.is_set():
            other.append(Deliverer(engines[1], settings).run())
            time.sleep(0.05)

    try:
        threads = [threading.Thread(target=deliver_once), threading.Thread(target=poll)]
        threads[0].start()
        wait_for(lambda: len(receiver.got) == 1)  # the first has claimed them all
        threads[1].start()
        for t in threads:
            t.join(60)
    finally:
        for engine in engines:
            engine.dispose()
    assert [(r.sent, r.retry, r.dead) for r in first] == [(12, 0, 0)]
    assert {r.attempts for r in other} == {0}
    ids = [g.webhook_id for g in receiver.got]
    assert len(ids) == 12 and len(set(ids)) == 12 and receiver.overlaps == 0
    assert set(rows(cli.db_url, "SELECT status, attempts FROM notifications")) == {("sent", 1)}


def test_a_renewal_leaves_a_message_another_delivery_took_to_it(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1, "crm": 1, "ops": 1})
    assert cli.run("sync", "--no-notify").code == 0
    settings = load_settings(str(cli.config))
    engine = store.make_engine(cli.db_url)
    try:
        deliverer = Deliverer(engine, settings)
        kept, taken, sent = deliverer.claim()
        n = m.Notification
        with engine.begin() as conn:  # its lease ended: another delivery claimed one and sent one
            conn.execute(n.__table__.update().where(n.id == taken.id).values(attempts=2))
            conn.execute(n.__table__.update().where(n.id == sent.id).values(status="sent"))
            before = dict(conn.execute(select(n.id, n.next_attempt_at)).all())
        assert deliverer.renew([kept, taken, sent]) == {kept.id}
        with engine.connect() as conn:
            after = dict(conn.execute(select(n.id, n.next_attempt_at)).all())
    finally:
        engine.dispose()
    assert after[kept.id] > before[kept.id]
    assert (after[taken.id], after[sent.id]) == (before[taken.id], before[sent.id])


# --- what is queued ----------------------------------------------------------------------


def test_a_rolled_back_snapshot_queues_nothing(
    cli: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    configure(cli, receiver, {"billing": 1})
    real = store_consumers.enqueue_snapshot
    calls: list[int] = []

    def fail_after_queueing(conn: Any, *args: Any) -> None:
        real(conn, *args)
        calls.append(1)
        if len(calls) == 1:
            assert rows_in(conn) == 1  # queued, in the transaction that now fails
            raise OperationalError("INSERT", None, Exception("disk I/O error"))

    monkeypatch.setattr(store_consumers, "enqueue_snapshot", fail_after_queueing)
    assert cli.run("sync", "--no-notify").code == 1
    ((snapshot_id, *_, status, _c, _a, _r, _m, _s, _p),) = snapshots(cli.db_url)
    assert status == "failed"
    assert [(r[2], r[5]) for r in outbox(cli.db_url)] == [("failed", snapshot_id)]


def rows_in(conn: Any) -> int:
    return len(conn.execute(select(m.Notification.id)).all())


def test_a_held_snapshot_queues_its_held_message_only(cli: Harness, receiver: Receiver) -> None:
    configure(cli, receiver, {"billing": 2})
    assert cli.run("sync", "--no-notify").code == 0
    for t, item in items("billing", 2)[:6]:
        cli.zis.delete("acme", "billing", t, item["name"])
    assert cli.run("sync", "--no-notify").code == 1
    held = snapshots(cli.db_url)[-1][0]
    assert [(r[2], r[5]) for r in outbox(cli.db_url)][1:] == [("held", held)]
    assert cli.run("sync", "--no-notify").code == 1  # held again: told once
    assert [r[2] for r in outbox(cli.db_url)] == ["first_inventory", "held"]


def test_a_sink_added_to_an_existing_database_gets_only_what_happens_after(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver, {"billing": 1})
    assert cli.config is not None
    text = cli.config.read_text()
    sink = text[text.index("[[notify]]") : text.index("[notifications]")]
    cli.config.write_text(text.replace(sink, ""))
    assert cli.run("sync").code == 0
    cli.config.write_text(text)
    assert cli.run("sync").code == 0  # nothing changed: nothing to tell
    cli.zis.update("acme", "billing", "api_key", "billing_api_key_0", allowed_domain="e.example")
    assert cli.run("sync").code == 0
    assert [g.payload["events"][0]["change"] for g in receiver.delivered()] == ["modified"]
    assert rows(cli.db_url, "SELECT name FROM notify_sinks") == [("siem",)]


# --- the expiry ledger -------------------------------------------------------------------


@pytest.fixture
def ledger(db_url: str) -> Iterator[Callable[..., list[tuple[str, int]]]]:
    """warn(now, expiry=None): the (event, threshold) warnings a snapshot at ``now`` gives
    for one oauth connection, after setting its token_expiry when given."""
    engine = store.make_engine(db_url)
    store.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(m.Connection).values(
                account="acme",
                integration="crm",
                type="oauth",
                name="o",
                first_seen_at=NOW,
                last_changed_at=NOW,
                token_expiry=NOW + timedelta(days=40),
            )
        )

    def warn(now: datetime, expiry: datetime | None = None) -> list[tuple[str, int]]:
        with engine.begin() as conn:
            if expiry is not None:
                conn.execute(m.Connection.__table__.update().values(token_expiry=expiry))
            got = expiry_warnings(conn, "acme", "crm", [30, 14, 7, 1], now)
        return [(w.change, w.threshold_days) for w in got]

    yield warn
    engine.dispose()


def test_expiry_thresholds_crossed_one_by_one(ledger: Callable[..., Any]) -> None:
    day = timedelta(days=1)
    assert ledger(NOW) == []
    assert ledger(NOW + 10 * day) == [("expiring", 30)]  # 30 days left: <=
    assert ledger(NOW + 11 * day) == []
    assert ledger(NOW + 26 * day) == [("expiring", 14)]
    assert ledger(NOW + 33 * day) == [("expiring", 7)]
    assert ledger(NOW + 39 * day) == [("expiring", 1)]
    assert ledger(NOW + 39.5 * day) == []
    assert ledger(NOW + 40 * day) == [("expired", 0)]
    assert ledger(NOW + 41 * day) == []


def test_expiry_thresholds_crossed_at_once_give_the_tightest_and_count_the_wider(
    ledger: Callable[..., Any], db_url: str
) -> None:
    day = timedelta(days=1)
    assert ledger(NOW + 39.5 * day) == [("expiring", 1)]
    assert sorted(rows(db_url, "SELECT threshold, notified FROM expiry_warnings")) == [
        (1, True), (7, False), (14, False), (30, False),
    ]  # fmt: skip
    assert ledger(NOW + 39.7 * day) == []
    assert ledger(NOW + 45 * day) == [("expired", 0)]


def test_a_missed_day_delays_a_warning_and_never_skips_it(ledger: Callable[..., Any]) -> None:
    day = timedelta(days=1)
    assert ledger(NOW + 10 * day) == [("expiring", 30)]
    # No snapshot on the day 14 days were left; the next one, with 12 left, warns for 14.
    assert ledger(NOW + 28 * day) == [("expiring", 14)]


def test_a_refreshed_token_starts_over(ledger: Callable[..., Any]) -> None:
    day = timedelta(days=1)
    assert ledger(NOW + 34 * day) == [("expiring", 7)]
    assert ledger(NOW + 35 * day, expiry=NOW + 70 * day) == []  # 35 days left
    assert ledger(NOW + 41 * day) == [("expiring", 30)]
    assert ledger(NOW + 41 * day, expiry=NOW + 42 * day) == [("expiring", 1)]


# --- the Slack message -------------------------------------------------------------------


def test_the_report_reads_the_delivery_log(db_url: str) -> None:
    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine)
        report = notifications_report(engine, status=("dead",), sinks=(), since=None)
        assert report.rows == [] and report.render("csv").startswith("id,created_at,sink")
    finally:
        engine.dispose()


def test_the_daemon_delivers_continuously_and_stops_cleanly(
    cli: Harness, receiver: Receiver
) -> None:
    from .helpers import SCHEDULE
    from .helpers import start as start_daemon
    from .helpers import stop as stop_daemon

    configure(cli, receiver, {"billing": 1}, notifications="poll_seconds = 0.2")
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=3600))
    receiver.script = [500]  # the first attempt fails; the worker tries again by itself
    daemon = start_daemon(cli)
    try:
        wait_for(lambda: len(receiver.delivered()) == 1)
    finally:
        code, seconds, logs = stop_daemon(cli, daemon)
    assert code == 0 and seconds < 5
    assert [g.status for g in receiver.got] == [500, 200]
    assert [(r[2], r[6]) for r in outbox(cli.db_url)] == [("first_inventory", "sent")]
    lines = [line["message"] for line in logs if line["message"].startswith("notify siem: ")]
    assert [line.split(": ", 2)[1] for line in lines] == [
        "message 1 (first_inventory acme/billing) attempt 1",
        "message 1 (first_inventory acme/billing) attempt 2",
    ]
    assert logs[-1]["message"] == "daemon stopped"
