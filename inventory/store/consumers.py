"""The snapshot's consumers (§10 "One pass"), in their fixed order: the hash chain links
the snapshot (§13), the findings are judged at its time (§12), the outbox queues what it
tells (§11). Each works from the ``Pass`` the snapshot's transaction hands it."""

from __future__ import annotations

from .chain import extend_chain
from .findings import update_findings
from .outbox import enqueue_snapshot
from .written import Consumer, Pass


def chain(p: Pass) -> None:
    extend_chain(p.conn, p.written)


def findings(p: Pass) -> None:
    row = p.written.row
    p.found = update_findings(
        p.conn,
        p.settings,
        row.account,
        row.integration,
        row.started_at,  # judged at the snapshot's own time (the sync's clock)
        p.written.snapshot_id,
        p.written.changed,
        p.written.present,
    )


def outbox(p: Pass) -> None:
    w = p.written
    enqueue_snapshot(p.conn, p.settings, w.snapshot_id, p.found, w.row.started_at, w.client_counts)


CONSUMERS: tuple[Consumer, ...] = (chain, findings, outbox)
