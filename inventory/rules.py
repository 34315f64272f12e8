"""The rules of §12, pure: each rule is a row of data (id, slug, default severity,
parameters, rationale, remediation) and one small function over the inventory's records,
like ScoutSuite's rule files or Prowler's check metadata. Also here, once: when time alone
changes a rule's hits, the rules in force under the settings, and suppressions.

Time boundaries, the same as ``check`` and the reports: a token whose ``token_expiry`` is
at or before the evaluation time has expired (ZIS004), one after it and at most
``within_days`` ahead is expiring (ZIS005); ``updated_at`` exactly ``max_age_days`` old is
not yet stale (ZIS003), nor is a last complete snapshot exactly ``max_age`` old (ZIS010).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from .durations import span
from .records import Connection, OAuthClient, format_timestamp
from .types import SEVERITIES

TOKEN_TYPES = ("api_key", "basic_auth", "bearer_token")  # a secret sent as it is
ZENDESK_API_TOKENS_END = "2027-04-30"


# --- expiry and staleness, once: the rules, `check`, the reports, the metrics, the outbox's
# ledger and the evidence pack all ask these. Each is written with comparison operators
# only, so it holds of datetimes and of SQLAlchemy column expressions alike (``&`` of two
# conditions is their AND), and a query filters on the very predicate a rule applies.


def has_expired(expiry: Any, at: Any) -> Any:
    """A token whose expiry is at or before ``at`` has expired then."""
    return expiry <= at


def expires_within(expiry: Any, at: Any, within: timedelta) -> Any:
    """Not yet expired at ``at``, and expired at most ``within`` later."""
    return (expiry > at) & (expiry <= at + within)


def is_stale(last_complete: datetime | None, at: datetime, max_age: timedelta) -> bool:
    """No complete snapshot, or the last one started more than ``max_age`` before ``at``
    (one exactly ``max_age`` old is not yet stale)."""
    return last_complete is None or last_complete < at - max_age


@dataclass(frozen=True)
class RuleSettings:
    """[findings.rules.ZISnnn] as given: None (or a missing parameter) = the rule's default."""

    enabled: bool | None = None
    severity: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suppression:
    """One [[findings.suppress]], resolved: in force through the whole ``until`` day (UTC)."""

    index: int
    rule: str
    reason: str
    until: date
    account: str = "*"
    integration: str = "*"
    type: str = "*"
    name: str = "*"

    def matches(
        self, rule: str, account: str, integration: str, type_: str | None, name: str | None
    ) -> bool:
        return rule == self.rule and all(
            fnmatchcase(value or "", glob)
            for value, glob in (
                (account, self.account),
                (integration, self.integration),
                (type_, self.type),
                (name, self.name),
            )
        )

    def in_force(self, at: datetime) -> bool:
        return at.astimezone(UTC).date() <= self.until

    @property
    def scope(self) -> str:
        return f"{self.account}/{self.integration}/{self.type}/{self.name}"

    def text(self) -> str:
        """What the findings table keeps in suppressed_by."""
        return f"findings.suppress[{self.index}] {self.rule} on {self.scope}: {self.reason}"


@dataclass(frozen=True)
class FindingsSettings:
    fail_on: str = "high"
    rules: Mapping[str, RuleSettings] = field(default_factory=dict)
    suppress: tuple[Suppression, ...] = ()


def severity_rank(severity: str) -> int:
    """low 1 .. critical 4; "none" (a fail_on that never fails) 5."""
    return SEVERITIES.index(severity) + 1 if severity in SEVERITIES else len(SEVERITIES) + 1


# --- what rules read -----------------------------------------------------------------


# A connection where it is: (account, integration, its allow-listed record).
Located = tuple[str, str, Connection]


class HostChange(NamedTuple):
    """A present OAuth client's ``field`` (token_url or auth_url) moved to another host
    ``at`` (when the version with the new host began)."""

    account: str
    integration: str
    uuid: str
    field: str
    old_host: str | None
    new_host: str | None
    at: datetime


