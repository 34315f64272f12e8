"""Pure: the webhook payloads of §11 (canonical JSON, stable keys) and the Slack Block Kit
message made from one. Only allow-listed metadata goes in; nothing here does I/O."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..config import SEVERITIES, Sink
from ..records import format_timestamp

MAX_EVENTS = 1000  # events in one webhook payload; events_total says how many there were
SLACK_LINES = 20  # change lines in one Slack message, then "and N more"
SLACK_VALUE = 60  # characters of an old or new value shown in Slack
PAYLOAD_TYPES = ("snapshot", "expiry_warning", "snapshot_failed", "finding", "test")


class FindingLike(Protocol):
    """What the findings engine gives for a newly opened finding (inventory.findings)."""

    @property
    def id(self) -> int: ...

    @property
    def rule(self) -> str: ...

    @property
    def slug(self) -> str: ...

    @property
    def severity(self) -> str: ...

    @property
    def account(self) -> str: ...

    @property
    def integration(self) -> str: ...

    @property
    def type(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    @property
    def detail(self) -> str: ...

    @property
    def first_seen_at(self) -> datetime: ...


@dataclass(frozen=True)
class ChangeEvent:
    change: str
    type: str
    name: str
    field: str | None
    old_value: str | None
    new_value: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "type": self.type,
            "name": self.name,
            "field": self.field,
            "old_value": self.old_value,
            "new_value": self.new_value,
        }


@dataclass(frozen=True)
class Message:
    """One message a snapshot causes, before it is made for each sink.

    ``event`` is what the delivery log shows (snapshot, first_inventory, expiring,
    expired, failed, held, recovered, finding); ``kinds`` are the [[notify]] event kinds
    it answers to; ``body`` the payload without its ``id``."""

    event: str
    kinds: frozenset[str]
    account: str
    integration: str
    snapshot_id: int | None
    body: dict[str, Any]
    changes: tuple[ChangeEvent, ...] = ()
    severity: str | None = None

    def for_sink(self, sink: Sink) -> dict[str, Any] | None:
        """The payload this sink gets (without ``id``), or None when its filters drop it."""
        if sink.accounts is not None and self.account not in sink.accounts:
            return None
        if sink.integrations is not None and self.integration not in sink.integrations:
            return None
        if not self.kinds & sink.events:
            return None
        if (
            self.severity is not None
            and sink.min_severity is not None
            and SEVERITIES.index(self.severity) < SEVERITIES.index(sink.min_severity)
        ):
            return None
        if self.event != "snapshot":
            return dict(self.body)
        kept = [e for e in self.changes if _wanted(e, sink)]
        if not kept:
            return None
        return {
            **self.body,
            "events": [e.as_json() for e in kept[:MAX_EVENTS]],
            "events_total": len(kept),
            "summary": _change_summary(self.account, self.integration, kept),
        }


def _wanted(event: ChangeEvent, sink: Sink) -> bool:
    if event.change not in sink.events:
        return False
    return not (
        event.change == "modified" and sink.fields is not None and event.field not in sink.fields
    )


def new_webhook_id() -> str:
    """One per message, kept across every attempt: receivers dedupe on it."""
    return f"msg_{uuid.uuid4().hex}"


def encode(payload: Mapping[str, Any]) -> str:
    """Canonical JSON (RFC 8785): the bytes signed are the bytes stored and sent."""
    import rfc8785  # only when a message is made: nothing of it at import time

    return rfc8785.dumps(dict(payload)).decode("utf-8")


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _base(
    kind: str, account: str, integration: str, snapshot_id: int | None, at: datetime
) -> dict[str, Any]:
    return {
        "type": kind,
        "account": account,
        "integration": integration,
        "snapshot_id": snapshot_id,
        "detected_at": _stamp(at),
        "events": [],
    }


def _counts(added: int, removed: int, modified: int, restored: int) -> dict[str, int]:
    return {"added": added, "removed": removed, "modified": modified, "restored": restored}


def snapshot_message(
    account: str,
    integration: str,
    snapshot_id: int,
    at: datetime,
    connection_count: int,
    counts: tuple[int, int, int, int],
    changes: Sequence[ChangeEvent],
) -> Message:
    body = {
        **_base("snapshot", account, integration, snapshot_id, at),
        "first_inventory": False,
        "connection_count": connection_count,
        "counts": _counts(*counts),
        "events_total": 0,
        "summary": "",
    }
    kinds = frozenset(e.change for e in changes)
    return Message("snapshot", kinds, account, integration, snapshot_id, body, tuple(changes))


def first_inventory_message(
    account: str,
    integration: str,
    snapshot_id: int,
    at: datetime,
    connection_count: int,
    counts: tuple[int, int, int, int],
) -> Message:
    body = {
        **_base("snapshot", account, integration, snapshot_id, at),
        "first_inventory": True,
        "connection_count": connection_count,
        "counts": _counts(*counts),
        "events_total": 0,
        "summary": f"{account}/{integration}: first inventory: {connection_count} connections",
    }
    return Message("first_inventory", frozenset({"added"}), account, integration, snapshot_id, body)


def failure_message(
    kind: str,  # failed | held | recovered
    account: str,
    integration: str,
    snapshot_id: int,
    at: datetime,
    status: str,
    error: str | None,
    previous_status: str | None,
) -> Message:
    if kind == "recovered":
        summary = f"{account}/{integration}: recovered: snapshot {snapshot_id} is complete"
        kinds = frozenset({previous_status or "failed"})
    else:
        what = "failed" if kind == "failed" else "held (not applied)"
        summary = f"{account}/{integration}: snapshot {what}"
        kinds = frozenset({kind})
    body = {
        **_base("snapshot_failed", account, integration, snapshot_id, at),
        "kind": kind,
        "status": status,
        "previous_status": previous_status,
        "error": error,
        "summary": summary,
    }
    return Message(kind, kinds, account, integration, snapshot_id, body)


def expiry_message(
    account: str,
    integration: str,
    snapshot_id: int | None,
    at: datetime,
    type_name: str,
    name: str,
    token_expiry: datetime,
    threshold: int,
) -> Message:
    expired = threshold == 0
    seconds = (token_expiry - at).total_seconds()
    days_left = max(0, int(seconds // 86400)) if seconds > 0 else 0
    if expired:
        summary = f"{account}/{integration}: {type_name} {name}: token expired"
    else:
        summary = (
            f"{account}/{integration}: {type_name} {name}: token expires within "
            f"{threshold} days ({_stamp(token_expiry)})"
        )
    body = {
        **_base("expiry_warning", account, integration, snapshot_id, at),
        "kind": "expired" if expired else "expiring",
        "connection": {"type": type_name, "name": name, "token_expiry": _stamp(token_expiry)},
        "threshold_days": threshold,
        "days_left": days_left,
        "summary": summary,
    }
    event = "expired" if expired else "expiring"
    return Message(event, frozenset({event}), account, integration, snapshot_id, body)


def finding_message(finding: FindingLike, snapshot_id: int | None, at: datetime) -> Message:
    subject = " ".join(v for v in (finding.type, finding.name) if v)
    body = {
        **_base("finding", finding.account, finding.integration, snapshot_id, at),
        "finding": {
            "id": finding.id,
            "rule": finding.rule,
            "slug": finding.slug,
            "severity": finding.severity,
            "type": finding.type,
            "name": finding.name,
            "detail": finding.detail,
            "first_seen_at": _stamp(finding.first_seen_at),
        },
        "summary": (
            f"{finding.account}/{finding.integration}: {finding.severity} finding "
            f"{finding.rule} {finding.slug}" + (f": {subject}" if subject else "")
        ),
    }
    return Message(
        "finding",
        frozenset({"finding"}),
        finding.account,
        finding.integration,
        snapshot_id,
        body,
        severity=finding.severity,
    )


def test_payload(sink: str, webhook_id: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "test",
        "id": webhook_id,
        "sink": sink,
        "account": None,
        "integration": None,
        "snapshot_id": None,
        "detected_at": _stamp(at),
        "events": [],
        "summary": f"zis-inventory test message to sink {sink}",
    }


def _change_summary(account: str, integration: str, events: Sequence[ChangeEvent]) -> str:
    kinds: dict[str, set[tuple[str, str]]] = {}
    for e in events:
        kinds.setdefault(e.change, set()).add((e.type, e.name))
    parts = [f"{len(keys)} {kind}" for kind, keys in sorted(kinds.items())]
    return f"{account}/{integration}: " + ", ".join(parts)


# --- Slack -------------------------------------------------------------------------


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Block Kit: a header (account/integration and what happened), the changes as a
    compact list (at most SLACK_LINES, then "and N more"), a context line with the
    snapshot id and time. ``text`` is the notification fallback."""
    summary = str(payload.get("summary") or "zis-inventory")
    where = (
        f"{payload['account']}/{payload['integration']}"
        if payload.get("account")
        else "zis-inventory"
    )
    header = _header_text(payload, where)
    lines = list(_slack_lines(payload))
    total = int(payload.get("events_total") or 0)
    shown = lines[:SLACK_LINES]
    more = max(len(lines), total) - len(shown)
    if more > 0:
        shown.append(f"and {more} more")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:150]}}
    ]
    if shown:
        text = "\n".join(shown)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
    context = []
    if payload.get("snapshot_id") is not None:
        context.append(f"snapshot {payload['snapshot_id']}")
    if payload.get("detected_at"):
        context.append(str(payload["detected_at"]))
    context.append(f"zis-inventory {payload.get('type')}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(" · ".join(context))}]}
    )
    return {"text": summary[:3000], "blocks": blocks}


