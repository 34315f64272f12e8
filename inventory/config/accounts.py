"""The [[accounts]] resolved: subdomains, base URLs, integrations with their tokens, and the
admin credential the ZIS registry is read with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError
from .schema import AccountEntry, AdminEntry, IntegrationEntry
from .settings import Account, AdminCredential, Integration, TokenFile
from .tokens import resolve_token

SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
INTEGRATION_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
EMAIL_RE = re.compile(r"^[^@\s:/]+@[^@\s:/]+$")  # no ':' (basic auth) nor '/' ("/token")


def resolve_accounts(
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
            token = resolve_token(where, token_key, token_env, token_file, env, resolve_tokens)
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
        token = resolve_token(
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
    token = resolve_token(
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