class Freshness(NamedTuple):
    """A configured integration and when its last complete snapshot started (None: never)."""

    account: str
    integration: str
    last_complete: datetime | None


@dataclass(frozen=True)
class Inventory:
    """Everything the rules look at, read once per evaluation."""

    connections: Sequence[Located] = ()  # in (account, integration, type, name) order
    freshness: Sequence[Freshness] = ()  # the configured integrations
    configured: frozenset[tuple[str, str]] = frozenset()  # (account, integration) synced
    # (account, integration) the registry lists now; None when it is not known (no
    # integrations table: discovery, §14, is not in this database).
    registry: Sequence[tuple[str, str]] | None = None
    # OAuth clients (§17): the present ones, in (account, integration, uuid) order; the
    # host changes of their URLs; per (account, integration) whose present oauth
    # connections name a client (oauth_client_uuid), the uuids they name.
    clients: Sequence[tuple[str, str, OAuthClient]] = ()
    host_changes: Sequence[HostChange] = ()
    client_uses: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)


class Hit(NamedTuple):
    """A rule firing on one key, with the values that made it fire."""

    account: str
    integration: str
    type: str | None
    name: str | None
    detail: str


Params = Mapping[str, Any]
RuleFunction = Callable[[Inventory, Params, datetime], Iterator[Hit]]
# The first instant after ``now`` at which a rule's hits over the same inventory may
# differ (None: never, time alone changes nothing); findings_reuse keeps a result until it.
ChangeFunction = Callable[[Inventory, Params, datetime], datetime | None]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Literal["days", "regex", "duration"]  # what config/findings.py accepts for it
    default: Any
    help: str


@dataclass(frozen=True)
class Rule:
    id: str
    slug: str
    severity: str  # the default
    scope: Literal["connection", "integration", "account"]  # what one update owns
    rationale: str
    remediation: str
    check: RuleFunction
    params: tuple[Param, ...] = ()
    enabled: bool = True  # by default
    # A connection rule says when time alone changes its hits; None: it cannot say, and
    # its result is never kept (findings_reuse).
    changes_at: ChangeFunction | None = None


def _hit(account: str, integration: str, c: Connection, detail: str) -> Hit:
    return Hit(account, integration, c.type, c.name, detail)


def _ts(value: datetime) -> str:
    return format_timestamp(value)


# --- the rules: one function each ----------------------------------------------------


