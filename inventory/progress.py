"""What a sync tells whoever watches it: a small observer, and one that does nothing.

The sync core calls these from a few places; the rich display (terminal.py) is one
observer. Calls come from the fetch and write threads, so an observer locks its state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .results import SnapshotResult

RATE_LIMITED = "rate limited"  # the reason of a wait a 429 asks for: the account pauses


class Progress(Protocol):
    def run_started(self, targets: Sequence[tuple[str, str]]) -> None:
        """The (account, integration) pairs this run will sync."""

    def integration_started(self, account: str, integration: str) -> None:
        """A fetch worker took this integration."""

    def page_fetched(self, account: str, integration: str, pages: int, connections: int) -> None:
        """Pages fetched so far, and the connections they held."""

    def waiting(self, account: str, integration: str, reason: str, seconds: float) -> None:
        """A request is retried after ``seconds``; ``reason`` is RATE_LIMITED for a 429,
        which pauses every request to the account, else the retry and what failed."""

    def integration_finished(self, result: SnapshotResult) -> None:
        """Its snapshot ended: complete, failed, held, interrupted or skipped."""


class NoProgress:
    """The observer of a run nobody watches."""

    def run_started(self, targets: Sequence[tuple[str, str]]) -> None:
        pass

    def integration_started(self, account: str, integration: str) -> None:
        pass

    def page_fetched(self, account: str, integration: str, pages: int, connections: int) -> None:
        pass

    def waiting(self, account: str, integration: str, reason: str, seconds: float) -> None:
        pass

    def integration_finished(self, result: SnapshotResult) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()
