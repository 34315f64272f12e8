"""`db check` finds broken invariants; `sync` processes killed with SIGKILL at random points
never break them, and the next sync records exactly what changed (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update

from inventory import models as m
from inventory import store
from inventory.store.current import current_mismatches

from .helpers import (
    HEAD,
    Harness,
    expected,
    finish,
    mutate,
    present,
    query,
    run_check,
    run_verify,
    seed,
    spawn,
    write,
)


def test_db_check_passes_on_a_healthy_database_and_names_each_broken_invariant(
    cli: Harness,
) -> None:
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    cli.zis.delete("acme", "billing", "oauth", "billing_oauth_0")
    cli.zis.update(
        "acme", "billing", "api_key", "billing_api_key_0", allowed_domain="x.example.com"
    )
    assert cli.run("sync").code == 0
    assert run_check(cli) == (0, ["CHECK  DETAIL", "0 problems", "db check: OK"])
    s, v, r, c = m.Snapshot, m.ConnectionVersion, m.SyncRun, m.Connection
    write(
        cli.db_url,
        update(s).where(s.id == 1).values(added=3),
        update(c).where(c.name == "billing_basic_auth_0").values(removed_at=store.now()),
        delete(v).where(v.name == "billing_bearer_token_0"),
        update(v).where(v.name == "billing_oauth_0").values(valid_to=None),
        insert(r).values(
            started_at=store.now(),
            trigger="cli",
            status="running",
            host=os.uname().nodename,
            pid=2**22 + 7,
        ),
    )
    code, lines = run_check(cli)
    assert code == 1
    assert lines[0].split() == ["CHECK", "DETAIL"]
    details = {line.split("  ", 1)[1].strip() for line in lines[1:-2]}
    assert details == {
        "snapshot 1: added/removed/modified/restored (3, 0, 0, 0) but connection_changes say (4, 0, 0, 0)",
        "acme/billing bearer_token 'billing_bearer_token_0' is present with 0 current versions",
        "acme/billing oauth 'billing_oauth_0' is removed with 1 current versions",
        "acme/billing basic_auth 'billing_basic_auth_0' is removed with 1 current versions",
        "acme/billing has 2 present connections but its last applied snapshot 2 fetched 3 "
        "(rows changed outside zis-inventory? `sync --compare-all`)",
        "run 3 is 'running' but its process is gone (the next sync marks it failed)",
    }
    assert lines[-2:] == ["6 problems", "db check: FAILED"]
    # Overlapping ranges are found too.
    write(cli.db_url, update(v).where(v.name == "billing_api_key_0").values(valid_to=None))
    code, lines = run_check(cli)
    assert code == 1
    assert any(
        line.startswith("version ranges") and line.endswith("of one connection overlap")
        for line in lines
    )


def test_the_present_rows_against_their_current_versions_each_mismatch_once(
    cli: Harness,
) -> None:
    """store.current's one query, which db check and db verify report from: a key with
    two current versions (one of them differing), none, a removed row still current, a
    current version with no row; the count of current versions with each."""
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    cli.zis.update(
        "acme", "billing", "api_key", "billing_api_key_0", allowed_domain="x.example.com"
    )
    assert cli.run("sync").code == 0
    v, c = m.ConnectionVersion, m.Connection
    (old,) = query(
        cli.db_url, select(v.id).where(v.name == "billing_api_key_0", v.valid_to.is_not(None))
    )
    write(
        cli.db_url,
        update(v).where(v.id == old[0]).values(valid_to=None),  # two current versions
        delete(v).where(v.name == "billing_bearer_token_0"),  # none
        update(c).where(c.name == "billing_oauth_0").values(removed_at=store.now()),
        delete(c).where(c.name == "billing_basic_auth_0"),  # a current version, no row
    )  # fmt: skip
    engine = store.make_engine(cli.db_url)
    try:
        with engine.connect() as conn:
            found = current_mismatches(conn)
    finally:
        engine.dispose()
    assert sorted((x.kind, x.type, x.name, x.column, x.current) for x in found) == [
        ("no version", "bearer_token", "billing_bearer_token_0", None, 0),
        ("orphan", "basic_auth", "billing_basic_auth_0", None, 1),
        ("removed", "oauth", "billing_oauth_0", None, 1),
        ("several versions", "api_key", "billing_api_key_0", None, 2),
        ("value", "api_key", "billing_api_key_0", "allowed_domain", 2),
        ("value", "api_key", "billing_api_key_0", "last_changed_at", 2),
    ]
    assert {x.version for x in found if x.kind == "value"} == {old[0]}


@pytest.mark.parametrize("seed_value", [1, 2])
def test_sigkill_at_random_points_leaves_the_database_consistent(
    cli: Harness, seed_value: int
) -> None:
    kill_and_recover(cli, random.Random(seed_value), iterations=5)


@pytest.mark.soak
def test_sigkill_soak(cli: Harness) -> None:
    """The same, 60 times: `pytest -m soak` (not part of the default run)."""
    kill_and_recover(cli, random.Random(), iterations=60)


def kill_and_recover(cli: Harness, rng: random.Random, iterations: int) -> None:

    integrations = ["billing", "crm", "ops"]
    seed(
        cli,
        {"acme": dict.fromkeys(integrations, 150)},
        extra_sync="page_size = 100\nmax_removal_ratio = 1.0",
    )
    assert cli.run("db", "upgrade", "--config", str(cli.config)).code == 0
    kills = 0
    for iteration in range(iterations):
        if iteration:
            mutate(cli, rng, integrations)
        cli.zis.latency = rng.choice([0.0, 0.0, 0.02])  # mostly write-bound, sometimes fetch-bound
        proc = spawn(cli)
        time.sleep(rng.uniform(0.3, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        finish(cli, proc)
        code, lines = run_check(cli)
        if (
            code != 0
        ):  # a run killed this instant is 'running' with a dead pid: that is the one finding allowed
            assert all("its process is gone" in line for line in lines[1:-2]), lines
        assert run_verify(cli)[:2] == (0, [])
        cli.zis.latency = 0.0
        assert cli.run("sync").code == 0
        assert run_check(cli)[0] == 0
        assert run_verify(cli)[:2] == (0, [])
        assert present(cli.db_url) == expected(cli, integrations)
    assert kills >= 1
    # Every connection's history replays to its current row: one open version, same values.
    c, v = m.Connection, m.ConnectionVersion
    current = query(
        cli.db_url, select(c.type, c.name, c.allowed_domain).where(c.removed_at.is_(None))
    )
    versions = query(
        cli.db_url, select(v.type, v.name, v.allowed_domain).where(v.valid_to.is_(None))
    )
    assert current == versions


def test_doctor_reports_each_check(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1, "crm": 1}})
    cli.zis.integration("acme", "crm").token = "revoked"
    cfg = str(cli.config)
    result = cli.run("doctor", "--config", cfg, "--format", "json")
    assert result.code == 1
    shown = store.safe_url(cli.db_url)
    first = (
        {
            "subject": "database",
            "ok": True,
            "detail": f"{shown} does not exist yet; the first sync creates it",
        }
        if cli.db_url.startswith("sqlite")
        else {"subject": "database", "ok": True, "detail": f"{shown} reachable"}
    )
    expected = [
        {"subject": "configuration", "ok": True, "detail": f"{cfg}: 1 accounts, 2 integrations"},
        {"subject": "tokens", "ok": True, "detail": "present for every integration"},
        first,
    ]
    if cli.db_url.startswith("sqlite"):
        expected.append(
            {
                "subject": "sqlite library",
                "ok": True,
                "detail": f"SQLite {sqlite3.sqlite_version}",
            }
        )
    else:
        expected.append(
            {
                "subject": "schema",
                "ok": True,
                "detail": f"empty, head is {HEAD}; the next sync migrates it",
            }
        )
    expected += [
        {"subject": "acme/billing", "ok": True, "detail": "HTTP 200, first page parsed, more pages follow"},
        {"subject": "acme/crm", "ok": False,
         "detail": "acme/crm: page 1: HTTP 401 InvalidCredentials: Token length is invalid"},
    ]  # fmt: skip
    assert json.loads(result.out) == expected
    assert [(r.integration, r.query["page[size]"]) for r in cli.zis.requests] in (
        [("billing", ["1"]), ("crm", ["1"])],
        [("crm", ["1"]), ("billing", ["1"])],
    )
    if cli.db_url.startswith("sqlite"):
        assert not Path(cli.db_url.removeprefix("sqlite:///")).exists()  # doctor writes nothing
    cli.zis.integration("acme", "crm").token = cli.token("acme", "crm")
    assert cli.run("sync").code == 0
    table = cli.run("doctor", "--config", cfg)
    assert table.code == 0
    checks = 7 if cli.db_url.startswith("sqlite") else 6
    assert table.out.splitlines()[-2:] == [f"{checks} checks", "doctor: OK"]
