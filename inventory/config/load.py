"""Loading: find the configuration file, parse its TOML, refuse literal secrets, validate it
against the schema and resolve it into Settings, raising ConfigError before any work.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .accounts import resolve_accounts
from .findings import resolve_findings
from .schema import FileConfig, ScheduleSettings, describe
from .settings import Settings
from .sinks import resolve_notify

DEFAULT_CONFIG = "inventory.toml"
CONFIG_ENV = "INVENTORY_CONFIG"
DATABASE_URL_ENV = "INVENTORY_DATABASE_URL"

# Keys that would hold a literal secret; their values are never read into a message.
LITERAL_TOKEN_KEYS = ("token", "access_token", "api_token", "password", "secret")
ADMIN_LITERAL_KEYS = (*LITERAL_TOKEN_KEYS, "oauth_token")
LITERAL_SINK_KEYS = ("secret", "signing_secret", "headers", "token", "password")


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
        raise ConfigError(describe(where, exc)) from None


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
    ``resolve_sinks`` (default: as
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
    accounts = resolve_accounts(
        where,
        file_config.accounts,
        env,
        resolve_tokens=resolve_tokens,
        resolve_admin=resolve_tokens if resolve_admin is None else resolve_admin,
    )
    findings = resolve_findings(where, file_config.findings, today())
    if resolve_sinks is None:
        resolve_sinks = resolve_tokens
    sinks = resolve_notify(where, file_config.notify, env, resolve=resolve_sinks)
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


def today() -> date:
    """The UTC date suppressions are checked against (tests replace it)."""
    return datetime.now(UTC).date()


def _check_schedule(where: str, schedule: ScheduleSettings) -> None:
    if schedule.cron is not None and schedule.interval_seconds is not None:
        raise ConfigError(f"{where}: schedule: set either cron or interval_seconds, not both")
