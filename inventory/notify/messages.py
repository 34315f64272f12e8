"""Pure: the webhook payloads of §11 (canonical JSON, stable keys) and the Slack Block Kit
message made from one. Only allow-listed metadata goes in; nothing here does I/O.

A snapshot makes one ``Message`` (a run one more, for its findings with no connection):
its events (changes, findings opened and resolved, expiry thresholds crossed) are
filtered for each sink by ``Message.for_sink``, which lists at most MAX_EVENTS of them
and counts the rest."""

from __future__ import annotations

import shlex
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..config import Sink
from ..records import format_timestamp
from ..types import SEVERITIES

MAX_EVENTS = 50  # events listed by name in one message; the rest are counted
SLACK_VALUE = 60  # characters of one API value shown in Slack
SLACK_SECTION = 2900  # characters of one section's text (Block Kit allows 3,000)
SLACK_HEADER = 150
CHANGE_KINDS = ("added", "removed", "modified", "restored")
EVENT_CHANGES = (*CHANGE_KINDS, "finding_opened", "finding_resolved", "expiring", "expired")
BY_SEVERITY = tuple(reversed(SEVERITIES))  # critical first
FAMILIES = ("change", "finding", "expiry")  # the order of the commands in "more"


class FindingLike(Protocol):
    """What the findings engine gives for a finding opened or resolved (store.findings)."""

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


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeEvent:
    change: str
    type: str
    name: str
    field: str | None
    old_value: str | None
    new_value: str | None

    def wanted(self, sink: Sink) -> bool:
        if self.change not in sink.events:
            return False
        return not (
            self.change == "modified" and sink.fields is not None and self.field not in sink.fields
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "type": self.type,
            "name": self.name,
            "field": self.field,
            "old_value": self.old_value,
            "new_value": self.new_value,
        }


def finding_wanted(finding: FindingLike, sink: Sink) -> bool:
    """A finding event (``finding`` in the sink's events checked by the caller) at
    ``min_severity`` and up, in the sink's accounts and integrations."""
    if not _in_scope(sink, finding.account, finding.integration):
        return False
    return sink.min_severity is None or SEVERITIES.index(finding.severity) >= SEVERITIES.index(
        sink.min_severity
    )


def finding_json(change: str, f: FindingLike, *, run: bool) -> dict[str, Any]:
    """finding_opened | finding_resolved; a run's (no connection key) also says where."""
    out: dict[str, Any] = {
        "change": change,
        "rule": f.rule,
        "slug": f.slug,
        "severity": f.severity,
        "type": f.type,
        "name": f.name,
        "detail": f.detail,
    }
    if run:
        out |= {"account": f.account, "integration": f.integration}
    return out


@dataclass(frozen=True)
class ExpiryEvent:
    """expiring | expired (threshold 0): one warning of the expiry ledger."""

    change: str
    type: str
    name: str
    threshold_days: int
    days_left: int
    token_expiry: datetime

    def wanted(self, sink: Sink) -> bool:
        return self.change in sink.events

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "type": self.type,
            "name": self.name,
            "threshold_days": self.threshold_days,
            "days_left": self.days_left,
            "token_expiry": _stamp(self.token_expiry),
        }


