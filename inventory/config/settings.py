"""The resolved settings: frozen dataclasses built from the file once it is valid, with its
tokens, admin credentials and sinks' values as Secrets; and the CLI's target selection.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..rules import FindingsSettings
from ..secret import Credential, Secret, UnreadableToken, masked_url
from .schema import (
    EVENT_KINDS,
    DaemonSettings,
    DatabaseSettings,
    NotificationsSettings,
    ScheduleSettings,
    SyncSettings,
)


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


# --- the CLI's --account/--integration filters -----------------------------------------


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
