"""Delivering the outbox: claim the messages that are due (PostgreSQL: FOR UPDATE SKIP
LOCKED), send each with httpx, record the answer. Backoff with jitter, Retry-After,
dead letters; one webhook-id per message across every attempt.

A claim moves ``next_attempt_at`` a lease ahead and counts the attempt before anything is
sent, and commits: another deliverer does not take the message while the lease runs,
and a deliverer killed mid-send leaves it to be sent again once the lease ends, with the
same webhook-id. A claim whose messages are still being sent when half its lease has
gone (a Slack sink's backlog goes out a message a second) leases the rest anew. Per
(sink, account, integration) only the oldest pending message is
due, so receivers get an integration's messages in order.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, and_, exists, insert, select, tuple_, update
from sqlalchemy.orm import aliased
from standardwebhooks.webhooks import Webhook

from .. import __version__, store
from .. import models as m
from ..config import Settings, Sink
from ..errors import DatabaseError
from ..zis import parse_retry_after
from .messages import encode, new_webhook_id, slack_message, test_payload

log = logging.getLogger(__name__)

N = m.Notification
USER_AGENT = f"zis-inventory/{__version__} (notifications)"
MAX_ANSWER_BYTES = 64 * 1024  # a receiver's answer is read this far and dropped
MAX_RETRY_AFTER = 86400.0
SLACK_INTERVAL = 1.0  # seconds between two messages to one Slack incoming webhook
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status, or an error of ours (never the URL)."""

    status: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or "no answer"


def outcome_of(answer: Answer) -> str:
    """sent | retry | dead (before max_attempts is counted)."""
    if answer.ok:
        return "sent"
    status = answer.status
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return "dead"
    return "retry"


