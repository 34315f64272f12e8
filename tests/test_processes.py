"""Real processes: two syncs at once on one database, a sync killed mid-way, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from sqlalchemy import func, select

from inventory import models as m
from inventory.testing import sample_item

from .helpers import Harness, changes, expected_keys, finish, present, query, seed, spawn, wait_for


def all_events(url: str) -> list[tuple[Any, ...]]:
    c = m.ConnectionChange
    engine_rows = query(url, select(c.id, c.integration, c.type, c.name, c.change, c.field))
    return sorted(r[1:] for r in engine_rows)


def test_two_syncs_at_once_record_each_event_exactly_once(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 3, "crm": 3}}, extra_sync="page_size = 4")
    cli.zis.latency = 0.02
    procs = [spawn(cli), spawn(cli)]
    assert [finish(cli, p)[0] for p in procs] == [0, 0]
    keys = expected_keys("acme", "billing", 3) | expected_keys("acme", "crm", 3)
    assert all_events(cli.db_url) == sorted((k[1], k[2], k[3], "added", None) for k in keys)
    for name in ("billing", "crm"):
        cli.zis.put("acme", name, "api_key", sample_item("api_key", f"{name}_new"))
        cli.zis.delete("acme", name, "bearer_token", f"{name}_bearer_token_0")
        cli.zis.update(
            "acme", name, "basic_auth", f"{name}_basic_auth_1", username="changed@example.com"
        )
    procs = [spawn(cli), spawn(cli)]
    assert [finish(cli, p)[0] for p in procs] == [0, 0]
    later = [e for e in all_events(cli.db_url) if e[3] != "added" or e[2].endswith("_new")]
    assert later == sorted(
        (n, t, name, change, field)
        for n in ("billing", "crm")
        for t, name, change, field in (
            ("api_key", f"{n}_new", "added", None),
            ("bearer_token", f"{n}_bearer_token_0", "removed", None),
            ("basic_auth", f"{n}_basic_auth_1", "modified", "username"),
        )
    )
    s = m.Snapshot
    assert query(cli.db_url, select(s.status, func.count()).group_by(s.status)) == {("complete", 8)}
    v = m.ConnectionVersion
    current = query(
        cli.db_url,
        select(v.type, v.name, func.count()).where(v.valid_to.is_(None)).group_by(v.type, v.name),
    )
    assert {r[2] for r in current} == {1} and len(current) == 24


def test_a_killed_sync_leaves_nothing_partial_and_is_marked_abandoned(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 5}}, extra_sync="page_size = 2")
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    cli.zis.latency = 0.2
    proc = spawn(cli)
    r = m.SyncRun
    wait_for(lambda: query(cli.db_url, select(r.id, r.status)) == {(1, "running")})
    wait_for(lambda: len(cli.zis.requests) >= 2)
    proc.kill()
    assert finish(cli, proc, timeout=10)[0] == -signal.SIGKILL
    assert query(cli.db_url, select(r.id, r.status)) == {(1, "running")}
    assert query(cli.db_url, select(func.count()).select_from(m.Snapshot)) == {(0,)}
    cli.zis.latency = 0.0
    result = cli.run("sync")
    assert result.code == 0
    assert "sync run 1 was abandoned by its process; marked failed" in result.err
    assert query(cli.db_url, select(r.id, r.status, r.error)) == {
        (1, "failed", "abandoned: the process ended before the run finished"),
        (2, "complete", None),
    }
    assert present(cli.db_url) == expected_keys("acme", "billing", 5)
    assert len(changes(cli.db_url)) == 20


def test_sigterm_stops_the_run_and_marks_it_failed(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 5}}, extra_sync="page_size = 2")
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    cli.zis.latency = 0.3
    proc = spawn(cli)
    wait_for(lambda: len(cli.zis.requests) >= 1)
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    code, _, err = finish(cli, proc, timeout=10)
    assert code == 1 and time.monotonic() - started < 5
    assert "interrupted; the run is marked failed and nothing partial was written" in err
    r = m.SyncRun
    assert query(cli.db_url, select(r.id, r.status, r.error)) == {
        (1, "failed", "interrupted (signal)")
    }
    assert query(cli.db_url, select(func.count()).select_from(m.Snapshot)) == {(0,)}
    assert present(cli.db_url) == set()


def test_the_standalone_fake_server_serves_the_demo_account(cli: Harness) -> None:
    cli.monkeypatch.setenv("FAKE_ZIS_TOKEN", cli.token("acme", "all"))
    server = subprocess.Popen(
        [sys.executable, "-m", "inventory.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        prefix = "serving account 'acme' at "
        assert first.startswith(prefix) and first.endswith(
            " (integrations: billing_sync, crm_bridge, slack_alerts)\n"
        )
        base_url = first[len(prefix) :].split(" ")[0]
        cli.monkeypatch.setenv("ACME_ZIS_TOKEN", cli.token("acme", "all"))
        config = cli.tmp_path / "inventory.toml"
        config.write_text(
            f'[database]\nurl = "{cli.db_url}"\n[[accounts]]\nsubdomain = "acme"\nbase_url = "{base_url}"\n'
            'token_env = "ACME_ZIS_TOKEN"\nintegrations = ["billing_sync", "crm_bridge", "slack_alerts"]\n'
        )
        cli.config = config
        assert cli.run("sync").code == 0
        assert len(present(cli.db_url)) == 36
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
        cli.outputs += [out, err]
