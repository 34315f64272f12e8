"""The read side: the auditors' reports over the tables (``queries``; the OAuth clients,
``clients``), the findings as of
any time with their SIEM form (``findings``), and the delivery log (``notifications``).
Queries here only read; the CLI opens their engine read-only."""

from .clients import clients
from .queries import (
    ChangeFilter,
    ConnectionFilter,
    changes,
    check,
    connections,
    snapshots,
    sync_summary,
)

__all__ = [
    "ChangeFilter",
    "ConnectionFilter",
    "changes",
    "check",
    "clients",
    "connections",
    "snapshots",
    "sync_summary",
]