def no_allowed_domain(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.connections:
        if c.type in TOKEN_TYPES and not c.allowed_domain:
            yield _hit(account, integration, c, f"{c.type} with no allowed_domain")


def wildcard_domain(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.connections:
        if c.allowed_domain is not None and c.allowed_domain.startswith("*."):
            yield _hit(account, integration, c, f"allowed_domain={c.allowed_domain}")


def not_rotated(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    days = p["max_age_days"]
    since = now - timedelta(days=days)
    for account, integration, c in inv.connections:
        if c.updated_at is not None and c.updated_at < since:
            yield _hit(
                account,
                integration,
                c,
                f"updated_at={_ts(c.updated_at)}, more than max_age_days={days} ago",
            )


def expired(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.connections:
        if c.type == "oauth" and c.token_expiry is not None and has_expired(c.token_expiry, now):
            yield _hit(account, integration, c, f"token_expiry={_ts(c.token_expiry)} has passed")


def expiring(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    days = p["within_days"]
    within = timedelta(days=days)
    for account, integration, c in inv.connections:
        e = c.token_expiry
        if c.type == "oauth" and e is not None and expires_within(e, now, within):
            yield _hit(account, integration, c, f"token_expiry={_ts(e)}, within within_days={days}")


def no_expiry_known(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.connections:
        if c.type == "oauth" and c.token_expiry is None:
            yield _hit(account, integration, c, "oauth with no token_expiry")


def zendesk_api_token(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.connections:
        # Zendesk's own spelling is "email/token"; the suffix is matched in any case.
        if c.type == "basic_auth" and c.username and c.username.lower().endswith("/token"):
            yield _hit(account, integration, c, f"username={c.username} (a Zendesk API token)")


def name_policy(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    pattern = re.compile(p["pattern"])
    for account, integration, c in inv.connections:
        if not pattern.search(c.name):
            yield _hit(
                account, integration, c, f"name={c.name} does not match pattern={p['pattern']}"
            )


CLIENT_URLS = ("auth_url", "token_url")


def url_host(url: str | None) -> str | None:
    """The host of a URL, lower case; None when it has none."""
    try:
        host = urlsplit(url or "").hostname
    except ValueError:
        return None
    return host or None


def _client_hit(account: str, integration: str, c: OAuthClient, detail: str) -> Hit:
    return Hit(account, integration, *c.label, detail)


def client_url_not_https(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.clients:
        plain = [
            f"{f}={url}"
            for f in CLIENT_URLS
            if (url := getattr(c, f)) is not None and not url.lower().startswith("https://")
        ]
        if plain:
            yield _client_hit(account, integration, c, "; ".join(plain) + " (not https://)")


def client_url_changed(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    since = now - timedelta(days=p["within_days"])
    latest: dict[tuple[str, str, str], dict[str, HostChange]] = {}
    for h in inv.host_changes:
        if since < h.at <= now:
            mine = latest.setdefault((h.account, h.integration, h.uuid), {})
            if h.field not in mine or mine[h.field].at < h.at:
                mine[h.field] = h
    for account, integration, c in inv.clients:
        changes = latest.get((account, integration, c.uuid))
        if changes:
            yield _client_hit(
                account,
                integration,
                c,
                "; ".join(
                    f"{f} host changed from {h.old_host} to {h.new_host} at {_ts(h.at)}"
                    for f, h in sorted(changes.items())
                ),
            )


def client_unused(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, integration, c in inv.clients:
        used = inv.client_uses.get((account, integration))
        if used is not None and c.uuid not in used:
            yield _client_hit(
                account, integration, c, "no present oauth connection names it (oauth_client_uuid)"
            )


def integration_not_inventoried(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    for account, name in inv.registry or ():
        if (account, name) not in inv.configured:
            yield Hit(account, name, None, None, "listed by the registry, not configured")


# --- when time alone changes a connection rule's hits -----------------------------------


def timeless(inv: Inventory, p: Params, now: datetime) -> datetime | None:
    return None


def _earliest(instants: Iterable[datetime]) -> datetime | None:
    return min(instants, default=None)


def not_rotated_changes(inv: Inventory, p: Params, now: datetime) -> datetime | None:
    age = timedelta(days=p["max_age_days"])  # fires once updated_at + age has passed
    return _earliest(
        c.updated_at + age
        for _, _, c in inv.connections
        if c.updated_at is not None and c.updated_at + age >= now
    )


def expired_changes(inv: Inventory, p: Params, now: datetime) -> datetime | None:
    return _earliest(
        c.token_expiry
        for _, _, c in inv.connections
        if c.type == "oauth" and c.token_expiry is not None and c.token_expiry > now
    )


def expiring_changes(inv: Inventory, p: Params, now: datetime) -> datetime | None:
    ahead = timedelta(days=p["within_days"])  # fires from expiry - ahead until expiry

    def edges() -> Iterator[datetime]:
        for _, _, c in inv.connections:
            e = c.token_expiry
            if c.type == "oauth" and e is not None and e > now:
                yield e - ahead if e - ahead > now else e

    return _earliest(edges())


def stale_inventory(inv: Inventory, p: Params, now: datetime) -> Iterator[Hit]:
    max_age = p["max_age"]
    for f in inv.freshness:
        if f.last_complete is None:
            yield Hit(f.account, f.integration, None, None, "no complete snapshot")
        elif is_stale(f.last_complete, now, max_age):
            yield Hit(
                f.account,
                f.integration,
                None,
                None,
                f"last complete snapshot {_ts(f.last_complete)}, more than "
                f"max_age={span(max_age)} ago",
            )


RULES: tuple[Rule, ...] = (
    Rule(
        "ZIS001",
        "no-allowed-domain",
        "high",
        "connection",
        "An api_key, basic_auth or bearer_token connection with no allowed_domain may be "
        "sent to any host a flow names, so one mistaken or malicious flow step leaks it.",
        "Set allowed_domain on the connection to the one host that needs the credential.",
        no_allowed_domain,
        changes_at=timeless,
    ),
    Rule(
        "ZIS002",
        "wildcard-domain",
        "medium",
        "connection",
        "An allowed_domain beginning with '*.' lets the credential go to every subdomain, "
        "including ones another party can host content on.",
        "Narrow allowed_domain to the exact host the integration calls.",
        wildcard_domain,
        changes_at=timeless,
    ),
    Rule(
        "ZIS003",
        "not-rotated",
        "medium",
        "connection",
        "A credential whose updated_at is older than max_age_days has not been rotated for "
        "that long; a long-lived secret is more likely to have leaked unnoticed.",
        "Rotate the credential at its provider and update the connection.",
        not_rotated,
        (Param("max_age_days", "days", 365, "days since updated_at before it fires"),),
        changes_at=not_rotated_changes,
    ),
    Rule(
        "ZIS004",
        "expired",
        "high",
        "connection",
        "An OAuth token whose token_expiry has passed (at or before now) no longer works: "
        "the flows that use it fail.",
        "Re-authorize the OAuth connection, or remove it if nothing uses it.",
        expired,
        changes_at=expired_changes,
    ),
    Rule(
        "ZIS005",
        "expiring",
        "medium",
        "connection",
        "An OAuth token that expires within within_days will stop working soon.",
        "Re-authorize the OAuth connection before its token_expiry.",
        expiring,
        (Param("within_days", "days", 14, "days ahead of now a token_expiry fires"),),
        changes_at=expiring_changes,
    ),
    Rule(
        "ZIS006",
        "no-expiry-known",
        "low",
        "connection",
        "An OAuth connection with no token_expiry cannot be watched for expiry.",
        "Check the token at its provider; re-authorize it if its lifetime is unknown.",
        no_expiry_known,
        changes_at=timeless,
    ),
    Rule(
        "ZIS007",
        "zendesk-api-token",
        "high",
        "connection",
        "A basic_auth connection whose username ends in '/token' uses a Zendesk API token; "
        f"these stop working on {ZENDESK_API_TOKENS_END}.",
        "Replace it with an OAuth connection (or another supported credential) before "
        f"{ZENDESK_API_TOKENS_END}.",
        zendesk_api_token,
        changes_at=timeless,
    ),
    Rule(
        "ZIS008",
        "name-policy",
        "low",
        "connection",
        "Connection names that follow a policy say what they are for; others are hard to "
        "review. Off by default: the policy is yours to set.",
        "Rename the connection (and the flows using it) to match the pattern.",
        name_policy,
        (Param("pattern", "regex", "^[a-z][a-z0-9_]+$", "regular expression (re.search)"),),
        enabled=False,
        changes_at=timeless,
    ),
    Rule(
        "ZIS009",
        "integration-not-inventoried",
        "medium",
        "account",
        "An integration the account's registry lists that no configuration syncs holds "
        "connections nobody inventories.",
        "Add the integration to the account's integrations (python -m inventory discover "
        "prints the TOML), or delete it in Zendesk if it is unused.",
        integration_not_inventoried,
    ),
    Rule(
        "ZIS010",
        "stale-inventory",
        "high",
        "integration",
        "A configured integration with no complete snapshot within max_age: the inventory "
        "of it is out of date, and the other rules see an old state.",
        "Look at its last snapshots (python -m inventory snapshots --failed) and fix the "
        "token, scope or network problem they name.",
        stale_inventory,
        (Param("max_age", "duration", timedelta(days=2), "duration such as 2d, 48h or 90m"),),
    ),
    Rule(
        "ZIS011",
        "client-url-not-https",
        "high",
        "integration",
        "An OAuth client whose auth_url or token_url is not https:// sends its client "
        "secret and the tokens it gets over a connection anyone on the path can read.",
        "Change the client's URLs to the provider's https:// endpoints.",
        client_url_not_https,
    ),
    Rule(
        "ZIS012",
        "client-url-changed",
        "critical",
        "integration",
        "Whoever controls a client's token_url receives its client secret at the next token "
        "refresh: a token_url or auth_url moved to another host within within_days may be "
        "a redirection of the secret.",
        "Confirm the new host is the provider's; if not, rotate the client secret at the "
        "provider and restore the URL, then find who changed it.",
        client_url_changed,
        (Param("within_days", "days", 30, "days a host change stays a finding"),),
    ),
    Rule(
        "ZIS013",
        "client-unused",
        "low",
        "integration",
        "An OAuth client no present OAuth connection names keeps a client secret for "
        "nothing (judged only where the API gives connections' oauth_client_uuid).",
        "Delete the client in ZIS (and revoke its secret at the provider) if nothing will use it.",
        client_unused,
    ),
)
RULES_BY_ID: Mapping[str, Rule] = {r.id: r for r in RULES}


# --- rules in force and their findings -----------------------------------------------


@dataclass(frozen=True)
class ActiveRule:
    rule: Rule
    enabled: bool
    severity: str
    params: Params


def rules_in_force(settings: FindingsSettings) -> list[ActiveRule]:
    out = []
    for rule in RULES:
        given = settings.rules.get(rule.id)
        params = {p.name: p.default for p in rule.params}
        enabled, severity = rule.enabled, rule.severity
        if given is not None:
            params.update(given.params)
            enabled = rule.enabled if given.enabled is None else given.enabled
            severity = given.severity or rule.severity
        out.append(ActiveRule(rule, enabled, severity, params))
    return out


def show_param(value: Any) -> str:
    return span(value) if isinstance(value, timedelta) else str(value)


class Finding(NamedTuple):
    """A rule's hit as a finding: every field, in order, is the first columns of a new
    findings row and the first fields of an OpenedFinding."""

    rule: str
    slug: str
    severity: str
    account: str
    integration: str
    type: str | None
    name: str | None
    detail: str

    @property
    def key(self) -> tuple[str, str, str, str | None, str | None]:
        return (self.rule, self.account, self.integration, self.type, self.name)

    @property
    def where(self) -> str:
        parts = [self.account, self.integration, self.type, self.name]
        return "/".join(p for p in parts if p is not None)


def evaluate(inventory: Inventory, active: Iterable[ActiveRule], now: datetime) -> list[Finding]:
    """Every enabled rule over the inventory, at ``now``."""
    found: list[Finding] = []
    make = Finding._make
    for a in active:
        if not a.enabled:
            continue
        head = (a.rule.id, a.rule.slug, a.severity)
        found += [make(head + hit) for hit in a.rule.check(inventory, a.params, now)]
    return found


def suppression_for(
    f: Finding, suppressions: Iterable[Suppression], at: datetime
) -> Suppression | None:
    """The first suppression in force at ``at`` that matches the finding."""
    for s in suppressions:
        if s.matches(f.rule, f.account, f.integration, f.type, f.name) and s.in_force(at):
            return s
    return None


def lapse_note(rule: str, where: str, until: date | None, at: datetime) -> str:
    if until is not None and until < at.astimezone(UTC).date():
        return f"suppression for {rule} on {where} expired {until.isoformat()}"
    return f"suppression for {rule} on {where} is no longer configured"