def expiry_event(
    type_name: str, name: str, token_expiry: datetime, threshold: int, at: datetime
) -> ExpiryEvent:
    seconds = (token_expiry - at).total_seconds()
    days_left = max(0, int(seconds // 86400))
    change = "expired" if threshold == 0 else "expiring"
    return ExpiryEvent(change, type_name, name, threshold, days_left, token_expiry)


@dataclass(frozen=True)
class Events:
    """Events of one kind in a message, in the order listed: the items as the layers
    below give them (no object per event is made: a first inventory may open a finding
    for most of 10,000 connections), what selects them, how one is shown."""

    family: str  # change | finding | expiry: which command lists the ones not shown
    items: Sequence[Any]
    as_json: Callable[[Any], dict[str, Any]]
    wanted: Callable[[Any, Sink], bool]
    kinds: frozenset[str]  # the [[notify]] event kinds that may select some of them

    def for_sink(self, sink: Sink) -> Sequence[Any]:
        if not self.kinds & sink.events:
            return ()
        unfiltered = (sink.accounts, sink.integrations, sink.min_severity, sink.fields)
        if self.kinds <= sink.events and unfiltered == (None, None, None, None):
            return self.items  # each item would be wanted: none is looked at
        return [item for item in self.items if self.wanted(item, sink)]


def _findings(change: str, found: Sequence[FindingLike], *, run: bool) -> Events:
    """Findings as events, the most severe first (a stable sort: otherwise as given)."""
    ranked = sorted(found, key=lambda f: BY_SEVERITY.index(f.severity))
    return Events(
        "finding",
        ranked,
        lambda f: finding_json(change, f, run=run),
        finding_wanted,
        frozenset({"finding"}),
    )


def _expiry(change: str, events: Sequence[ExpiryEvent]) -> Events:
    mine = [e for e in events if e.change == change]
    return Events("expiry", mine, ExpiryEvent.as_json, ExpiryEvent.wanted, frozenset({change}))


def _changes(changes: Sequence[ChangeEvent]) -> Events:
    return Events(
        "change", changes, ChangeEvent.as_json, ChangeEvent.wanted, frozenset(CHANGE_KINDS)
    )


# --- messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message (a snapshot's, or a run's findings), before it is made for each sink.

    ``event`` is what the delivery log shows (snapshot, first_inventory, recovered,
    failed, held, run_findings); ``always`` the [[notify]] kinds for which it is sent
    even when none of its events is (the first-inventory summary answers to ``added``, a
    failure to ``failed`` or ``held``); ``body`` the payload without ``id`` and events."""

    event: str
    account: str | None
    integration: str | None
    snapshot_id: int | None
    body: dict[str, Any]
    events: tuple[Events, ...] = ()  # in the order listed
    always: frozenset[str] = frozenset()
    hints: Mapping[str, str] = field(default_factory=dict)  # family -> the command

    def for_sink(self, sink: Sink) -> dict[str, Any] | None:
        """The payload this sink gets (without ``id``), or None when its filters leave
        nothing to tell: the first MAX_EVENTS of its events listed, all counted."""
        if self.account is not None and not _in_scope(sink, self.account, self.integration):
            return None
        listed: list[dict[str, Any]] = []
        total = 0
        hidden: set[str] = set()
        for group in self.events:
            kept = group.for_sink(sink)
            shown = kept[: MAX_EVENTS - len(listed)]
            listed += map(group.as_json, shown)
            total += len(kept)
            if len(kept) > len(shown):
                hidden.add(group.family)
        if not total and not self.always & sink.events:
            return None
        more = None
        if total > len(listed):
            commands = [self.hints[f] for f in FAMILIES if f in hidden and f in self.hints]
            more = {"count": total - len(listed), "commands": commands}
        return {**self.body, "events": listed, "events_total": total, "more": more}


def _in_scope(sink: Sink, account: str, integration: str | None) -> bool:
    if sink.accounts is not None and account not in sink.accounts:
        return False
    return sink.integrations is None or integration in sink.integrations


def new_webhook_id() -> str:
    """One per message, kept across every attempt: receivers dedupe on it."""
    return f"msg_{uuid.uuid4().hex}"


def encode(payload: Mapping[str, Any]) -> str:
    """Canonical JSON (RFC 8785): the bytes signed are the bytes stored and sent."""
    import rfc8785  # only when a message is made: nothing of it at import time

    return rfc8785.dumps(dict(payload)).decode("utf-8")


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


@dataclass(frozen=True)
class SnapshotFacts:
    """What a snapshot message says besides its events."""

    account: str
    integration: str
    snapshot_id: int
    at: datetime
    status: str  # complete | failed | held
    connection_count: int
    counts: tuple[int, int, int, int]  # the snapshot row's added, removed, modified, restored
    error: str | None = None
    previous_status: str | None = None  # the integration's previous snapshot's
    first_inventory: bool = False
    connection_types: Mapping[str, int] = field(default_factory=dict)
    expiry_days: int = 30  # the widest expiry threshold, for the command that lists them


def snapshot_message(
    facts: SnapshotFacts,
    changes: Sequence[ChangeEvent],
    opened: Sequence[FindingLike],
    resolved: Sequence[FindingLike],
    expiry: Sequence[ExpiryEvent],
) -> Message:
    """The one message of a snapshot: type ``snapshot`` (complete) or ``snapshot_failed``
    (failed, held). Its events, in the order listed when not all can be: findings opened
    (the most severe first), tokens expired, expiring, the changes in the order stored,
    findings resolved."""
    f = facts
    events = (
        _findings("finding_opened", opened, run=False),
        _expiry("expired", expiry),
        _expiry("expiring", expiry),
        _changes(changes),
        _findings("finding_resolved", resolved, run=False),
    )
    counts = dict(zip(CHANGE_KINDS, f.counts, strict=True)) | {
        "finding_opened": len(opened),
        "finding_resolved": len(resolved),
        "expiring": sum(1 for e in expiry if e.change == "expiring"),
        "expired": sum(1 for e in expiry if e.change == "expired"),
    }
    body: dict[str, Any] = {
        "account": f.account,
        "integration": f.integration,
        "snapshot_id": f.snapshot_id,
        "detected_at": _stamp(f.at),
        "counts": counts,
        "findings_by_severity": by_severity(opened),
    }
    where = shlex.join(["--account", f.account, "--integration", f.integration])
    hints = {
        "change": f"python -m inventory changes --snapshot {f.snapshot_id}",
        "finding": f"python -m inventory findings {where}",
        "expiry": (
            f"python -m inventory connections {where} --expiring-within {f.expiry_days}d --expired"
        ),
    }
    recovered = f.previous_status if f.previous_status in ("failed", "held") else None
    if f.status in ("failed", "held"):
        body |= {
            "type": "snapshot_failed",
            "kind": f.status,
            "status": f.status,
            "previous_status": f.previous_status,
            "error": f.error,
        }
        new = f.previous_status != f.status  # a failure repeated is told when it starts
        event, always = f.status, frozenset({f.status} if new else ())
    else:
        body |= {
            "type": "snapshot",
            "first_inventory": f.first_inventory,
            "connection_count": f.connection_count,
            "connection_types": dict(sorted(f.connection_types.items())),
            "recovered_from": recovered,
        }
        if f.first_inventory:
            told = {"added", recovered} if recovered else {"added"}
            event, always = "first_inventory", frozenset(told)
        elif recovered is not None:
            event, always = "recovered", frozenset({recovered})
        else:
            event, always = "snapshot", frozenset()
    body["summary"] = f"{f.account}/{f.integration}: {what_happened(body, str)}"
    return Message(event, f.account, f.integration, f.snapshot_id, body, events, always, hints)


def run_findings_message(
    run_id: int, at: datetime, opened: Sequence[FindingLike], resolved: Sequence[FindingLike]
) -> Message:
    """The run's findings that belong to no connection (ZIS009 of the registry, ZIS010
    stale inventory), grouped in one message per run."""
    events = (
        _findings("finding_opened", opened, run=True),
        _findings("finding_resolved", resolved, run=True),
    )
    body: dict[str, Any] = {
        "type": "run_findings",
        "account": None,
        "integration": None,
        "snapshot_id": None,
        "run_id": run_id,
        "detected_at": _stamp(at),
        "counts": {"finding_opened": len(opened), "finding_resolved": len(resolved)},
        "findings_by_severity": by_severity(opened),
    }
    body["summary"] = f"run {run_id}: {what_happened(body, str)}"
    hints = {"finding": "python -m inventory findings --rule ZIS009 --rule ZIS010"}
    return Message("run_findings", None, None, None, body, events, frozenset(), hints)


def by_severity(found: Iterable[FindingLike]) -> dict[str, int]:
    counted = Counter(f.severity for f in found)
    return {s: counted[s] for s in BY_SEVERITY}


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def what_happened(payload: Mapping[str, Any], show: Callable[[str], str]) -> str:
    """The true counts of a payload in one line ("first inventory: 36 connections (12
    api_key, ...); 39 findings opened: 3 high, 36 medium; 4 expiring"); ``show`` renders
    a value that came from the API (a connection type)."""
    counts: Mapping[str, int] = payload.get("counts") or {}
    parts: list[str] = []
    kind = payload.get("type")
    if kind == "snapshot_failed":
        parts.append("snapshot failed" if payload.get("kind") == "failed" else "snapshot held")
        if payload.get("previous_status") == payload.get("status"):
            parts[-1] += " again"
    if kind == "snapshot" and payload.get("first_inventory"):
        types = payload.get("connection_types") or {}
        listed = ", ".join(f"{n:,} {show(t)}" for t, n in types.items())
        parts.append(
            f"first inventory: {_n(int(payload.get('connection_count') or 0), 'connection')}"
            + (f" ({listed})" if listed else "")
        )
    elif kind == "snapshot":
        if payload.get("recovered_from"):
            parts.append(f"recovered (was {payload['recovered_from']})")
        changed = [f"{counts[k]:,} {k}" for k in CHANGE_KINDS if counts.get(k)]
        if changed:
            parts.append(", ".join(changed))
    opened = int(counts.get("finding_opened") or 0)
    if opened:
        severities = payload.get("findings_by_severity") or {}
        spread = ", ".join(f"{n:,} {s}" for s, n in severities.items() if n)
        parts.append(f"{_n(opened, 'finding')} opened: {spread}")
    if counts.get("finding_resolved"):
        parts.append(f"{_n(int(counts['finding_resolved']), 'finding')} resolved")
    for k in ("expired", "expiring"):
        if counts.get(k):
            parts.append(f"{counts[k]:,} {k}")
    return "; ".join(parts) or "no changes"


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


# --- Slack -------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's three control characters, as Slack documents: a value can never become a
    link or a mention. Every value shown in a Slack message goes through it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(value: Any, limit: int = SLACK_VALUE) -> str:
    """An API value in mrkdwn: escaped, shortened, on one line, in inline code so that
    ``*``, ``_`` and ``~`` in it are shown and not formatted (mrkdwn has no escape for
    them); a backtick in it, which would end the code, is shown as '."""
    if value is None:
        return "∅"
    text = str(value).replace("`", "'").replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{escape(text)}`" if text.strip() else f'"{text}"'


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Block Kit: a header (where, and what kind of message), a section with the true
    counts (also the ``text`` fallback), the events listed (at most MAX_EVENTS lines, in
    sections of at most SLACK_SECTION characters), how many more and where to see them,
    the error of a failed snapshot, and a context line."""
    kind = payload.get("type")
    where = f"{payload['account']}/{payload['integration']}" if payload.get("account") else None
    title = {
        "snapshot": "first inventory" if payload.get("first_inventory") else "snapshot",
        "snapshot_failed": f"snapshot {payload.get('kind')}",
        "run_findings": f"findings of run {payload.get('run_id')}",
        "test": "test message",
    }.get(str(kind), str(kind))
    header = _fit(f"{where}: {title}" if where else f"zis-inventory: {title}", SLACK_HEADER)
    if kind == "test":
        text = escape(str(payload.get("summary")))
    else:
        text = (f"{code(where, 200)}: " if where else "") + what_happened(payload, code)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        _section(text),
    ]
    if kind == "snapshot_failed" and payload.get("error"):
        blocks.append(_section("error: " + code(payload["error"], 500)))
    lines = [_line(e) for e in payload.get("events") or []]
    blocks += [_section(chunk) for chunk in _chunks(lines)]
    more = payload.get("more")
    if more:
        commands = ", ".join(f"`{escape(c)}`" for c in more.get("commands") or [])
        rest = f"and {int(more['count']):,} more"
        blocks.append(_section(f"{rest}: {commands}" if commands else rest))
    context = [f"zis-inventory {kind}"]
    if payload.get("snapshot_id") is not None:
        context.insert(0, f"snapshot {payload['snapshot_id']}")
    if payload.get("detected_at"):
        context.insert(-1, str(payload["detected_at"]))
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(" · ".join(context))}]}
    )
    return {"text": text, "blocks": blocks}


def _fit(raw: str, limit: int) -> str:
    """``raw`` escaped, shortened (before escaping, so no entity is cut) to ``limit``."""
    text = escape(raw)
    if len(text) <= limit:
        return text
    out: list[str] = []
    size = 1  # the "…"
    for char in raw:
        piece = escape(char)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(lines: Sequence[str]) -> Iterable[str]:
    """The lines, joined into texts of at most SLACK_SECTION characters."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + 1 + len(line) > SLACK_SECTION:
            yield "\n".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + (1 if size else 0)
    if chunk:
        yield "\n".join(chunk)


def _line(e: Mapping[str, Any]) -> str:
    """One event as a line of mrkdwn: every value from the API through ``code``."""
    change = e.get("change")
    subject = f"{code(e.get('type'))} {code(e.get('name'))}"
    if change in ("finding_opened", "finding_resolved"):
        what = "opened" if change == "finding_opened" else "resolved"
        line = f"finding {what}: {e['severity']} {e['rule']} {e['slug']}"
        if e.get("type") is not None:
            line += f" {subject}"
        if e.get("account") is not None:
            line += " in " + code(f"{e['account']}/{e['integration']}", 200)
        if e.get("severity") == "critical" and e.get("detail"):  # e.g. ZIS012's old and new host
            line += ": " + code(e["detail"], 200)
        return line
    if change == "expiring":
        return (
            f"expiring: {subject}: {e['days_left']} days left (threshold {e['threshold_days']}), "
            f"token_expiry {code(e.get('token_expiry'))}"
        )
    if change == "expired":
        return f"expired: {subject}: token_expiry {code(e.get('token_expiry'))}"
    line = f"{change} {subject}"
    if e.get("field"):
        line += f" {code(e['field'])}: {code(e.get('old_value'))} → {code(e.get('new_value'))}"
    return line
