"""Prometheus metrics and /healthz for the daemon.

Inventory figures (connections present, expiring, last complete sync) are read from the
database at scrape time, so every replica reports the shared truth; counters (snapshot
outcomes, requests, 429s, run durations) are this process's own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, inspect, or_, select

from . import models as m
from . import store
from .errors import DatabaseError
from .results import RunResult
from .rules import expires_within, has_expired

log = logging.getLogger(__name__)

EXPIRY_WINDOWS = (("7d", timedelta(days=7)), ("30d", timedelta(days=30)))


class Metrics:
    def __init__(
        self,
        engine: Callable[[], Engine],
        period: Callable[[], timedelta],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._period = period
        self._now = now
        self.started_at = now()
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created is noise
        self.registry = CollectorRegistry()
        self.snapshots = Counter(
            "zis_inventory_snapshots",
            "Snapshots by outcome, since this process started.",
            ["account", "integration", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "zis_inventory_requests", "HTTP requests to ZIS.", ["account"], registry=self.registry
        )
        self.rate_limited = Counter(
            "zis_inventory_rate_limited_responses",
            "HTTP 429 answers from ZIS.",
            ["account"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "zis_inventory_sync_duration_seconds",
            "Duration of scheduled sync runs.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(self))

    def record(self, result: RunResult, seconds: float) -> None:
        for s in result.snapshots:
            if s.status != "skipped":
                self.snapshots.labels(s.account, s.integration, s.status).inc()
        for account, (requests, limited) in result.requests.items():
            self.requests.labels(account).inc(requests)
            self.rate_limited.labels(account).inc(limited)
        self.duration.observe(seconds)

    def last_complete(self) -> datetime | None:
        s = m.Snapshot
        with self._engine().connect() as conn:
            value: datetime | None = conn.execute(
                select(func.max(s.finished_at)).where(s.status == "complete")
            ).scalar()
        return value

    def health(self) -> tuple[bool, str]:
        """Unhealthy when no integration completed within two schedule periods; a process
        that just started gets those two periods to complete its first one."""
        limit = 2 * self._period()
        try:
            with store.database_errors(self._engine(), "database unreachable"):
                last = self.last_complete()
        except DatabaseError:
            return False, "unhealthy: database unreachable"
        now = self._now()
        age = now - (max(self.started_at, last) if last else self.started_at)
        if age > limit:
            what = "no complete snapshot" if last is None else "last complete snapshot"
            seconds, allowed = int(age.total_seconds()), int(limit.total_seconds())
            return False, f"unhealthy: {what} for {seconds}s (limit {allowed}s)"
        if last is None:
            return True, "ok: starting, no complete snapshot yet"
        return True, f"ok: last complete snapshot {int(age.total_seconds())}s ago"

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                elif path == "/healthz":
                    ok, message = metrics.health()
                    self._send(
                        200 if ok else 503, "text/plain; charset=utf-8", message.encode() + b"\n"
                    )
                else:
                    self._send(
                        404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"
                    )

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _DatabaseCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "zis_inventory_database_up", "1 when the database answered this scrape."
        )
        try:
            with store.database_errors(self._metrics._engine(), "database unreachable"):
                families = self._read()
        except DatabaseError as exc:
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        now = self._metrics._now()
        s, c = m.Snapshot, m.Connection
        last = GaugeMetricFamily(
            "zis_inventory_last_complete_sync_timestamp_seconds",
            "When the last complete snapshot of each integration finished (Unix time).",
            labels=["account", "integration"],
        )
        present = GaugeMetricFamily(
            "zis_inventory_connections",
            "Connections present, by account, integration and type.",
            labels=["account", "integration", "type"],
        )
        expiring = GaugeMetricFamily(
            "zis_inventory_connections_expiring",
            "Present connections whose token expires within the window (not yet expired).",
            labels=["account", "integration", "within"],
        )
        expired = GaugeMetricFamily(
            "zis_inventory_connections_expired",
            "Present connections whose token has expired.",
            labels=["account", "integration"],
        )
        findings = GaugeMetricFamily(
            "zis_inventory_findings",
            "Open, unsuppressed findings (the findings table, as of the last snapshot).",
            labels=["account", "integration", "rule", "severity"],
        )
        f = m.Finding
        with self._metrics._engine().connect() as conn:
            for account, integration, rule, severity, count in conn.execute(
                select(f.account, f.integration, f.rule, f.severity, func.count())
                .where(
                    f.resolved_at.is_(None),
                    or_(f.suppressed_by.is_(None), f.suppressed_until < now.date()),
                )
                .group_by(f.account, f.integration, f.rule, f.severity)
            ):
                findings.add_metric([account, integration, rule, severity], count)
            for account, integration, finished in conn.execute(
                select(s.account, s.integration, func.max(s.finished_at))
                .where(s.status == "complete")
                .group_by(s.account, s.integration)
            ):
                last.add_metric([account, integration], finished.timestamp())
            for account, integration, type_, count in conn.execute(
                select(c.account, c.integration, c.type, func.count())
                .where(c.removed_at.is_(None))
                .group_by(c.account, c.integration, c.type)
            ):
                present.add_metric([account, integration, type_], count)
            for label, window in EXPIRY_WINDOWS:
                for row in conn.execute(
                    select(c.account, c.integration, func.count())
                    .where(c.removed_at.is_(None), expires_within(c.token_expiry, now, window))
                    .group_by(c.account, c.integration)
                ):
                    expiring.add_metric([row[0], row[1], label], row[2])
            for account, integration, count in conn.execute(
                select(c.account, c.integration, func.count())
                .where(c.removed_at.is_(None), has_expired(c.token_expiry, now))
                .group_by(c.account, c.integration)
            ):
                expired.add_metric([account, integration], count)
            outbox = self._notifications(conn)
        return [last, present, expiring, expired, findings, *outbox]

    def _notifications(self, conn: Any) -> list[Metric]:
        """The outbox by sink and status, read from the shared database (every replica
        reports the same); nothing while the database predates the outbox."""
        n = m.Notification
        total = GaugeMetricFamily(
            "zis_inventory_notifications_total",
            "Notifications in the outbox, by sink and status (pending, sent, dead).",
            labels=["sink", "status"],
        )
        pending = GaugeMetricFamily(
            "zis_inventory_notifications_pending",
            "Notifications not yet delivered, by sink.",
            labels=["sink"],
        )
        if not inspect(conn).has_table(n.__tablename__):
            return []
        waiting: dict[str, int] = {}
        for sink, status, count in conn.execute(
            select(n.sink, n.status, func.count()).group_by(n.sink, n.status)
        ):
            total.add_metric([sink, status], count)
            waiting[sink] = waiting.get(sink, 0) + (count if status == "pending" else 0)
        for sink, count in sorted(waiting.items()):
            pending.add_metric([sink], count)
        return [total, pending]
