"""TOML configuration -> frozen settings objects, validated before any work.

Tokens are read only from an environment variable or a file and wrapped in Secret,
whose repr() and str() mask the value. The modules, lowest first: schema (the file's
pydantic models), settings (the resolved dataclasses), tokens, accounts, sinks, findings
(each resolves a part of the file), load (reads the file and composes them).
"""

from ..rules import FindingsSettings, RuleSettings, Suppression
from ..secret import Secret
from .load import (
    CONFIG_ENV,
    DATABASE_URL_ENV,
    DEFAULT_CONFIG,
    config_path,
    load_settings,
    read_file,
    today,
)
from .schema import (
    DEFAULT_DATABASE_URL,
    EVENT_KINDS,
    AccountEntry,
    AdminEntry,
    DaemonSettings,
    DatabaseSettings,
    FileConfig,
    FindingsConfig,
    IntegrationEntry,
    NotificationsSettings,
    NotifyEntry,
    ScheduleSettings,
    SuppressEntry,
    SyncSettings,
)
from .settings import (
    Account,
    AdminCredential,
    Integration,
    Settings,
    Sink,
    TokenFile,
    select_targets,
)
from .tokens import read_token_files

__all__ = [
    "CONFIG_ENV",
    "DATABASE_URL_ENV",
    "DEFAULT_CONFIG",
    "DEFAULT_DATABASE_URL",
    "EVENT_KINDS",
    "Account",
    "AccountEntry",
    "AdminCredential",
    "AdminEntry",
    "DaemonSettings",
    "DatabaseSettings",
    "FileConfig",
    "FindingsConfig",
    "FindingsSettings",
    "Integration",
    "IntegrationEntry",
    "NotificationsSettings",
    "NotifyEntry",
    "RuleSettings",
    "ScheduleSettings",
    "Secret",
    "Settings",
    "Sink",
    "SuppressEntry",
    "Suppression",
    "SyncSettings",
    "TokenFile",
    "config_path",
    "load_settings",
    "read_file",
    "read_token_files",
    "select_targets",
    "today",
]
