"""The messages of §11 without a database: one per snapshot with its events, lists capped
at 50 with true counts, and Slack messages that show every API value literally, within
Block Kit's limits (checked with slack_sdk's block models)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inventory.config import Sink
from inventory.notify.messages import (
    ChangeEvent,
    SnapshotFacts,
    code,
    escape,
    expiry_event,
    run_findings_message,
    slack_message,
    snapshot_message,
)
from inventory.secret import Secret

from .helpers import assert_valid_slack

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SINK = Sink("chat", "slack", Secret("https://hooks.slack.com/services/T/B/x"))
HOSTILE = ["<!channel>", "<!here>", "<@U123>", "<https://evil.example|x>", "*bold*"]
FACTS = SnapshotFacts("acme", "crm", 42, AT, "complete", 1200, (0, 0, 0, 0))


@dataclass(frozen=True)
class F:
    """A finding as the findings engine gives it."""

    id: int
    rule: str
    slug: str
    severity: str
    account: str
    integration: str
    type: str | None
    name: str | None
    detail: str


def finding(n: int, severity: str, name: str | None = None) -> F:
    return F(n, "ZIS001", "no-allowed-domain", severity, "acme", "crm", "api_key",
             name or f"k{n:04d}", "no allowed_domain")  # fmt: skip


def payload_of(message: Any, sink: Sink = SINK) -> dict[str, Any]:
    got = message.for_sink(sink)
    assert got is not None
    return {**got, "id": "msg_x"}


def test_hostile_names_reach_slack_as_text_in_every_field() -> None:
    changes = [ChangeEvent("added", "api_key", name, None, None, None) for name in HOSTILE]
    changes.append(
        ChangeEvent("modified", "oauth", "<!channel>", "permission_scope", "<!here>", "`x` *y*")
    )
    opened = [finding(1, "high", "<!channel>")]
    expiry = [expiry_event("oauth", "<@U123>", AT + timedelta(days=3), 7, AT)]
    facts = replace(FACTS, counts=(5, 0, 1, 0))
    message = slack_message(payload_of(snapshot_message(facts, changes, opened, [], expiry)))
    assert message == {
        "text": "`acme/crm`: 5 added, 1 modified; 1 finding opened: 1 high; 1 expiring",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "acme/crm: snapshot"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "`acme/crm`: 5 added, 1 modified; 1 finding opened: 1 high; 1 expiring"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([
                "finding opened: high ZIS001 no-allowed-domain `api_key` `&lt;!channel&gt;`",
                "expiring: `oauth` `&lt;@U123&gt;`: 3 days left (threshold 7), "
                "token_expiry `2026-12-05T10:00:00Z`",
                "added `api_key` `&lt;!channel&gt;`",
                "added `api_key` `&lt;!here&gt;`",
                "added `api_key` `&lt;@U123&gt;`",
                "added `api_key` `&lt;https://evil.example|x&gt;`",
                "added `api_key` `*bold*`",
                "modified `oauth` `&lt;!channel&gt;` `permission_scope`: `&lt;!here&gt;` → "
                "`'x' *y*`",
            ])}},
            {"type": "context", "elements": [{"type": "mrkdwn",
                "text": "snapshot 42 · 2026-12-02T10:00:00Z · zis-inventory snapshot"}]},
        ],
    }  # fmt: skip
    assert_valid_slack(message)


def test_a_failed_snapshot_and_a_run_show_api_text_escaped() -> None:
    facts = replace(FACTS, status="failed", error="page 1: HTTP 401 <!channel> *Token* bad")
    failed = slack_message(payload_of(snapshot_message(facts, [], [], [], [])))
    assert failed["text"] == "`acme/crm`: snapshot failed"
    assert failed["blocks"][:3] == [
        {"type": "header", "text": {"type": "plain_text", "text": "acme/crm: snapshot failed"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "`acme/crm`: snapshot failed"}},
        {"type": "section", "text": {"type": "mrkdwn",
         "text": "error: `page 1: HTTP 401 &lt;!channel&gt; *Token* bad`"}},
    ]  # fmt: skip
    assert_valid_slack(failed)
    # ZIS009 names an integration the registry (the API) lists.
    unlisted = F(3, "ZIS009", "integration-not-inventoried", "medium", "acme", "<!here>",
                 None, None, "listed by the registry")  # fmt: skip
    run = slack_message(payload_of(run_findings_message(7, AT, [unlisted], [])))
    assert run == {
        "text": "1 finding opened: 1 medium",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text",
             "text": "zis-inventory: findings of run 7"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "1 finding opened: 1 medium"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
             "finding opened: medium ZIS009 integration-not-inventoried in `acme/&lt;!here&gt;`"}},
            {"type": "context", "elements": [{"type": "mrkdwn",
             "text": "2026-12-02T10:00:00Z · zis-inventory run_findings"}]},
        ],
    }  # fmt: skip
    assert_valid_slack(run)


def test_one_escaping_function_and_code_spans() -> None:
    assert escape("a & <b> &amp;") == "a &amp; &lt;b&gt; &amp;amp;"
    assert code("<!channel>") == "`&lt;!channel&gt;`"
    assert code("a`b\nc") == "`a'b c`"
    assert code(None) == "∅"
    assert code("x" * 100) == "`" + "x" * 59 + "…`"
    assert code("&" * 100) == "`" + "&amp;" * 59 + "…`"  # shortened before escaping


def test_1100_changes_list_50_and_count_every_one() -> None:
    changes = [
        ChangeEvent("modified", "api_key", f"<!channel>_{n:04d}_" + "*" * 80, "allowed_domain",
                    "<https://evil.example|x>" * 5, "&" * 200)
        for n in range(1100)
    ]  # fmt: skip
    opened = [finding(n, ("low", "medium", "high", "critical")[n % 4]) for n in range(40)]
    resolved = [finding(1000 + n, "medium") for n in range(3)]
    facts = replace(FACTS, counts=(0, 0, 1100, 0))
    message = snapshot_message(facts, changes, opened, resolved, [])
    payload = payload_of(message)
    assert payload["events_total"] == 1143
    assert payload["counts"] == {"added": 0, "removed": 0, "modified": 1100, "restored": 0,
                                 "finding_opened": 40, "finding_resolved": 3,
                                 "expiring": 0, "expired": 0}  # fmt: skip
    assert payload["findings_by_severity"] == {"critical": 10, "high": 10, "medium": 10, "low": 10}
    listed = payload["events"]
    assert len(listed) == 50
    # The most severe findings first, then the changes; the rest counted, with the commands.
    assert [e["severity"] for e in listed[:40]] == ["critical"] * 10 + ["high"] * 10 + [
        "medium"
    ] * 10 + ["low"] * 10
    assert [e["name"][:15] for e in listed[40:]] == [f"<!channel>_{n:04d}" for n in range(10)]
    assert payload["more"] == {
        "count": 1093,
        "commands": [
            "python -m inventory changes --snapshot 42",
            "python -m inventory findings --account acme --integration crm",
        ],
    }
    assert payload["summary"] == (
        "acme/crm: 1,100 modified; 40 findings opened: 10 critical, 10 high, 10 medium, "
        "10 low; 3 findings resolved"
    )
    slack = slack_message(payload)
    assert_valid_slack(slack)
    assert slack["text"] == (
        "`acme/crm`: 1,100 modified; 40 findings opened: 10 critical, 10 high, 10 medium, "
        "10 low; 3 findings resolved"
    )
    lines = [line for b in slack["blocks"][2:-1] for line in b["text"]["text"].split("\n")]
    assert len(lines) == 51 and lines[-1] == (
        "and 1,093 more: `python -m inventory changes --snapshot 42`, "
        "`python -m inventory findings --account acme --integration crm`"
    )
    assert "<" not in "".join(b["text"]["text"] for b in slack["blocks"][1:-1])


def test_first_inventory_summarises_and_names_the_most_severe_findings() -> None:
    opened = [finding(n, "medium") for n in range(70)] + [finding(900, "high")]
    expiry = [expiry_event("oauth", f"o{n}", AT - timedelta(days=1), 0, AT) for n in range(2)]
    facts = replace(FACTS, first_inventory=True, counts=(1200, 0, 0, 0),
                    connection_types={"oauth": 200, "api_key": 1000})  # fmt: skip
    message = snapshot_message(facts, [], opened, [], expiry)
    assert message.event == "first_inventory"
    payload = payload_of(message)
    assert [(e["change"], e.get("severity")) for e in payload["events"][:4]] == [
        ("finding_opened", "high"),
        ("finding_opened", "medium"),
        ("finding_opened", "medium"),
        ("finding_opened", "medium"),
    ]
    assert (payload["events_total"], len(payload["events"]), payload["more"]) == (
        73,
        50,
        {"count": 23, "commands": [
            "python -m inventory findings --account acme --integration crm",
            "python -m inventory connections --account acme --integration crm "
            "--expiring-within 30d --expired",
        ]},
    )  # fmt: skip
    assert payload["summary"] == (
        "acme/crm: first inventory: 1,200 connections (1,000 api_key, 200 oauth); "
        "71 findings opened: 1 high, 70 medium; 2 expired"
    )
    slack = slack_message(payload)
    assert slack["blocks"][0]["text"]["text"] == "acme/crm: first inventory"
    assert slack["text"] == (
        "`acme/crm`: first inventory: 1,200 connections (1,000 `api_key`, 200 `oauth`); "
        "71 findings opened: 1 high, 70 medium; 2 expired"
    )
    assert_valid_slack(slack)
    # A sink that takes high findings only still gets the summary (it takes "added").
    high = payload_of(message, replace(SINK, min_severity="high"))
    assert (high["events_total"], high["more"]) == (3, None)
    assert [e.get("name") for e in high["events"]] == ["k0900", "o0", "o1"]


@pytest.mark.parametrize(
    ("sink", "told"),
    [
        (replace(SINK, events=frozenset({"modified"})), None),  # nothing it asks for
        (replace(SINK, events=frozenset({"finding"})), ["finding_opened", "finding_resolved"]),
        (replace(SINK, events=frozenset({"expired"})), ["expired"]),
        (replace(SINK, events=frozenset({"added", "finding"}), min_severity="critical"),
         ["added"]),
        (replace(SINK, accounts=frozenset({"other"})), None),
        (replace(SINK, integrations=frozenset({"crm"})), ["finding_opened", "expired", "added",
                                                          "finding_resolved"]),
    ],
)  # fmt: skip
def test_each_sink_gets_the_events_it_asks_for(sink: Sink, told: list[str] | None) -> None:
    message = snapshot_message(
        replace(FACTS, counts=(1, 0, 0, 0)),
        [ChangeEvent("added", "api_key", "a", None, None, None)],
        [finding(1, "high")],
        [finding(2, "low")],
        [expiry_event("oauth", "o", AT, 0, AT)],
    )
    got = message.for_sink(sink)
    if told is None:
        assert got is None
        return
    assert got is not None
    assert [e["change"] for e in got["events"]] == told == [e["change"] for e in got["events"]]
    assert got["events_total"] == len(told)


def test_long_names_are_cut_to_fit_block_kit() -> None:
    facts = replace(FACTS, account="a" * 200, integration="<&>" * 100, counts=(60, 0, 0, 0))
    changes = [ChangeEvent("added", "t" * 500, "n" * 5000, None, None, None)] * 60
    slack = slack_message(payload_of(snapshot_message(facts, changes, [], [], [])))
    assert_valid_slack(slack)
    header = slack["blocks"][0]["text"]["text"]
    assert header == "a" * 149 + "…"
    held = replace(FACTS, integration="<&>" * 20, status="held", error="<!channel> " * 1000)
    slack = slack_message(payload_of(snapshot_message(held, [], [], [], [])))
    assert_valid_slack(slack)
    # Shortened before escaping: no entity is cut.
    assert slack["blocks"][0]["text"]["text"] == "acme/" + "&lt;&amp;&gt;" * 11 + "…"
    assert slack["blocks"][2]["text"]["text"] == "error: `" + "&lt;!channel&gt; " * 45 + "&lt;!ch…`"


def test_a_redirected_client_names_both_hosts_escaped() -> None:
    """ZIS012's line carries its detail (the old and new host), through the one escape:
    a hostile client name or host is shown literally, never a mention or a link."""
    moved = ChangeEvent(
        "modified", "oauth_client", "<!channel>", "token_url",
        "https://login.example.com/token", "https://<!here>|evil.example/t",
    )  # fmt: skip
    opened = F(
        5, "ZIS012", "client-url-changed", "critical", "acme", "crm", "oauth_client",
        "<!channel>", "token_url host changed from login.example.com to <!here>|evil.example "
        "at 2026-12-02T10:00:00Z",
    )  # fmt: skip
    facts = replace(FACTS, counts=(0, 0, 1, 0))  # the client's modification is counted
    message = slack_message(payload_of(snapshot_message(facts, [moved], [opened], [], [])))
    assert message["text"] == "`acme/crm`: 1 modified; 1 finding opened: 1 critical"
    assert message["blocks"][2] == {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([
        "finding opened: critical ZIS012 client-url-changed `oauth_client` `&lt;!channel&gt;`: "
        "`token_url host changed from login.example.com to &lt;!here&gt;|evil.example at "
        "2026-12-02T10:00:00Z`",
        "modified `oauth_client` `&lt;!channel&gt;` `token_url`: "
        "`https://login.example.com/token` → `https://&lt;!here&gt;|evil.example/t`",
    ])}}  # fmt: skip
    assert_valid_slack(message)
