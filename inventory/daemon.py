"""The daemon: syncs on the [schedule] with APScheduler 3, one at a time per process.

Replicas sharing a PostgreSQL database split each tick's work: an integration another
replica is syncing, or that already has a complete snapshot since the tick, is skipped.
SIGTERM/SIGINT stop it cleanly; SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import make_url

from . import store
from .config import ScheduleSettings, Settings, load_settings
from .errors import ConfigError, DatabaseError, InventoryError
from .metrics import Metrics
from .notify.deliver import DeliveryWorker
from .sync import Tick, run_sync
from .types import ResultStatus, RunStatus, Trigger

log = logging.getLogger(__name__)

DEFAULT_CRON = "*/30 * * * *"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # interval ticks are aligned to it, so replicas agree
JOB_ID = "sync"


def build_trigger(schedule: ScheduleSettings, where: str) -> BaseTrigger:
    """The [schedule] as an APScheduler trigger; ConfigError names the bad key."""
    try:
        tz = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: schedule.timezone: unknown time zone {schedule.timezone!r} "
            "(use an IANA name such as UTC or Europe/Paris)"
        ) from None
    if schedule.interval_seconds is not None:
        return IntervalTrigger(seconds=schedule.interval_seconds, start_date=EPOCH, timezone=tz)
    expression = schedule.cron or DEFAULT_CRON
    try:
        return CronTrigger.from_crontab(expression, timezone=tz)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: schedule.cron: {expression!r} is not a 5-field crontab expression: {exc}"
        ) from None


def period(trigger: BaseTrigger, now: datetime) -> timedelta:
    """The time between the next two ticks."""
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=1)
    gap: timedelta = second - first
    return gap


def last_tick(trigger: BaseTrigger, now: datetime) -> datetime:
    """The latest scheduled tick at or before ``now``."""
    step = period(trigger, now)
    tick = trigger.get_next_fire_time(None, now - step - timedelta(seconds=1))
    previous = now - step
    while tick is not None and tick <= now:
        previous = tick
        tick = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
    return previous.astimezone(UTC)


class SingleDaemonLock:
    """SQLite: one daemon per database file, held with flock on a file beside it."""

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.daemon-lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = handle.read().strip() or "unknown"
            handle.close()
            raise DatabaseError(
                f"another zis-inventory daemon (pid {other}) already runs on "
                f"{self.path.with_suffix('')}; SQLite supports one daemon per file "
                "(use PostgreSQL for replicas)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Daemon:
    def __init__(self, config_path: str | None, *, metrics_port: int | None = None,
                 on_settings: Callable[[Settings], None] = lambda s: None) -> None:  # fmt: skip
        self.config_path = config_path
        self.settings = load_settings(config_path)
        self.trigger = build_trigger(self.settings.schedule, self.settings.source)
        self.metrics_port = metrics_port or self.settings.daemon.metrics_port
        self.on_settings = on_settings
        on_settings(self.settings)
        self.engine = store.engine_for(self.settings)
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._reload = False
        self._idle = threading.Event()
        self._idle.set()
        self._running = threading.Lock()
        self._current: store.Run | None = None
        self.metrics = Metrics(lambda: self.engine, lambda: period(self.trigger, datetime.now(UTC)))
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.notifier = DeliveryWorker(self.engine, lambda: self.settings, self.stop)

    # --- the job ---

    def tick(self) -> None:
        if self.stop.is_set():
            return  # a tick that fires while the daemon stops starts nothing
        # One sync at a time in this process: the start-up run and the ticks are two jobs.
        if not self._running.acquire(blocking=False):
            log.warning("the previous sync is still running; skipping this tick")
            return
        try:
            self._tick()
        finally:
            self._running.release()

    def _tick(self) -> None:
        self._idle.clear()
        clock = time.perf_counter()
        settings, engine = self.settings, self.engine
        try:
            since = last_tick(self.trigger, datetime.now(UTC))
            with store.database_errors(engine, "database error"):
                migrated = store.ensure_schema(engine, migrate=True)
                if migrated:
                    log.info("%s", migrated)
                result = run_sync(
                    settings,
                    engine,
                    trigger=Trigger.SCHEDULE,
                    stop=self.stop,
                    tick=Tick(since, claim=store.is_postgres(engine)),
                    on_run=self._set_current,
                    on_settings=self.on_settings,
                )
            seconds = time.perf_counter() - clock
            self.metrics.record(result, seconds)
            counts = {
                str(k): sum(1 for s in result.snapshots if s.status == k) for k in ResultStatus
            }
            log.log(
                logging.INFO if result.status == RunStatus.COMPLETE else logging.WARNING,
                "run %s: %s (%s) in %.2fs",
                result.run_id,
                result.status,
                ", ".join(f"{n} {k}" for k, n in counts.items()),
                seconds,
                extra={
                    "run_id": result.run_id,
                    "status": result.status,
                    "seconds": round(seconds, 3),
                    **counts,
                },
            )
        except InventoryError as exc:  # a database error's message says "database error"
            log.error("sync run failed: %s; next try at the next tick", exc)
        except Exception as exc:  # the daemon goes on whatever one run does
            log.error("sync run failed: %s: %s; next try at the next tick", type(exc).__name__, exc)
            log.debug("traceback of the failed run", exc_info=True)
        finally:
            self._current = None
            self._idle.set()
            self.notifier.wake()

    def _set_current(self, run: store.Run) -> None:
        self._current = run

    # --- life cycle ---

    def run(self) -> int:
        lock = self._single_daemon_lock()
        if lock is not None:
            lock.acquire()
        server = None
        try:
            if self.metrics_port:
                host = self.settings.daemon.metrics_host
                try:
                    server = self.metrics.serve(host, self.metrics_port)
                except OSError as exc:
                    raise ConfigError(
                        "--metrics-port / daemon.metrics_port: cannot listen on "
                        f"{host}:{self.metrics_port}: {exc.strerror}"
                    ) from None
                log.info("metrics on http://%s:%s/metrics and /healthz", host, self.metrics_port)
            self._install_signals()
            self.scheduler.add_job(
                self.tick,
                self.trigger,
                id=JOB_ID,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=self.settings.schedule.misfire_grace_seconds,
            )
            if self.settings.schedule.run_on_start:
                # A job of its own: giving the schedule a first run time would shift every
                # later interval tick off the grid the replicas share.
                self.scheduler.add_job(self.tick, "date", run_date=datetime.now(UTC), id="start")
            self.scheduler.start()
            self.notifier.start()
            log.info("daemon started: %s", self._describe_schedule())
            while not self.stop.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._reload and not self.stop.is_set():
                    self._reload = False
                    self.reload()
            return self._shutdown()
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            if lock is not None:
                lock.release()
            self.engine.dispose()

    def _shutdown(self) -> int:
        log.info("stopping: no new syncs; letting the one in progress finish or roll back")
        self.scheduler.shutdown(wait=False)
        grace = self.settings.daemon.stop_timeout_seconds
        deadline = time.monotonic() + grace
        if self._idle.wait(grace) and self.notifier.stop(max(0.0, deadline - time.monotonic())):
            log.info("daemon stopped")
            return 0
        run = self._current
        log.warning(
            "a request is still in flight after %.0fs; exiting without waiting for it", grace
        )
        if run is not None:
            try:
                store.finish_run(self.engine, run, RunStatus.FAILED, "interrupted (shutdown)")
            except DatabaseError as exc:
                log.error("%s", exc)
        logging.shutdown()
        os._exit(0)  # the stuck worker thread would otherwise hold the interpreter open

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stop.set()
            self._wake.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload = True
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def reload(self) -> None:
        try:
            settings = load_settings(self.config_path)
            trigger = build_trigger(settings.schedule, settings.source)
            if settings.database_url != self.settings.database_url:
                raise ConfigError("database.url: cannot change on reload; restart the daemon")
        except ConfigError as exc:
            log.error("configuration reload failed; keeping the previous configuration: %s", exc)
            return
        self.on_settings(settings)
        self.settings, self.trigger = settings, trigger
        self.scheduler.reschedule_job(JOB_ID, trigger=trigger)
        log.info("configuration reloaded from %s: %s", settings.source, self._describe_schedule())

    def _single_daemon_lock(self) -> SingleDaemonLock | None:
        url = make_url(store.normalize_url(self.settings.database_url))
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return SingleDaemonLock(str(Path(url.database).resolve()))

    def _describe_schedule(self) -> str:
        s = self.settings.schedule
        when = (
            f"every {s.interval_seconds}s"
            if s.interval_seconds
            else f"cron {s.cron or DEFAULT_CRON!r}"
        )
        integrations = sum(len(a.integrations) for a in self.settings.accounts)
        database = store.safe_url(self.settings.database_url)
        return f"{when} ({s.timezone}), {integrations} integrations, database {database}"
