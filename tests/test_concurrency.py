"""Four syncs and a daemon at once on one database while the account changes; and the
database failing under a sync (connections cut, a read-only file, a full disk)."""

from __future__ import annotations

import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from sqlalchemy import select

from inventory import models as m

from .helpers import (
    SCHEDULE,
    Harness,
    expected,
    finish,
    mutate,
    present,
    query,
    rows,
    run_check,
    run_verify,
    seed,
    snapshot_count,
    spawn,
    wait_for,
)
from .helpers import start as start_daemon
from .helpers import stop as stop_daemon


def replay_is_consistent(url: str) -> None:
    """Events, in order, never add what is present, remove what is absent, or modify what
    is absent: each change was recorded exactly once."""
    c = m.ConnectionChange
    state: dict[tuple[str, str, str], bool] = defaultdict(bool)
    events = sorted(query(url, select(c.id, c.integration, c.type, c.name, c.change)))
    for _, integration, type_, name, change in events:
        key = (integration, type_, name)
        if change in ("added", "restored"):
            assert not state[key], (key, change)
            state[key] = True
        elif change == "removed":
            assert state[key], (key, change)
            state[key] = False
        else:
            assert state[key], (key, change)
    assert {("acme", *k) for k, on in state.items() if on} == present(url)


def test_four_syncs_and_a_daemon_record_each_change_once(cli: Harness) -> None:
    rng = random.Random(7)
    integrations = ["billing", "crm", "ops"]
    seed(
        cli,
        {"acme": dict.fromkeys(integrations, 10)},
        extra_sync="page_size = 7\nmax_removal_ratio = 1.0",
    )
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=1))
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    cli.zis.latency = 0.005
    daemon = start_daemon(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") >= 1)
        for _ in range(3):
            procs = [spawn(cli) for _ in range(4)]
            time.sleep(0.2)
            mutate(cli, rng, integrations)
            # Read while they write: one consistent view, no false break.
            assert run_verify(cli)[:2] == (0, [])
            results = [finish(cli, p) for p in procs]
            for code, _, err in results:
                assert code == 0, err
                assert "Traceback" not in err and "database is locked" not in err
    finally:
        code, _, _ = stop_daemon(cli, daemon)
    assert code == 0
    cli.zis.latency = 0.0
    assert cli.run("sync").code == 0
    assert present(cli.db_url) == expected(cli, integrations)
    replay_is_consistent(cli.db_url)
    assert run_check(cli)[0] == 0
    assert run_verify(cli)[:2] == (0, [])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_connections_cut_during_a_sync(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 30, "crm": 30}}, extra_sync="page_size = 10")
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    cli.zis.latency = 0.05
    proc = spawn(cli)
    wait_for(lambda: len(cli.zis.requests) >= 3)
    database = cli.db_url.rsplit("/", 1)[1]
    rows(cli.db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = :db AND pid <> pg_backend_pid()", db=database)  # fmt: skip
    code, _, err = finish(cli, proc)
    assert code in (0, 1) and "Traceback" not in err
    cli.zis.latency = 0.0
    assert cli.run("sync").code == 0
    assert run_check(cli)[0] == 0
    assert present(cli.db_url) == expected(cli, ["billing", "crm"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_read_only_sqlite_file(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    path = cli.db_url.removeprefix("sqlite:///")
    cli.monkeypatch.setenv("INVENTORY_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    result = cli.run("sync")
    assert result.code == 1
    assert result.err.startswith("database error: cannot start a run: ")
    assert result.err.rstrip().endswith(
        "attempt to write a readonly database (the file or its directory is not writable)"
    )
    cli.monkeypatch.delenv("INVENTORY_DATABASE_URL")
    assert cli.run("sync").code == 0
    assert run_check(cli)[0] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # a file-size limit on its file
def test_a_full_disk(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}}, extra_sync="page_size = 100")
    assert cli.run("sync").code == 0
    for i in range(400):  # enough new rows that writing them needs more than the limit allows
        cli.zis.put(
            "acme", "billing", "api_key", {"name": f"bulk_{i:04d}", "allowed_domain": "x" * 2000}
        )

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    assert cli.config is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "inventory", "sync", "--config", str(cli.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cli.tmp_path, preexec_fn=limit,
    )  # fmt: skip
    code, out, err = finish(cli, proc)
    assert code == 1 and "Traceback" not in err
    assert (
        "database error while writing the snapshot: " in out
        and "disk I/O error (is the disk full, or the file on a read-only or failing device?)"
        in out
    )
    assert run_check(cli)[0] == 0
    assert cli.run("sync").code == 0  # with room again, the next run records it all
    assert present(cli.db_url) == expected(cli, ["billing"])
    assert run_check(cli)[0] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_write_lock_held_too_long_is_a_clear_failure(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1}}, extra_sync="page_size = 100")
    assert cli.config is not None
    cli.config.write_text(
        cli.config.read_text().replace("[sync]", "busy_timeout_seconds = 0.5\n[sync]", 1)
    )
    assert cli.run("sync").code == 0
    holder = sqlite3.connect(cli.db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = cli.run("sync")
    finally:
        holder.close()
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith("database error: ")
    assert result.err.rstrip().endswith(
        "database is locked (another process held the write lock longer than database.busy_timeout_seconds)"
    )
    assert cli.run("sync").code == 0
    assert run_check(cli)[0] == 0
