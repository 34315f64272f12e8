"""TOML configuration -> frozen settings objects, validated before any work.

Tokens are read only from an environment variable or a file and wrapped in Secret,
whose repr() and str() mask the value.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from .durations import parse_duration
from .errors import ConfigError
from .rules import RULES_BY_ID, FindingsSettings, Param, RuleSettings, Suppression
from .secret import Credential, Secret, UnreadableToken, masked_url

DEFAULT_CONFIG = "inventory.toml"
DEFAULT_DATABASE_URL = "sqlite:///inventory.db"
CONFIG_ENV = "INVENTORY_CONFIG"
DATABASE_URL_ENV = "INVENTORY_DATABASE_URL"

SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
INTEGRATION_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EMAIL_RE = re.compile(r"^[^@\s:/]+@[^@\s:/]+$")  # no ':' (basic auth) nor '/' ("/token")
TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: safe in a header

Severity = Literal["low", "medium", "high", "critical"]
MAX_SUPPRESSION_DAYS = 365


# Keys that would hold a literal secret; their values are never read into a message.
LITERAL_TOKEN_KEYS = ("token", "access_token", "api_token", "password", "secret")
ADMIN_LITERAL_KEYS = (*LITERAL_TOKEN_KEYS, "oauth_token")
LITERAL_SINK_KEYS = ("secret", "signing_secret", "headers", "token", "password")

# What a [[notify]] sink may ask for (spec §11), and the findings' severities (§12).
EVENT_KINDS = (
    "added",
    "removed",
    "modified",
    "restored",
    "expiring",
    "expired",
    "failed",
    "held",
    "finding",
)
SINK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp",
     "webhook-signature", "user-agent"}
)  # fmt: skip


# --- the file's schema -------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatabaseSettings(_Strict):
    url: str = DEFAULT_DATABASE_URL
    busy_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("busy_timeout_seconds", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class SyncSettings(_Strict):
    page_size: int = Field(default=100, ge=1, le=100)
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=6, ge=0, le=50)
    max_retry_wait_seconds: float = Field(default=300.0, gt=0, le=86400)
    retry_backoff_seconds: float = Field(default=1.0, gt=0, le=600)
    max_pages: int = Field(default=10_000, ge=1)
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_removal_ratio: float = Field(default=0.5, ge=0, le=1)
    max_removal_min: int = Field(default=5, ge=0)
    ca_bundle: str | None = None
    full_compare_interval: timedelta = timedelta(hours=24)

    @field_validator("full_compare_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_duration(v, '"24h", "90m", "7d" or "0"', zero=True)
        if isinstance(v, timedelta):
            return v
        raise ValueError('must be a duration such as "24h", "90m", "7d" or "0"')

    @field_validator(
        "timeout_seconds",
        "max_retry_wait_seconds",
        "retry_backoff_seconds",
        "max_removal_ratio",
        mode="before",
    )
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ScheduleSettings(_Strict):
    cron: str | None = None
    interval_seconds: int | None = Field(default=None, ge=1)
    timezone: str = "UTC"
    run_on_start: bool = True
    misfire_grace_seconds: int = Field(default=300, ge=1)


class DaemonSettings(_Strict):
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    stop_timeout_seconds: float = Field(default=8.0, gt=0, le=300)

    @field_validator("stop_timeout_seconds", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _float(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class NotifyEntry(_Strict):
    """One [[notify]] sink as written; its URL, secret and header values come from the
    environment or a file (a webhook URL that is not secret may be written as ``url``)."""

    name: str
    kind: Literal["slack", "webhook"]
    url: str | None = None
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    headers_env: dict[str, str] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=lambda: list(EVENT_KINDS), min_length=1)
    accounts: list[str] | None = None
    integrations: list[str] | None = None
    fields: list[str] | None = None
    min_severity: Literal["low", "medium", "high", "critical"] | None = None

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in EVENT_KINDS]
        if unknown:
            raise ValueError(
                f"unknown event kind {', '.join(map(repr, unknown))} "
                f"(choose from {', '.join(EVENT_KINDS)})"
            )
        return v


class NotificationsSettings(_Strict):
    expiry_warning_days: list[int] = Field(default_factory=lambda: [30, 14, 7, 1])
    max_attempts: int = Field(default=12, ge=1, le=1000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    backoff_seconds: float = Field(default=30.0, gt=0, le=86400)
    max_backoff_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    lease_seconds: float = Field(default=120.0, gt=0, le=86400)
    poll_seconds: float = Field(default=10.0, gt=0, le=3600)
    batch_size: int = Field(default=50, ge=1, le=1000)

    @field_validator(
        "timeout_seconds",
        "backoff_seconds",
        "max_backoff_seconds",
        "lease_seconds",
        "poll_seconds",
        mode="before",
    )
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _float(v)

    @field_validator("expiry_warning_days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 3650 for d in v):
            raise ValueError("each threshold is a number of days from 1 to 3650")
        if len(set(v)) != len(v):
            raise ValueError("a threshold is listed twice")
        return sorted(v, reverse=True)


class IntegrationEntry(_Strict):
    name: str
    token_env: str | None = None
    token_file: str | None = None


class AdminEntry(_Strict):
    """An account admin's credential for the ZIS registry (§14): an API token with the
    admin's email (basic auth), or an OAuth access token (bearer)."""

    email: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    oauth_token_env: str | None = None
    oauth_token_file: str | None = None


