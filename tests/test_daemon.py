"""The daemon as a real process against the loopback fake server: schedules, failures,
signals, reload, replicas on PostgreSQL, and metrics that match the tables."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from inventory import models as m
from inventory.testing import sample_item

from .helpers import (
    SCHEDULE,
    Harness,
    items,
    query,
    rows,
    snapshot_count,
    start,
    stop,
    wait_for,
)


def configure(
    h: Harness,
    layout: dict[str, int],
    *,
    interval: int = 1,
    extra: str = "",
    bad: tuple[str, ...] = (),
) -> None:
    """Integrations of account acme on the fake server, and a config with a 1s schedule;
    the integrations in ``bad`` answer 401 (the server expects another token)."""
    for name, count in layout.items():
        h.zis.add_integration("acme", name, h.token("acme", name), items(name, count))
        if name in bad:
            h.zis.integration("acme", name).token = "not-the-configured-token"
    config = h.write_config("page_size = 3", acme=list(layout))
    config.write_text(config.read_text() + "\n" + SCHEDULE.format(interval=interval) + extra)
    assert (
        h.run("db", "upgrade", "--config", str(config)).code == 0
    )  # so the test can read it at once


def running_runs(h: Harness) -> set[tuple[Any, ...]]:
    r = m.SyncRun
    return query(h.db_url, select(r.id).where(r.status == "running"))


def test_daemon_syncs_on_schedule_survives_failures_and_stops_cleanly(cli: Harness) -> None:
    configure(cli, {"billing": 1, "crm": 1}, bad=("crm",))
    proc = start(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") >= 3)
        cli.zis.put("acme", "billing", "api_key", sample_item("api_key", "added_later"))
        c = m.Connection
        wait_for(
            lambda: (
                query(cli.db_url, select(c.name).where(c.name == "added_later"))
                == {("added_later",)}
            )
        )
        assert snapshot_count(cli, "crm", "failed") >= 2
        assert proc.poll() is None
    finally:
        code, seconds, logs = stop(cli, proc)
    assert code == 0 and seconds < 10
    assert running_runs(cli) == set()
    r = m.SyncRun
    assert {t for (t,) in query(cli.db_url, select(r.trigger))} == {"schedule"}
    runs = [line for line in logs if line["logger"] == "inventory.daemon" and "run_id" in line]
    assert runs and {line["status"] for line in runs} == {"partial"}
    assert {k for k in runs[0]} >= {
        "time",
        "level",
        "message",
        "run_id",
        "status",
        "seconds",
        "complete",
        "failed",
    }
    snapshot_lines = [
        line for line in logs if line.get("integration") == "crm" and line.get("status") == "failed"
    ]
    assert snapshot_lines[0]["message"].endswith(
        "acme/crm: page 1: HTTP 401 InvalidCredentials: Token length is invalid"
    )
    assert logs[-1]["message"] == "daemon stopped"


def test_sigterm_during_a_slow_sync_exits_0_with_nothing_partial(cli: Harness) -> None:
    configure(cli, {"billing": 4}, interval=3600)
    cli.zis.latency = 0.5
    proc = start(cli)
    wait_for(lambda: len(cli.zis.requests) >= 2)
    code, seconds, _ = stop(cli, proc)
    assert code == 0 and seconds < 10
    r = m.SyncRun
    assert query(cli.db_url, select(r.id, r.status, r.error)) == {
        (1, "failed", "interrupted before every snapshot was written")
    }
    assert query(cli.db_url, select(func.count()).select_from(m.Snapshot)) == {(0,)}
    assert query(cli.db_url, select(func.count()).select_from(m.Connection)) == {(0,)}


def test_sighup_reloads_and_a_broken_config_is_kept_out(cli: Harness) -> None:
    configure(cli, {"billing": 1, "crm": 1})
    assert cli.config is not None
    good = cli.config.read_text()
    # Start with billing alone.
    cli.config.write_text(good.replace(', { name = "crm", token_env = "TOKEN_ACME_CRM" }', ""))
    proc = start(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") >= 1)
        assert snapshot_count(cli, "crm") == 0
        cli.config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: snapshot_count(cli, "crm") >= 1)
        cli.config.write_text("[sync\nbroken")
        proc.send_signal(signal.SIGHUP)
        before = snapshot_count(cli, "crm")
        wait_for(lambda: snapshot_count(cli, "crm") >= before + 2)
    finally:
        code, _, logs = stop(cli, proc)
    assert code == 0
    messages = [line["message"] for line in logs]
    assert any(msg.startswith("configuration reloaded from ") for msg in messages)
    assert any(
        msg.startswith("configuration reload failed; keeping the previous configuration: ")
        and "not valid TOML" in msg
        for msg in messages
    )


def test_bad_schedule_exits_2(cli: Harness) -> None:
    configure(cli, {"billing": 1}, extra="")
    assert cli.config is not None
    base = cli.config.read_text()
    cli.config.write_text(base.replace("interval_seconds = 1", 'cron = "61 * * * *"'))
    result = cli.run("daemon", "--config", str(cli.config))
    assert result.code == 2
    assert (
        f"{cli.config}: schedule.cron: '61 * * * *' is not a 5-field crontab expression"
        in result.err
    )
    cli.config.write_text(base.replace("interval_seconds = 1", 'timezone = "Mars/Olympus_Mons"'))
    result = cli.run("daemon", "--config", str(cli.config))
    assert result.code == 2
    assert f"{cli.config}: schedule.timezone: unknown time zone 'Mars/Olympus_Mons'" in result.err
    assert cli.zis.requests == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL allows replicas
def test_a_second_daemon_on_one_sqlite_file_refuses(cli: Harness) -> None:
    configure(cli, {"billing": 1}, interval=3600)
    first = start(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") >= 1)
        second = start(cli)
        out, err = second.communicate(timeout=20)
        cli.outputs += [out, err]
        assert second.returncode == 1
        path = cli.db_url.removeprefix("sqlite:///")
        assert err.strip().endswith(
            f"already runs on {path}; SQLite supports one daemon per file (use PostgreSQL for replicas)"
        )
    finally:
        code, _, _ = stop(cli, first)
    assert code == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # replicas need PostgreSQL
def test_replicas_sync_each_integration_once_per_tick(cli: Harness) -> None:
    period = 2
    names = [f"int{i}" for i in range(6)]
    configure(cli, dict.fromkeys(names, 1), interval=period)
    cli.zis.latency = 0.02
    a, b = start(cli), start(cli)
    try:
        wait_for(lambda: all(snapshot_count(cli, n) >= 4 for n in names), timeout=30)
        a.kill()
        a.communicate(timeout=10)
        killed_at = datetime.now(UTC)
        wait_for(lambda: datetime.now(UTC) > killed_at + timedelta(seconds=3 * period), timeout=30)
    finally:
        code, _, _ = stop(cli, b)
    assert code == 0
    s, r = m.Snapshot, m.SyncRun
    rows = query(cli.db_url, select(s.id, s.integration, s.started_at, r.pid)
                 .join(r, r.id == s.run_id).where(s.status == "complete"))  # fmt: skip
    buckets = Counter(
        (integration, int(started.timestamp()) // period) for _, integration, started, _ in rows
    )
    assert max(buckets.values()) == 1, [k for k, v in buckets.items() if v > 1]
    # Both replicas did part of the work while both ran.
    assert len({pid for *_, pid in rows}) == 2
    # After the kill, the survivor covers every integration at every full tick.
    after = int(killed_at.timestamp()) // period + 1
    last = max(bucket for _, bucket in buckets) - 1
    assert last > after
    for bucket in range(after, last + 1):
        assert {i for i, bk in buckets if bk == bucket} == set(names), bucket
    # Had the killed replica been mid-run, the survivor marked that run abandoned.
    assert running_runs(cli) == set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_match_the_database(cli: Harness) -> None:
    configure(cli, {"billing": 2, "crm": 1}, interval=3600)
    soon = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cli.zis.update("acme", "crm", "oauth", "crm_oauth_0", token_expiry=soon)
    port = free_port()
    proc = start(cli, "--metrics-port", str(port))
    try:
        wait_for(lambda: snapshot_count(cli, "billing") + snapshot_count(cli, "crm") == 2)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
        # A run's counters are added when it ends, after its snapshot rows; its duration
        # is the last of them.
        wait_for(
            lambda: (
                "zis_inventory_sync_duration_seconds_count 1.0"
                in get(f"http://127.0.0.1:{port}/metrics")[1]
            )
        )
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        health = get(f"http://127.0.0.1:{port}/healthz")
    finally:
        code, _, _ = stop(cli, proc)
    assert code == 0 and status == 200
    assert health[0] == 200 and health[1].startswith("ok: last complete snapshot ")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    c, s = m.Connection, m.Snapshot
    present = query(cli.db_url, select(c.integration, c.type, func.count()).where(c.removed_at.is_(None))
                    .group_by(c.integration, c.type))  # fmt: skip
    assert {
        (dict(labels)["integration"], dict(labels)["type"], value)
        for (name, labels), value in samples.items()
        if name == "zis_inventory_connections"
    } == {(i, t, float(n)) for i, t, n in present}
    last = query(cli.db_url, select(s.integration, func.max(s.finished_at)).where(s.status == "complete")
                 .group_by(s.integration))  # fmt: skip
    assert {
        (dict(labels)["integration"], value)
        for (name, labels), value in samples.items()
        if name == "zis_inventory_last_complete_sync_timestamp_seconds"
    } == {(i, when.timestamp()) for i, when in last}
    assert (
        samples[
            (
                "zis_inventory_connections_expiring",
                (("account", "acme"), ("integration", "crm"), ("within", "7d")),
            )
        ]
        == 1.0
    )
    assert (
        samples[
            (
                "zis_inventory_connections_expiring",
                (("account", "acme"), ("integration", "crm"), ("within", "30d")),
            )
        ]
        == 1.0
    )
    assert (
        "zis_inventory_connections_expiring",
        (("account", "acme"), ("integration", "billing"), ("within", "7d")),
    ) not in samples
    assert (
        samples[
            (
                "zis_inventory_snapshots_total",
                (("account", "acme"), ("integration", "billing"), ("status", "complete")),
            )
        ]
        == 1.0
    )
    assert samples[("zis_inventory_requests_total", (("account", "acme"),))] == float(
        len(cli.zis.requests)
    )
    assert samples[("zis_inventory_rate_limited_responses_total", (("account", "acme"),))] == 0.0
    assert samples[("zis_inventory_sync_duration_seconds_count", ())] == 1.0
    assert samples[("zis_inventory_database_up", ())] == 1.0


def test_healthz_reports_unhealthy_when_nothing_completes(cli: Harness) -> None:
    configure(cli, {"billing": 1}, bad=("billing",))
    port = free_port()
    proc = start(cli, "--metrics-port", str(port))
    try:
        wait_for(lambda: snapshot_count(cli, "billing", "failed") >= 1)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 503, timeout=10)
        status, body = get(f"http://127.0.0.1:{port}/healthz")
    finally:
        code, _, _ = stop(cli, proc)
    assert code == 0 and status == 503
    assert body.startswith("unhealthy: no complete snapshot for ") and body.endswith(
        "s (limit 2s)\n"
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_daemon_survives_a_database_restart(cli: Harness) -> None:
    configure(cli, {"billing": 1})
    proc = start(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") >= 2)
        database = cli.db_url.rsplit("/", 1)[1]
        # What a server restart does to the daemon: every connection it holds is cut.
        cut = rows(
            cli.db_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()",
            db=database,
        )
        assert cut and all(ok for (ok,) in cut)
        before = snapshot_count(cli, "billing")
        wait_for(lambda: snapshot_count(cli, "billing") >= before + 2)
        assert proc.poll() is None
    finally:
        code, _, _ = stop(cli, proc)
    assert code == 0
