"""The configuration file's schema: one pydantic model per TOML table, strict and frozen.

describe() turns a validation error into lines naming the file, the key and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import field
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ..durations import parse_duration

DEFAULT_DATABASE_URL = "sqlite:///inventory.db"

# What a [[notify]] sink may ask for (spec §11).
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


def _float(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


# A number of seconds (or a ratio): an integer is taken as the float it is, nothing else
# is coerced (strict mode would refuse `timeout_seconds = 30`).
Number = Annotated[float, BeforeValidator(_float)]


class Strict(BaseModel):
    """A table of the file: unknown keys refused, values taken as written (no coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatabaseSettings(Strict):
    url: str = DEFAULT_DATABASE_URL
    busy_timeout_seconds: Number = Field(default=30.0, gt=0, le=3600)


class SyncSettings(Strict):
    page_size: int = Field(default=100, ge=1, le=100)
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout_seconds: Number = Field(default=30.0, gt=0, le=600)
    max_retries: int = Field(default=6, ge=0, le=50)
    max_retry_wait_seconds: Number = Field(default=300.0, gt=0, le=86400)
    retry_backoff_seconds: Number = Field(default=1.0, gt=0, le=600)
    max_pages: int = Field(default=10_000, ge=1)
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_removal_ratio: Number = Field(default=0.5, ge=0, le=1)
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


class ScheduleSettings(Strict):
    cron: str | None = None
    interval_seconds: int | None = Field(default=None, ge=1)
    timezone: str = "UTC"
    run_on_start: bool = True
    misfire_grace_seconds: int = Field(default=300, ge=1)


class DaemonSettings(Strict):
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    stop_timeout_seconds: Number = Field(default=8.0, gt=0, le=300)


class NotifyEntry(Strict):
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


class NotificationsSettings(Strict):
    expiry_warning_days: list[int] = Field(default_factory=lambda: [30, 14, 7, 1])
    max_attempts: int = Field(default=12, ge=1, le=1000)
    timeout_seconds: Number = Field(default=10.0, gt=0, le=300)
    backoff_seconds: Number = Field(default=30.0, gt=0, le=86400)
    max_backoff_seconds: Number = Field(default=3600.0, gt=0, le=7 * 86400)
    lease_seconds: Number = Field(default=120.0, gt=0, le=86400)
    poll_seconds: Number = Field(default=10.0, gt=0, le=3600)
    batch_size: int = Field(default=50, ge=1, le=1000)

    @field_validator("expiry_warning_days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 3650 for d in v):
            raise ValueError("each threshold is a number of days from 1 to 3650")
        if len(set(v)) != len(v):
            raise ValueError("a threshold is listed twice")
        return sorted(v, reverse=True)


class IntegrationEntry(Strict):
    name: str
    token_env: str | None = None
    token_file: str | None = None


class AdminEntry(Strict):
    """An account admin's credential for the ZIS registry (§14): an API token with the
    admin's email (basic auth), or an OAuth access token (bearer)."""

    email: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    oauth_token_env: str | None = None
    oauth_token_file: str | None = None


class AccountEntry(Strict):
    subdomain: str
    base_url: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    integrations: list[str | IntegrationEntry] = Field(min_length=1)
    admin: AdminEntry | None = None


class SuppressEntry(Strict):
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


class FindingsConfig(Strict):
    fail_on: Literal["low", "medium", "high", "critical", "none"] = "high"
    # Checked against the rule table (rules.RULES) by findings.resolve_findings.
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    suppress: list[SuppressEntry] = Field(default_factory=list)


class FileConfig(Strict):
    database: DatabaseSettings = DatabaseSettings()
    sync: SyncSettings = SyncSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    accounts: list[AccountEntry] = Field(default_factory=list)
    notify: list[NotifyEntry] = Field(default_factory=list)
    notifications: NotificationsSettings = NotificationsSettings()


# --- validation errors -------------------------------------------------------------


def describe(where: str, exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> str:
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