class AccountEntry(_Strict):
    subdomain: str
    base_url: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    integrations: list[str | IntegrationEntry] = Field(min_length=1)
    admin: AdminEntry | None = None


class SuppressEntry(_Strict):
    """One [[findings.suppress]]: a rule id, globs over the key (all optional), why and
    until when."""

    rule: str
    account: str = "*"
    integration: str = "*"
    type: str = "*"
    name: str = "*"
    reason: str
    until: date

    @field_validator("until", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        if isinstance(v, datetime):
            raise ValueError("must be a date such as 2027-03-31, not a date and time")
        if isinstance(v, str):
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                    raise ValueError
                return date.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not a date such as 2027-03-31") from None
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must say why the finding is accepted (a ticket, a control)")
        return v.strip()


class FindingsConfig(_Strict):
    fail_on: Literal["low", "medium", "high", "critical", "none"] = "high"
    # Checked against the rule table (rules.RULES) by _resolve_findings.
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    suppress: list[SuppressEntry] = Field(default_factory=list)


class FileConfig(_Strict):
    database: DatabaseSettings = DatabaseSettings()
    sync: SyncSettings = SyncSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    accounts: list[AccountEntry] = Field(default_factory=list)
    notify: list[NotifyEntry] = Field(default_factory=list)
    notifications: NotificationsSettings = NotificationsSettings()


# --- resolved settings -------------------------------------------------------------


@dataclass(frozen=True)
class TokenFile:
    """Where a token is read from, again at every run: the file and the key naming it."""

    path: str
    key: str  # accounts[0].token_file, for messages


@dataclass(frozen=True)
class Integration:
    account: str
    name: str
    token: Secret
    token_file: TokenFile | None = None  # None: from the environment, kept as loaded


@dataclass(frozen=True)
class AdminCredential:
    """The registry's admin credential: ``basic`` (``email/token:API_TOKEN``) when
    ``email`` is set, else an OAuth bearer token."""

    token: Secret
    email: str | None = None

    @property
    def scheme(self) -> str:
        return "Basic" if self.email is not None else "Bearer"

    def credentials(self) -> Secret:
        """What follows the scheme in the Authorization header."""
        if self.email is None:
            return self.token
        pair = f"{self.email}/token:{self.token.reveal()}"
        return Secret(base64.b64encode(pair.encode()).decode())

    def secrets(self) -> list[str]:
        return [self.token.reveal(), self.credentials().reveal()]

    def header(self) -> Credential:
        """The Authorization header the registry's requests carry."""
        return Credential(self.credentials(), self.scheme, hidden=(self.token,))


@dataclass(frozen=True)
class Account:
    subdomain: str
    base_url: str
    integrations: tuple[Integration, ...]
    admin: AdminCredential | None = None


@dataclass(frozen=True)
class Sink:
    """A resolved [[notify]] sink. ``url``, ``secret`` and header values are Secrets:
    ``shown_url`` is what messages may say about where it sends."""

    name: str
    kind: str  # slack | webhook
    url: Secret
    secret: Secret | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    events: frozenset[str] = frozenset(EVENT_KINDS)
    accounts: frozenset[str] | None = None
    integrations: frozenset[str] | None = None
    fields: frozenset[str] | None = None
    min_severity: str | None = None

    @property
    def shown_url(self) -> str:
        return masked_url(self.url.reveal())

    def secrets(self) -> list[str]:
        values = [self.url.reveal(), *(v.reveal() for _, v in self.headers)]
        if self.secret is not None:
            values.append(self.secret.reveal())
        return [v for v in values if v]


@dataclass(frozen=True)
class Settings:
    source: str
    database_url: str
    database: DatabaseSettings
    sync: SyncSettings
    schedule: ScheduleSettings
    accounts: tuple[Account, ...]
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    findings: FindingsSettings = field(default_factory=FindingsSettings)
    notify: tuple[Sink, ...] = ()
    notifications: NotificationsSettings = field(default_factory=NotificationsSettings)

    def secrets(self) -> list[str]:
        tokens = [
            i.token.reveal()
            for a in self.accounts
            for i in a.integrations
            if not isinstance(i.token, UnreadableToken)
        ]
        admins = [s for a in self.accounts if a.admin for s in a.admin.secrets()]
        return tokens + admins + [v for sink in self.notify for v in sink.secrets()]

    def sink(self, name: str) -> Sink | None:
        return next((s for s in self.notify if s.name == name), None)


# --- loading -----------------------------------------------------------------------


def config_path(
    explicit: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The config file to read, and whether the user named it (so a missing one is an error)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit), True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return Path(DEFAULT_CONFIG), False


def read_file(path: Path) -> FileConfig:
    """Parse and validate the TOML file; every problem names the file and the key."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: configuration file not found; copy config.example.toml to {where} "
            f"or pass --config PATH (or set ${CONFIG_ENV})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the configuration file: {exc.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    _refuse_literal_tokens(where, raw)
    _refuse_literal_sink_secrets(where, raw)
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(where, exc)) from None


def _refuse_literal_tokens(where: str, raw: Mapping[str, Any]) -> None:
    accounts = raw.get("accounts")
    if not isinstance(accounts, list):
        return
    for i, account in enumerate(accounts):
        if not isinstance(account, dict):
            continue
        places: list[tuple[str, Any, tuple[str, ...]]] = [
            (f"accounts[{i}]", account, LITERAL_TOKEN_KEYS)
        ]
        for j, entry in enumerate(account.get("integrations") or []):
            if isinstance(entry, dict):
                places.append((f"accounts[{i}].integrations[{j}]", entry, LITERAL_TOKEN_KEYS))
        if isinstance(account.get("admin"), dict):
            places.append((f"accounts[{i}].admin", account["admin"], ADMIN_LITERAL_KEYS))
        for key_path, table, keys in places:
            for key in keys:
                if key in table:
                    raise ConfigError(
                        f"{where}: {key_path}.{key}: a literal secret is not allowed in the "
                        f'configuration file; remove it and set token_env = "NAME" (and export '
                        f'NAME) or token_file = "/path/to/file" (mode 0600) instead'
                    )


def _refuse_literal_sink_secrets(where: str, raw: Mapping[str, Any]) -> None:
    sinks = raw.get("notify")
    if not isinstance(sinks, list):
        return
    for i, sink in enumerate(sinks):
        if not isinstance(sink, dict):
            continue
        for key in LITERAL_SINK_KEYS:
            if key in sink:
                instead = (
                    'headers_env = { Header-Name = "ENV_NAME" }'
                    if key == "headers"
                    else 'secret_env = "NAME" (and export NAME) or secret_file = "/path" '
                    "(mode 0600)"
                )
                raise ConfigError(
                    f"{where}: notify[{i}].{key}: a literal secret is not allowed in the "
                    f"configuration file; remove it and set {instead} instead"
                )
        if sink.get("kind") == "slack" and "url" in sink:
            raise ConfigError(
                f"{where}: notify[{i}].url: a Slack webhook URL is a secret and may not be "
                'written in the configuration file; remove it and set url_env = "NAME" (and '
                'export NAME) or url_file = "/path/to/file" (mode 0600) instead'
            )


def _describe(where: str, exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _key_path((*prefix, *err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key (check the spelling against config.example.toml)"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
        lines.append(f"{where}: {loc}: {msg}")
    # A union (string or table) reports one error per branch; keep them short and unique.
    return "\n".join(dict.fromkeys(lines))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "IntegrationEntry", "AdminEntry"):
            continue  # union branch names, not keys
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_settings(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    require_accounts: bool = True,
    resolve_tokens: bool | None = None,
    resolve_admin: bool | None = None,
    resolve_sinks: bool | None = None,
) -> Settings:
    """Read the configuration and resolve tokens; raises ConfigError before any work.

    Read-only commands pass ``resolve_tokens=False``: they need the accounts and
    integrations configured, not their tokens. ``resolve_admin`` (default: as
    ``resolve_tokens``) resolves the admin credentials of the registry (``discover``).
    integrations configured, not their tokens. ``resolve_sinks`` (default: as
    ``resolve_tokens``) reads the [[notify]] sinks' URLs, secrets and header values.
    """
    env = os.environ if environ is None else environ
    if resolve_tokens is None:
        resolve_tokens = require_accounts
    path, named = config_path(explicit, env)
    if not named and not path.exists() and not require_accounts:
        file_config = FileConfig()
        where = f"(no {DEFAULT_CONFIG})"
    else:
        file_config = read_file(path)
        where = str(path)
    database_url = env.get(DATABASE_URL_ENV) or file_config.database.url
    if not database_url.strip():
        raise ConfigError(f"{where}: database.url: must not be empty")
    _check_schedule(where, file_config.schedule)
    if file_config.sync.ca_bundle is not None and not Path(file_config.sync.ca_bundle).is_file():
        raise ConfigError(
            f"{where}: sync.ca_bundle: {file_config.sync.ca_bundle} is not a readable file"
        )
    if require_accounts and not file_config.accounts:
        raise ConfigError(
            f"{where}: accounts: no [[accounts]] configured; add one with subdomain, "
            "token_env (or token_file) and integrations (see config.example.toml)"
        )
    accounts = _resolve_accounts(
        where,
        file_config.accounts,
        env,
        resolve_tokens=resolve_tokens,
        resolve_admin=resolve_tokens if resolve_admin is None else resolve_admin,
    )
    findings = _resolve_findings(where, file_config.findings, today())
    if resolve_sinks is None:
        resolve_sinks = resolve_tokens
    sinks = _resolve_sinks(where, file_config.notify, env, resolve=resolve_sinks)
    return Settings(
        source=where,
        database_url=database_url,
        database=file_config.database,
        sync=file_config.sync,
        schedule=file_config.schedule,
        accounts=accounts,
        daemon=file_config.daemon,
        findings=findings,
        notify=sinks,
        notifications=file_config.notifications,
    )


def select_targets(
    settings: Settings, accounts: Sequence[str] = (), integrations: Sequence[str] = ()
) -> list[tuple[Account, Integration]]:
    """The (account, integration) pairs the --account/--integration filters keep."""
    known_accounts = {a.subdomain for a in settings.accounts}
    for name in accounts:
        if name not in known_accounts:
            raise ConfigError(
                f"--account {name}: not a configured account "
                f"(configured: {', '.join(sorted(known_accounts))})"
            )
    known_integrations = {i.name for a in settings.accounts for i in a.integrations}
    for name in integrations:
        if name not in known_integrations:
            raise ConfigError(
                f"--integration {name}: not a configured integration "
                f"(configured: {', '.join(sorted(known_integrations))})"
            )
    targets = [
        (account, integration)
        for account in settings.accounts
        if not accounts or account.subdomain in accounts
        for integration in account.integrations
        if not integrations or integration.name in integrations
    ]
    if not targets:
        raise ConfigError("--account/--integration: no configured integration matches both filters")
    return targets


def today() -> date:
    """The UTC date suppressions are checked against (tests replace it)."""
    return datetime.now(UTC).date()


def _resolve_findings(where: str, config: FindingsConfig, on: date) -> FindingsSettings:
    """[findings]: each rule's options checked against its parameters, each suppression
    against the rule table and the calendar."""

    known = ", ".join(RULES_BY_ID)
    rules = {}
    for rule_id, options in config.rules.items():
        key = f"findings.rules.{rule_id}"
        rule = RULES_BY_ID.get(rule_id)
        if rule is None:
            raise ConfigError(f"{where}: {key}: unknown rule {rule_id!r} (known: {known})")
        try:
            checked = _rule_options(rule_id, rule.params).model_validate(options)
        except ValidationError as exc:
            raise ConfigError(_describe(where, exc, ("findings", "rules", rule_id))) from None
        values = {k: getattr(checked, k) for k in checked.model_fields_set}
        rules[rule_id] = RuleSettings(
            enabled=values.pop("enabled", None),
            severity=values.pop("severity", None),
            params=values,
        )
    suppress = []
    latest = on + timedelta(days=MAX_SUPPRESSION_DAYS)
    for i, entry in enumerate(config.suppress):
        key = f"findings.suppress[{i}]"
        if entry.rule not in RULES_BY_ID:
            raise ConfigError(f"{where}: {key}.rule: unknown rule {entry.rule!r} (known: {known})")
        if entry.until < on:
            raise ConfigError(
                f"{where}: {key}.until: {entry.until} is in the past, so this suppression has "
                f"ended: remove it, or renew it with a reason and a date at most "
                f"{MAX_SUPPRESSION_DAYS} days ahead"
            )
        if entry.until > latest:
            raise ConfigError(
                f"{where}: {key}.until: {entry.until} is more than {MAX_SUPPRESSION_DAYS} days "
                f"ahead (at most {latest}); a suppression must be reviewed at least once a year"
            )
        suppress.append(
            Suppression(
                index=i,
                rule=entry.rule,
                reason=entry.reason,
                until=entry.until,
                account=entry.account,
                integration=entry.integration,
                type=entry.type,
                name=entry.name,
            )
        )
    return FindingsSettings(config.fail_on, rules, tuple(suppress))


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def parse_rule_duration(value: str) -> timedelta:
    """30d, 12h or 90m (a rule parameter)."""
    return parse_duration(value, "2d, 48h or 90m")


def _duration(value: str) -> timedelta:
    delta = parse_rule_duration(value)
    if delta <= timedelta(0):
        raise ValueError("must be longer than 0")
    return delta


# What a rule parameter of each kind (rules.Param.kind) accepts in the TOML file.
_PARAM_TYPES: Mapping[str, Any] = {
    "days": Annotated[int, Field(ge=1, le=36500)],
    "regex": Annotated[str, AfterValidator(_regex)],
    "duration": Annotated[str, AfterValidator(_duration)],
}


def _rule_options(rule_id: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """The schema of [findings.rules.<rule_id>]: enabled, severity and the rule's own
    parameters; any other key is unknown."""
    fields: dict[str, Any] = {
        "enabled": (bool, True),
        "severity": (Severity, "medium"),
    }
    for p in params:
        fields[p.name] = (_PARAM_TYPES[p.kind], p.default)
    return create_model(f"Rule{rule_id}", __base__=_Strict, **fields)


def _check_schedule(where: str, schedule: ScheduleSettings) -> None:
    if schedule.cron is not None and schedule.interval_seconds is not None:
        raise ConfigError(f"{where}: schedule: set either cron or interval_seconds, not both")


def _resolve_accounts(
    where: str,
    entries: list[AccountEntry],
    env: Mapping[str, str],
    *,
    resolve_tokens: bool,
    resolve_admin: bool = False,
) -> tuple[Account, ...]:
    seen: set[str] = set()
    accounts = []
    for i, entry in enumerate(entries):
        key = f"accounts[{i}]"
        subdomain = entry.subdomain
        if not SUBDOMAIN_RE.match(subdomain):
            raise ConfigError(
                f"{where}: {key}.subdomain: {subdomain!r} is not a Zendesk subdomain "
                "(lowercase letters, digits and '-')"
            )
        if subdomain in seen:
            raise ConfigError(f"{where}: {key}.subdomain: {subdomain!r} is configured twice")
        seen.add(subdomain)
        base_url = _base_url(where, key, entry.base_url, subdomain)
        names: set[str] = set()
        integrations = []
        for j, item in enumerate(entry.integrations):
            ikey = f"{key}.integrations[{j}]"
            spec = IntegrationEntry(name=item) if isinstance(item, str) else item
            if not INTEGRATION_RE.match(spec.name):
                raise ConfigError(
                    f"{where}: {ikey}: integration name {spec.name!r} must be 1-64 characters "
                    "of a-z, 0-9, '_' and '-'"
                )
            if spec.name in names:
                raise ConfigError(f"{where}: {ikey}: integration {spec.name!r} is listed twice")
            names.add(spec.name)
            if spec.token_env is not None or spec.token_file is not None:
                token_key, token_env, token_file = ikey, spec.token_env, spec.token_file
            elif entry.token_env is not None or entry.token_file is not None:
                token_key, token_env, token_file = key, entry.token_env, entry.token_file
            else:
                raise ConfigError(
                    f"{where}: {ikey}: no token for integration {spec.name!r}; set token_env or "
                    f"token_file on the account ({key}) or on this integration"
                )
            token = _token(where, token_key, token_env, token_file, env, resolve_tokens)
            source = (
                None if token_file is None else TokenFile(token_file, f"{token_key}.token_file")
            )
            integrations.append(Integration(subdomain, spec.name, token, source))
        admin = _admin(where, f"{key}.admin", entry.admin, env, resolve_admin)
        accounts.append(Account(subdomain, base_url, tuple(integrations), admin))
    return tuple(accounts)


def _admin(
    where: str, key: str, entry: AdminEntry | None, env: Mapping[str, str], resolve: bool
) -> AdminCredential | None:
    """Exactly one form: email with token_env | token_file, or oauth_token_env |
    oauth_token_file."""
    if entry is None:
        return None
    basic = entry.email is not None or entry.token_env is not None or entry.token_file is not None
    oauth = entry.oauth_token_env is not None or entry.oauth_token_file is not None
    if basic == oauth:
        raise ConfigError(
            f"{where}: {key}: set either email with token_env or token_file (an admin's API "
            "token, basic auth) or oauth_token_env or oauth_token_file (an admin's OAuth "
            "access token), " + ("not both" if basic else "one of them")
        )
    if oauth:
        token = _token(
            where,
            key,
            entry.oauth_token_env,
            entry.oauth_token_file,
            env,
            resolve,
            what="an admin's OAuth access token",
            prefix="oauth_",
        )
        return AdminCredential(token)
    if entry.email is None:
        raise ConfigError(f"{where}: {key}.email: required with token_env or token_file")
    if not EMAIL_RE.match(entry.email):
        raise ConfigError(f"{where}: {key}.email: must be the admin's email address")
    if entry.token_env is None and entry.token_file is None:
        raise ConfigError(f"{where}: {key}: set token_env or token_file (an admin's API token)")
    token = _token(
        where, key, entry.token_env, entry.token_file, env, resolve, what="an admin's API token"
    )
    return AdminCredential(token, entry.email)


def _base_url(where: str, key: str, value: str | None, subdomain: str) -> str:
    if value is None:
        return f"https://{subdomain}.zendesk.com"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {key}.base_url: must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: {key}.base_url: must not carry credentials; use token_env or token_file"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: {key}.base_url: must not have a query or a fragment")
    return value.rstrip("/")


def _token(
    where: str,
    key: str,
    token_env: str | None,
    token_file: str | None,
    env: Mapping[str, str],
    resolve: bool,
    *,
    what: str = "ZIS OAuth access token",
    prefix: str = "",
) -> Secret:
    if token_env is not None and token_file is not None:
        raise ConfigError(f"{where}: {key}: set {prefix}token_env or {prefix}token_file, not both")
    if token_env is not None:
        if not ENV_NAME_RE.match(token_env):
            raise ConfigError(
                f"{where}: {key}.{prefix}token_env: must be the NAME of an environment variable, "
                "not a token (letters, digits and '_')"
            )
        if not resolve:
            return Secret("")
        value = env.get(token_env, "").strip()
        if not value:
            raise ConfigError(
                f"{where}: {key}.{prefix}token_env: environment variable {token_env} is not set "
                f"or empty; export {token_env}=<{what}>"
            )
        return _checked(where, key, value, f"environment variable {token_env}")
    assert token_file is not None
    if not resolve:
        return Secret("")
    return _file_token(where, TokenFile(token_file, f"{key}.{prefix}token_file"))


def _file_token(where: str, source: TokenFile) -> Secret:
    value = _read_token_file(where, source.key, Path(source.path))
    return _checked(where, source.key.rsplit(".", 1)[0], value, f"file {source.path}")


def _checked(where: str, key: str, value: str, source: str) -> Secret:
    if not TOKEN_RE.match(value):
        raise ConfigError(
            f"{where}: {key}: the token from {source} contains spaces or control characters"
        )
    return Secret(value)


def read_token_files(settings: Settings) -> Settings:
    """The settings with every token file read again, at the start of a run, so a token
    rotated by an external agent is used without a restart; environment tokens stay as
    loaded. A file that cannot be read now fails the snapshots of the integrations that
    use it (UnreadableToken), with the message start-up would give; the others go on."""
    tokens: dict[TokenFile, Secret | str] = {}  # each file read once per run
    accounts = []
    for account in settings.accounts:
        integrations = []
        for integration in account.integrations:
            source = integration.token_file
            if source is not None:
                if source not in tokens:
                    try:
                        tokens[source] = _file_token(settings.source, source)
                    except ConfigError as exc:
                        tokens[source] = str(exc)
                token = tokens[source]
                if isinstance(token, str):
                    token = UnreadableToken(f"{account.subdomain}/{integration.name}: {token}")
                integration = replace(integration, token=token)
            integrations.append(integration)
        accounts.append(replace(account, integrations=tuple(integrations)))
    return replace(settings, accounts=tuple(accounts))


def _read_token_file(where: str, key: str, path: Path) -> str:
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"{where}: {key}: {path} is readable by group or others; run: chmod 600 {path}"
            )
        value = path.read_text(encoding="utf-8").strip()
    except ConfigError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: {key}: cannot read token file {path}: {reason}") from None
    if not value:
        raise ConfigError(f"{where}: {key}: token file {path} is empty")
    return value


# --- notification sinks ------------------------------------------------------------


def _resolve_sinks(
    where: str, entries: list[NotifyEntry], env: Mapping[str, str], *, resolve: bool
) -> tuple[Sink, ...]:
    seen: set[str] = set()
    sinks = []
    for i, entry in enumerate(entries):
        key = f"notify[{i}]"
        if not SINK_NAME_RE.match(entry.name):
            raise ConfigError(
                f"{where}: {key}.name: {entry.name!r} must be 1-64 characters of letters, "
                "digits, '_', '.' and '-'"
            )
        if entry.name in seen:
            raise ConfigError(f"{where}: {key}.name: sink {entry.name!r} is configured twice")
        seen.add(entry.name)
        if entry.kind == "slack" and (entry.secret_env or entry.secret_file):
            raise ConfigError(
                f"{where}: {key}: Slack incoming webhooks are not signed; secret_env and "
                'secret_file are for kind = "webhook"'
            )
        url = _sink_url(where, key, entry, env, resolve)
        secret = None
        if entry.secret_env is not None or entry.secret_file is not None:
            secret = _sink_value(
                where, key, "secret", entry.secret_env, entry.secret_file, env, resolve
            )
            if resolve and not _is_signing_secret(secret.reveal()):
                raise ConfigError(
                    f"{where}: {key}.secret_{'env' if entry.secret_env else 'file'}: not a "
                    'Standard Webhooks signing secret ("whsec_" and base64)'
                )
        headers = []
        for header, env_name in entry.headers_env.items():
            hkey = f"{key}.headers_env.{header}"
            if not HEADER_NAME_RE.match(header) or header.lower() in RESERVED_HEADERS:
                raise ConfigError(f"{where}: {hkey}: {header!r} is not a header this sink may set")
            value = _sink_value(where, hkey, "", env_name, None, env, resolve, direct=True)
            headers.append((header, value))
        sinks.append(
            Sink(
                name=entry.name,
                kind=entry.kind,
                url=url,
                secret=secret,
                headers=tuple(headers),
                events=frozenset(entry.events),
                accounts=None if entry.accounts is None else frozenset(entry.accounts),
                integrations=None if entry.integrations is None else frozenset(entry.integrations),
                fields=None if entry.fields is None else frozenset(entry.fields),
                min_severity=entry.min_severity,
            )
        )
    return tuple(sinks)


def _sink_url(
    where: str, key: str, entry: NotifyEntry, env: Mapping[str, str], resolve: bool
) -> Secret:
    given = [k for k in ("url", "url_env", "url_file") if getattr(entry, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: {key}: set exactly one of url, url_env or url_file")
    if entry.url is not None:
        url, source = Secret(entry.url.strip()), f"{key}.url"
    else:
        url = _sink_value(where, key, "url", entry.url_env, entry.url_file, env, resolve)
        source = f"{key}.{given[0]}"
    if resolve or entry.url is not None:
        _check_sink_url(where, source, url.reveal(), entry.kind)
    return url


def _check_sink_url(where: str, source: str, url: str, kind: str) -> None:
    # The URL is a secret: no message here quotes it.
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ConfigError(f"{where}: {source}: not a URL") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{where}: {source}: must be an https:// URL")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{where}: {source}: must be an https:// URL (http:// only to a loopback address)"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: {source}: must not carry credentials; use headers_env for them"
        )
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ConfigError(f"{where}: {source}: contains spaces or control characters")


def _sink_value(
    where: str,
    key: str,
    what: str,
    env_name: str | None,
    file_name: str | None,
    env: Mapping[str, str],
    resolve: bool,
    *,
    direct: bool = False,
) -> Secret:
    """A sink's secret value from ``<what>_env`` or ``<what>_file`` (``direct``: ``key``
    itself names the environment variable)."""
    env_key = key if direct else f"{key}.{what}_env"
    if env_name is not None and file_name is not None:
        raise ConfigError(f"{where}: {key}: set {what}_env or {what}_file, not both")
    if env_name is not None:
        if not ENV_NAME_RE.match(env_name):
            raise ConfigError(
                f"{where}: {env_key}: must be the NAME of an environment variable "
                "(letters, digits and '_')"
            )
        if not resolve:
            return Secret("")
        value = env.get(env_name, "").strip()
        if not value:
            raise ConfigError(
                f"{where}: {env_key}: environment variable {env_name} is not set or empty"
            )
    else:
        assert file_name is not None
        if not resolve:
            return Secret("")
        value = _read_token_file(where, f"{key}.{what}_file", Path(file_name))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(f"{where}: {env_key}: the value contains control characters")
    return Secret(value)


def _is_signing_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(value[len("whsec_") :] + "==", validate=False))
    except (ValueError, binascii.Error):
        return False
