"""Notifications through an outbox (spec §11): rows written in the snapshot's own
transaction (``enqueue_snapshot``), delivered later to Slack or signed webhooks (``deliver``).

Layout: ``messages`` builds payloads and Slack blocks (pure); ``outbox`` writes rows and
keeps the expiry ledger; ``deliver`` sends them (httpx); ``log`` reads the delivery log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .outbox import enqueue_snapshot

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ..render import Report

__all__ = ["enqueue_snapshot", "notifications_report"]


def notifications_report(
    engine: Engine,
    *,
    status: Sequence[str] = (),
    sinks: Sequence[str] = (),
    since: datetime | None = None,
    as_of: datetime | None = None,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
) -> Report:
    """The delivery log as the `notifications` command renders it (see ``log``)."""
    from .log import notifications_report as build  # report imports sync: not at import

    return build(
        engine,
        status=status,
        sinks=sinks,
        since=since,
        as_of=as_of,
        accounts=accounts,
        integrations=integrations,
    )
