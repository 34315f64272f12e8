"""The OAuth client rules (ZIS011-ZIS013) end to end: a token_url redirected to another
host is one modified event, one critical ZIS012 finding and one message per sink naming
both hosts; the findings report, suppressions and OCSF treat them as the others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.testing import sample_client

from .helpers import (
    Harness,
    Receiver,
    add_slack_sink,
    configure_webhook,
    query,
)

F, C = m.Finding, m.ConnectionChange
EVIL = "https://collector.evil.example/oauth/token"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()


@pytest.fixture
def chat() -> Iterator[Receiver]:
    r = Receiver()
    r.up()
    yield r
    r.down()


def open_findings(url: str) -> set[tuple[Any, ...]]:
    return query(
        url,
        select(F.rule, F.severity, F.type, F.name, F.detail).where(F.resolved_at.is_(None)),
    )


def test_a_redirected_token_url_is_one_event_one_critical_finding_one_message_per_sink(
    cli: Harness, receiver: Receiver, chat: Receiver
) -> None:
    configure_webhook(cli, receiver, {"billing": 1})  # the connection rules are off
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n[findings.rules.ZIS013]\nenabled = false\n")
    add_slack_sink(cli, chat)
    salesforce = sample_client("salesforce", "billing")
    cli.zis.put_client("acme", "billing", salesforce)
    cli.zis.put_client(
        "acme", "billing", sample_client("legacy", "billing", auth_url="http://legacy.example/a")
    )
    assert cli.run("sync").code == 0  # first inventory: ZIS011 on the plain-http client
    assert open_findings(cli.db_url) == {
        (
            "ZIS011",
            "high",
            "oauth_client",
            "legacy",
            "auth_url=http://legacy.example/a (not https://)",
        )
    }
    first = len(receiver.delivered()), len(chat.delivered())
    assert first == (1, 1)
    cli.zis.update_client("acme", "billing", salesforce["uuid"], token_url=EVIL)
    assert cli.run("sync").code == 0
    assert query(cli.db_url, select(C.snapshot_id, C.type, C.name, C.change, C.field,
                                    C.old_value, C.new_value).where(C.snapshot_id == 2)) == {
        (2, "oauth_client", "salesforce", "modified", "token_url",
         "https://salesforce.example.com/oauth/token", EVIL),
    }  # fmt: skip
    ((at,),) = query(cli.db_url, select(m.Snapshot.started_at).where(m.Snapshot.id == 2))
    stamp = (
        at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if at.microsecond
        else at.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    detail = (
        f"token_url host changed from salesforce.example.com to collector.evil.example at {stamp}"
    )
    assert open_findings(cli.db_url) == {
        ("ZIS011", "high", "oauth_client", "legacy", "auth_url=http://legacy.example/a (not https://)"),
        ("ZIS012", "critical", "oauth_client", "salesforce", detail),
    }  # fmt: skip
    # One message per sink for the snapshot, naming both hosts.
    assert (len(receiver.delivered()), len(chat.delivered())) == (2, 2)
    payload = receiver.delivered()[-1].payload
    assert payload["counts"]["modified"] == 1 and payload["counts"]["finding_opened"] == 1
    assert payload["events"] == [
        {"change": "finding_opened", "rule": "ZIS012", "slug": "client-url-changed",
         "severity": "critical", "type": "oauth_client", "name": "salesforce",
         "detail": detail},
        {"change": "modified", "type": "oauth_client", "name": "salesforce",
         "field": "token_url", "old_value": "https://salesforce.example.com/oauth/token",
         "new_value": EVIL},
    ]  # fmt: skip
    slack = json.dumps(chat.delivered()[-1].payload)
    assert "salesforce.example.com" in slack and "collector.evil.example" in slack
    # findings, check and OCSF see it as any other finding.
    result = cli.run("findings", "--rule", "ZIS012", "--format", "json")
    assert result.code == 1  # critical is at or above fail_on (high)
    assert [(f["rule"], f["name"], f["detail"]) for f in json.loads(result.out)] == [
        ("ZIS012", "salesforce", detail)
    ]
    ocsf = [json.loads(line) for line in cli.run("findings", "--format", "ocsf").out.splitlines()]
    assert sorted(o["finding_info"]["title"] for o in ocsf) == [
        "ZIS011 client-url-not-https",
        "ZIS012 client-url-changed",
    ]


def test_zis013_and_suppressions_of_client_findings(cli: Harness, receiver: Receiver) -> None:
    def oauth_naming(uuid: str) -> Any:
        def made(name: str, count: int) -> list[tuple[str, dict[str, Any]]]:
            from inventory.testing import sample_item

            return [("oauth", sample_item("oauth", f"{name}_oauth", oauth_client_uuid=uuid,
                                           token_expiry="2099-01-01T00:00:00Z"))]  # fmt: skip

        return made

    used = sample_client("used", "billing")
    configure_webhook(cli, receiver, {"billing": 1}, connections=oauth_naming(used["uuid"]))
    cli.zis.put_client("acme", "billing", used)
    cli.zis.put_client("acme", "billing", sample_client("idle", "billing"))
    assert cli.config is not None
    cli.config.write_text(
        cli.config.read_text()
        + '\n[[findings.suppress]]\nrule = "ZIS013"\ntype = "oauth_client"\nname = "idle"\n'
        'reason = "kept for the spring migration, SEC-9"\nuntil = "2099-01-01"\n'
    )
    result = cli.run("sync")
    assert result.code == 2 and "is more than 365 days ahead" in result.err  # refused
    soon = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    text = cli.config.read_text().replace('until = "2099-01-01"', f'until = "{soon}"')
    cli.config.write_text(text)
    assert cli.run("sync").code == 0
    assert query(cli.db_url, select(F.rule, F.name, F.suppressed_by.is_not(None))) == {
        ("ZIS013", "idle", True)
    }
    listed = cli.run("findings", "--include-suppressed", "--format", "json")
    assert [(f["rule"], f["name"]) for f in json.loads(listed.out)] == [("ZIS013", "idle")]
    assert cli.run("findings", "--format", "json").out.strip() == "[]"