def _header_text(payload: Mapping[str, Any], where: str) -> str:
    kind = payload.get("type")
    if kind == "snapshot":
        if payload.get("first_inventory"):
            return f"{where}: first inventory: {payload.get('connection_count')} connections"
        counts = _count_events(payload.get("events") or [])
        total = payload.get("events_total") or 0
        what = ", ".join(f"{n} {k}" for k, n in counts.items()) or f"{total} changes"
        return f"{where}: {what}"
    if kind == "expiry_warning":
        c = payload.get("connection") or {}
        if payload.get("kind") == "expired":
            return f"{where}: token expired: {c.get('type')} {c.get('name')}"
        return (
            f"{where}: token expires within {payload.get('threshold_days')} days: "
            f"{c.get('type')} {c.get('name')}"
        )
    if kind == "snapshot_failed":
        return {
            "failed": f"{where}: snapshot failed",
            "held": f"{where}: snapshot held (not applied)",
            "recovered": f"{where}: recovered, snapshot complete",
        }.get(str(payload.get("kind")), f"{where}: snapshot {payload.get('kind')}")
    if kind == "finding":
        f = payload.get("finding") or {}
        return f"{where}: {f.get('severity')} finding {f.get('rule')} {f.get('slug')}"
    return str(payload.get("summary") or "zis-inventory")


