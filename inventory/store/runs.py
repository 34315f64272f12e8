"""Run rows (sync_runs), their liveness locks, reaping abandoned runs, and the claims
replicas take on an integration for a whole snapshot.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from .. import models as m
from ..types import RunStatus, Trigger
from .engine import database_errors, is_postgres, lock_key, now

log = logging.getLogger(__name__)

RUN_LOCK_CLASS = 0x5A15  # pg_advisory_lock(int, int) key space for live sync runs


@dataclass
class Run:
    id: int
    started_at: datetime
    lock_connection: Connection | None = None


def start_run(engine: Engine, trigger: Trigger | str) -> Run:
    """Mark abandoned runs failed, then insert this run's row (and hold its liveness lock)."""
    with database_errors(engine, "cannot start a run"):
        return _start_run(engine, Trigger(trigger))


def _start_run(engine: Engine, trigger: Trigger) -> Run:
    reap_abandoned_runs(engine)
    started = now()
    values = {
        "started_at": started,
        "trigger": trigger,
        "status": RunStatus.RUNNING,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if is_postgres(engine):
        conn = engine.connect()
        try:
            run_id = conn.execute(
                insert(m.SyncRun).values(values).returning(m.SyncRun.id)
            ).scalar_one()
            # Session-level: held until this connection closes, i.e. until the run ends
            # or its process dies; taken before the row becomes visible.
            conn.execute(select(func.pg_advisory_lock(RUN_LOCK_CLASS, run_id)))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return Run(run_id, started, conn)
    with engine.begin() as conn:
        run_id = conn.execute(insert(m.SyncRun).values(values).returning(m.SyncRun.id)).scalar_one()
    return Run(run_id, started)


def finish_run(
    engine: Engine,
    run: Run,
    status: RunStatus,
    error: str | None = None,
    also: Callable[[Connection], None] | None = None,
) -> None:
    """Mark the run finished; ``also`` writes in the same transaction (the outbox's
    message of the run's findings)."""
    try:
        with database_errors(engine, f"cannot mark run {run.id} {status}"), engine.begin() as conn:
            if also is not None:
                also(conn)
            conn.execute(
                update(m.SyncRun)
                .where(m.SyncRun.id == run.id)
                .values(status=status, finished_at=now(), error=error)
            )
    finally:
        release_run_lock(run)


def release_run_lock(run: Run) -> None:
    """Unlock before the connection goes back to the pool, where the session (and so a
    session-level lock) would live on."""
    conn, run.lock_connection = run.lock_connection, None
    if conn is None:
        return
    try:
        conn.execute(select(func.pg_advisory_unlock(RUN_LOCK_CLASS, run.id)))
        conn.commit()
    except SQLAlchemyError:
        conn.invalidate()  # a broken session: discard it rather than pool it
    finally:
        conn.close()


def reap_abandoned_runs(engine: Engine) -> list[int]:
    """Runs left 'running' by a process that is gone are marked failed (abandoned)."""
    with engine.begin() as conn:
        running = conn.execute(
            select(m.SyncRun.id, m.SyncRun.host, m.SyncRun.pid).where(
                m.SyncRun.status == RunStatus.RUNNING
            )
        ).all()
        dead = [row.id for row in running if not run_alive(conn, row.id, row.host, row.pid)]
        if dead:
            conn.execute(
                update(m.SyncRun)
                .where(m.SyncRun.id.in_(dead))
                .values(
                    status=RunStatus.FAILED,
                    finished_at=now(),
                    error="abandoned: the process ended before the run finished",
                )
            )
    for run_id in dead:
        log.warning("sync run %s was abandoned by its process; marked failed", run_id)
    return dead


def run_alive(conn: Connection, run_id: int, host: str | None, pid: int | None) -> bool:
    if is_postgres(conn):
        got = conn.execute(select(func.pg_try_advisory_xact_lock(RUN_LOCK_CLASS, run_id))).scalar()
        return not got  # the lock is free only when the run's session has ended
    if host != socket.gethostname() or pid is None:
        return True  # cannot tell from here: leave it
    if pid == os.getpid():
        return False  # this process holds no earlier run open
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def claim(engine: Engine, account: str, integration: str) -> Iterator[bool]:
    """PostgreSQL: try to take this integration for the whole snapshot (fetch and write),
    so replicas sharing the database never sync it at the same time. Yields whether it was
    taken; always True on SQLite, which has one daemon per file."""
    if not is_postgres(engine):
        yield True
        return
    key = lock_key(account, integration, salt="claim")
    with engine.connect() as conn:
        taken = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        conn.commit()
        try:
            yield taken
        finally:
            if taken:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()
