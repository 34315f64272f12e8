"""What a sync run reports: one SnapshotResult per integration, one Listing per account
with admin credentials, and the RunResult; the sync makes them, the report, the metrics
and the daemon read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import ResultStatus, RunStatus


@dataclass
class SnapshotResult:
    account: str
    integration: str
    status: ResultStatus
    connection_count: int = 0
    added: int = 0
    removed: int = 0
    modified: int = 0
    restored: int = 0
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None
    snapshot_id: int | None = None
    superseded_by: int | None = None

    def log_line(self) -> str:
        text = (
            f"{self.account}/{self.integration}: {self.status}: +{self.added} added, "
            f"-{self.removed} removed, ~{self.modified} modified, "
            f"^{self.restored} restored; {self.connection_count} connections, "
            f"{self.pages} pages, {self.seconds:.2f}s"
        )
        if self.superseded_by is not None:
            text += f" (not applied: snapshot {self.superseded_by} saw the account later)"
        if self.error:
            text += f": {self.error}"
        return text


@dataclass
class Listing:
    """One account's registry listing in a sync, as the summary shows it."""

    account: str
    status: str  # complete | failed | interrupted
    integration_count: int = 0
    not_configured: int = 0
    added: int = 0
    removed: int = 0
    restored: int = 0
    pages: int = 0
    error: str | None = None
    listing_id: int | None = None
    superseded_by: int | None = None

    def log_line(self) -> str:
        if self.status != "complete":
            return f"{self.account}/registry: {self.status}: {self.error}"
        text = (
            f"{self.account}/registry: complete: {self.integration_count} integrations, "
            f"{self.not_configured} not configured; +{self.added} added, "
            f"-{self.removed} removed, ^{self.restored} restored"
        )
        if self.superseded_by is not None:
            text += f" (not applied: listing {self.superseded_by} saw the registry later)"
        return text


@dataclass
class RunResult:
    run_id: int
    status: RunStatus
    snapshots: list[SnapshotResult]
    drift: dict[str, list[str]] = field(default_factory=dict)
    migration: str | None = None
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)  # account: (all, 429)
    registry: list[Listing] = field(default_factory=list)  # accounts with admin

    @property
    def exit_code(self) -> int:
        ok = (ResultStatus.COMPLETE, ResultStatus.SKIPPED)
        return 0 if all(s.status in ok for s in self.snapshots) else 1


def run_status(results: list[SnapshotResult]) -> RunStatus:
    statuses = [r.status for r in results if r.status != ResultStatus.SKIPPED]
    if all(s == ResultStatus.COMPLETE for s in statuses):
        return RunStatus.COMPLETE  # also when every integration was already done for this tick
    if any(s == ResultStatus.COMPLETE for s in statuses):
        return RunStatus.PARTIAL
    return RunStatus.FAILED