def request_for(
    sink: Sink, webhook_id: str, payload: str, timestamp: datetime
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt. Webhook sinks send the payload as stored and
    the Standard Webhooks headers (signed when a secret is set); Slack gets Block Kit."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if sink.kind == "slack":
        return encode(slack_message(json.loads(payload))).encode("utf-8"), headers
    headers["webhook-id"] = webhook_id
    headers["webhook-timestamp"] = str(int(timestamp.timestamp()))
    if sink.secret is not None:
        headers["webhook-signature"] = Webhook(sink.secret.reveal()).sign(
            webhook_id, timestamp, payload
        )
    for name, value in sink.headers:
        headers[name] = value.reveal()
    return payload.encode("utf-8"), headers


class Sender:
    """One httpx client for a pass; each request has a total deadline."""

    def __init__(
        self,
        timeout: float,
        *,
        transport: httpx.BaseTransport | None = None,
        wall: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.timeout = timeout
        self.wall = wall
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def send(self, sink: Sink, webhook_id: str, payload: str) -> Answer:
        body, headers = request_for(sink, webhook_id, payload, self.wall())
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream(
                "POST", sink.url.reveal(), content=body, headers=headers
            ) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
                    if time.monotonic() > deadline:
                        return Answer(None, f"no whole answer within {self.timeout:g}s")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return Answer(response.status_code, None, retry_after)
        except httpx.TimeoutException:
            return Answer(None, f"timed out (notifications.timeout_seconds = {self.timeout:g})")
        except httpx.ConnectError:
            return Answer(None, "cannot connect (refused, unreachable or TLS failed)")
        except httpx.RemoteProtocolError:
            return Answer(None, "the receiver closed the connection or answered badly")
        except httpx.HTTPError as exc:  # never str(exc): httpx puts the URL in it
            return Answer(None, f"transport error: {type(exc).__name__}")


class Pacer:
    """At most one message per ``interval`` to each Slack sink: Slack takes about one per
    second per incoming webhook. Webhook sinks are not paced. Kept across passes by the
    daemon's worker, so that passes in quick succession keep the pace too."""

    def __init__(
        self,
        interval: float = SLACK_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._last: dict[str, float] = {}

    def wait(self, sink: Sink, stop: threading.Event | None = None) -> bool:
        """Wait until ``sink`` may be sent the next message, and count it as sent now;
        False when ``stop`` is set meanwhile (nothing is counted)."""
        if sink.kind != "slack":
            return True
        last = self._last.get(sink.name)
        if last is not None:
            remaining = last + self.interval - self.clock()
            if remaining > 0:
                if stop is not None:
                    if stop.wait(remaining):
                        return False
                else:
                    self.sleep(remaining)
        self._last[sink.name] = self.clock()
        return True


@dataclass
class PassResult:
    sent: int = 0
    retry: int = 0
    dead: int = 0

    @property
    def attempts(self) -> int:
        return self.sent + self.retry + self.dead

    def line(self) -> str:
        return f"notifications: {self.sent} sent, {self.retry} to retry, {self.dead} dead"


@dataclass(frozen=True)
class _Claimed:
    id: int
    sink: str
    event: str
    account: str | None
    integration: str | None
    payload: str
    webhook_id: str
    attempts: int  # this attempt's number


class Deliverer:
    """One delivery pass over the outbox: every due message once at most."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        now: Clock = store.now,
        jitter: Callable[[], float] = random.random,
        pacer: Pacer | None = None,
    ) -> None:
        self.engine = engine
        self.pacer = pacer or Pacer()
        self.settings = settings
        self.policy = settings.notifications
        self.sinks = {s.name: s for s in settings.notify}
        self.now = now
        self.jitter = jitter
        self.transport = transport

    def run(self, stop: threading.Event | None = None) -> PassResult:
        result = PassResult()
        if not self.sinks:
            return result
        tried: set[int] = set()
        sender = Sender(self.policy.timeout_seconds, transport=self.transport)
        try:
            while stop is None or not stop.is_set():
                leased_at = time.monotonic()  # the lease runs from before the claim
                claimed = self.claim(tried)
                if not claimed:
                    break
                lost: set[int] = set()  # their lease ended and another delivery took them
                for n, message in enumerate(claimed):
                    tried.add(message.id)
                    if stop is not None and stop.is_set():
                        break  # claimed and not sent: sent once the lease ends
                    if time.monotonic() - leased_at >= self._renew_after:
                        leased_at = time.monotonic()
                        rest = [c for c in claimed[n:] if c.id not in lost]
                        ours = self.renew(rest) if rest else set()
                        lost.update(c.id for c in rest if c.id not in ours)
                    if message.id in lost:
                        continue
                    if not self.pacer.wait(self.sinks[message.sink], stop):
                        break
                    outcome = self._deliver(sender, message)
                    setattr(result, outcome, getattr(result, outcome) + 1)
        finally:
            sender.close()
        return result

    def claim(self, tried: set[int] = frozenset()) -> list[_Claimed]:  # type: ignore[assignment]
        """Take the due messages (the oldest pending of each sink and integration), a lease
        ahead, in one short transaction; on PostgreSQL the rows another deliverer is
        claiming are skipped."""
        now = self.now()
        earlier = aliased(N)
        blocked = exists().where(
            and_(
                earlier.sink == N.sink,
                earlier.account.is_not_distinct_from(N.account),
                earlier.integration.is_not_distinct_from(N.integration),
                earlier.status == "pending",
                earlier.id < N.id,
            )
        )
        query = (
            select(
                N.id,
                N.sink,
                N.event,
                N.account,
                N.integration,
                N.payload,
                N.webhook_id,
                N.attempts,
            )
            .where(
                N.status == "pending",
                N.next_attempt_at <= now,
                N.sink.in_(list(self.sinks)),
                ~blocked,
            )
            .order_by(N.id)
            .limit(self.policy.batch_size)
        )
        if tried:
            query = query.where(N.id.not_in(list(tried)))
        with self.engine.begin() as conn:
            if store.is_postgres(conn):
                query = query.with_for_update(skip_locked=True, of=N)
            rows = conn.execute(query).all()
            if not rows:
                return []
            conn.execute(
                update(N)
                .where(N.id.in_([r.id for r in rows]))
                .values(
                    attempts=N.attempts + 1,
                    last_attempt_at=now,
                    next_attempt_at=now + timedelta(seconds=self.policy.lease_seconds),
                )
            )
        return [
            _Claimed(
                r.id,
                r.sink,
                r.event,
                r.account,
                r.integration,
                r.payload,
                r.webhook_id,
                r.attempts + 1,
            )
            for r in rows
        ]

    @property
    def _renew_after(self) -> float:
        """How long after a claim its messages not yet sent are leased anew: when half the
        lease has gone, or sooner when less than a send's deadline and a Slack sink's
        interval would be left (a Slack sink's backlog is sent a message a second)."""
        lease = self.policy.lease_seconds
        return max(0.0, min(lease / 2, lease - self.policy.timeout_seconds - SLACK_INTERVAL))

    def renew(self, claimed: list[_Claimed]) -> set[int]:
        """Move the lease of these claimed messages on, in one short transaction; the ids
        still this delivery's (pending, at the attempt it claimed): a message whose lease
        ended meanwhile and that another delivery claimed or sent is left to it."""
        now = self.now()
        mine = tuple_(N.id, N.attempts).in_([(c.id, c.attempts) for c in claimed])
        query = select(N.id).where(mine, N.status == "pending")
        with self.engine.begin() as conn:
            if store.is_postgres(conn):  # waits for a claim of the same rows, then rereads
                query = query.with_for_update(of=N)
            ours = set(conn.execute(query).scalars())
            if ours:
                conn.execute(
                    update(N)
                    .where(N.id.in_(ours))
                    .values(next_attempt_at=now + timedelta(seconds=self.policy.lease_seconds))
                )
        return ours

    def _deliver(self, sender: Sender, message: _Claimed) -> str:
        sink = self.sinks[message.sink]
        answer = sender.send(sink, message.webhook_id, message.payload)
        outcome = outcome_of(answer)
        if outcome == "retry" and message.attempts >= self.policy.max_attempts:
            outcome = "dead"
        now = self.now()
        values: dict[str, Any] = {
            "last_status": answer.status,
            "last_error": None if answer.ok else answer.describe(),
        }
        if outcome == "sent":
            values.update(status="sent", sent_at=now)
        elif outcome == "dead":
            values.update(status="dead")
        else:
            wait = self._wait(message.attempts, answer)
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        with self.engine.begin() as conn:
            mine = conn.execute(
                update(N)
                .where(N.id == message.id, N.attempts == message.attempts, N.status == "pending")
                .values(values)
            ).rowcount
            conn.execute(
                insert(m.NotificationAttempt).values(
                    notification_id=message.id,
                    attempt=message.attempts,
                    attempted_at=now,
                    status=answer.status,
                    error=values["last_error"],
                    outcome=outcome,
                )
            )
        self._log(message, answer, outcome, values, taken_over=not mine)
        return outcome

    def _wait(self, attempts: int, answer: Answer) -> float:
        if answer.status == 429 and answer.retry_after is not None:
            return min(answer.retry_after, MAX_RETRY_AFTER)
        step = self.policy.backoff_seconds * 2.0 ** min(attempts - 1, 30)
        step = min(step, self.policy.max_backoff_seconds)
        return step * (0.5 + 0.5 * self.jitter())  # equal jitter: replicas spread out

    def _log(
        self,
        message: _Claimed,
        answer: Answer,
        outcome: str,
        values: dict[str, Any],
        *,
        taken_over: bool,
    ) -> None:
        where = f"{message.account}/{message.integration}" if message.account else "of a run"
        what = (
            f"notify {message.sink}: message {message.id} ({message.event} {where}) "
            f"attempt {message.attempts}: {answer.describe()}"
        )
        extra = {
            "sink": message.sink,
            "notification_id": message.id,
            "webhook_id": message.webhook_id,
            "attempt": message.attempts,
            "http_status": answer.status,
            "outcome": outcome,
        }
        if taken_over:
            log.warning("%s; its lease had ended and another delivery took it over", what,
                        extra=extra)  # fmt: skip
        elif outcome == "sent":
            log.info("%s: sent", what, extra=extra)
        elif outcome == "dead":
            log.error("%s: dead (kept in the delivery log, not retried)", what, extra=extra)
        else:
            when = store_time(values["next_attempt_at"])
            log.warning("%s: next attempt at %s", what, when, extra=extra)


def store_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deliver_pending(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PassResult:
    """One pass (the end of `sync`, `notify`): every message due now, once at most."""
    return Deliverer(engine, settings, transport=transport).run(stop)


def send_test(
    settings: Settings, name: str, *, transport: httpx.BaseTransport | None = None
) -> Answer:
    """A test message to one sink, not kept in the outbox."""
    sink = settings.sink(name)
    if sink is None:
        raise KeyError(name)
    webhook_id = new_webhook_id()
    payload = encode(test_payload(sink.name, webhook_id, datetime.now(UTC)))
    sender = Sender(settings.notifications.timeout_seconds, transport=transport)
    try:
        return sender.send(sink, webhook_id, payload)
    finally:
        sender.close()


class DeliveryWorker:
    """The daemon's deliverer: a pass every notifications.poll_seconds (and when woken
    after a sync), until stopped; a database or network problem waits for the next."""

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], Settings],
        stop: threading.Event,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._stop = stop
        self._wake = threading.Event()
        self._transport = transport
        self._pacer = Pacer()
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)

    def start(self) -> DeliveryWorker:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Stop after the request in flight; whether the thread ended within ``timeout``."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        migrated = False
        while not self._stop.is_set():
            settings = self.settings()
            try:
                with store.database_errors(self.engine, "notify: database error"):
                    # The daemon's first tick migrates the database; until then, nothing to do.
                    migrated = migrated or (
                        store.current_revision(self.engine) == store.head_revision()
                    )
                    if settings.notify and migrated:
                        result = Deliverer(
                            self.engine, settings, transport=self._transport, pacer=self._pacer
                        ).run(self._stop)
                        if result.attempts:
                            log.info("%s", result.line())
            except DatabaseError as exc:
                log.warning("%s; trying again in %gs", exc, settings.notifications.poll_seconds)
            except Exception as exc:  # the worker goes on whatever one pass does
                log.error("notify: delivery pass failed: %s", type(exc).__name__)
            self._wake.wait(settings.notifications.poll_seconds)
            self._wake.clear()