def _count_events(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    keys: dict[str, set[tuple[Any, Any]]] = {}
    for e in events:
        keys.setdefault(str(e.get("change")), set()).add((e.get("type"), e.get("name")))
    return {k: len(v) for k, v in keys.items()}


def _slack_lines(payload: Mapping[str, Any]) -> Iterable[str]:
    kind = payload.get("type")
    if kind == "snapshot":
        for e in payload.get("events") or []:
            line = f"{e['change']} {_escape(e['type'])} `{_value(e['name'])}`"
            if e.get("field"):
                line += (
                    f" {_escape(e['field'])}: {_value(e.get('old_value'))} → "
                    f"{_value(e.get('new_value'))}"
                )
            yield line
    elif kind == "snapshot_failed" and payload.get("error"):
        yield _escape(str(payload["error"])[:500])
    elif kind == "expiry_warning":
        c = payload.get("connection") or {}
        yield f"token_expiry {_value(c.get('token_expiry'))}, {payload.get('days_left')} days left"
    elif kind == "finding":
        f = payload.get("finding") or {}
        yield _escape(str(f.get("detail") or "")[:500])
    elif kind == "test":
        yield _escape(str(payload.get("summary")))


def _value(value: Any) -> str:
    if value is None:
        return "∅"
    text = str(value)
    if len(text) > SLACK_VALUE:
        text = text[: SLACK_VALUE - 1] + "…"
    return _escape(text.replace("`", "'").replace("\n", " "))


def _escape(text: str) -> str:
    # Slack's mrkdwn control characters; a value can never become a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
