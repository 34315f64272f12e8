"""The statuses and kinds the database stores, as StrEnums: one spelling each.

Their values are the public ones of spec §5; a ``StrEnum`` member is its value as a
string, so it goes into a query or a column unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PARTIAL = "partial"
    FAILED = "failed"


class SnapshotStatus(StrEnum):
    COMPLETE = "complete"
    FAILED = "failed"
    HELD = "held"


class ResultStatus(StrEnum):
    """What a sync reports for one integration: a snapshot status, or why none was written."""

    COMPLETE = "complete"
    FAILED = "failed"
    HELD = "held"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    RESTORED = "restored"


class Trigger(StrEnum):
    CLI = "cli"
    SCHEDULE = "schedule"


class Severity(StrEnum):
    """A finding's severity (§12), lowest first; ``rank`` orders them."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self) + 1


SEVERITIES: tuple[Severity, ...] = tuple(Severity)  # lowest first
