"""The findings shortcut (findings_reuse) against its oracle, the plain path: two accounts
get the same rows, clock, settings and snapshots, one with the shortcut and one without,
and after every snapshot their findings (every column but id and account) and what each
update told are the same. Plus the bounds of the shortcut, one by one."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from inventory import models as m
from inventory import store
from inventory.config import (
    DatabaseSettings,
    FindingsSettings,
    RuleSettings,
    ScheduleSettings,
    Settings,
    Suppression,
    SyncSettings,
)
from inventory.diff import diff
from inventory.records import Connection
from inventory.store import findings, findings_reuse

T0 = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
REUSED, ORACLE = "reused", "oracle"
TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")


def settings_with(url: str, findings_settings: FindingsSettings, interval: timedelta) -> Settings:
    return Settings(
        "(test)",
        url,
        DatabaseSettings(),
        SyncSettings(full_compare_interval=interval),
        ScheduleSettings(),
        (),
        findings=findings_settings,
    )


def record(rng: random.Random, name: str, now: datetime) -> Connection:
    kind = rng.choice(TYPES)
    # Some a few hours either side of ZIS003's 365 days, others far from it.
    year = timedelta(days=365)
    updated = now - rng.choice([timedelta(days=10), year - timedelta(hours=rng.uniform(1, 60)),
                                year + timedelta(hours=rng.uniform(0, 5)), timedelta(days=400)])  # fmt: skip
    domain = rng.choice(["", "*.example.com", "api.example.com"])
    if kind == "oauth":
        expiry = rng.choice(
            [None, now + timedelta(hours=rng.uniform(-48, 24 * 30)), now + timedelta(days=14)]
        )
        return Connection(kind, name, domain or None, token_type="bearer", token_expiry=expiry)
    username = rng.choice([None, "agent@example.com/token", "agent@example.com"])
    return Connection(
        kind, name, domain or None, updated, updated, username=username
    )  # fmt: skip


class Account:
    """One account's integration, written through the real snapshot write path."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine, self.name = engine, name
        self.told: list[list[tuple[Any, ...]]] = []

    def snapshot(
        self, settings: Settings, rows: list[Connection], at: datetime, status: str
    ) -> None:
        run = store.start_run(self.engine, "cli")
        with store.integration_transaction(self.engine, self.name, "crm", settings) as tx:
            changes = diff(tx.load_state(), rows) if status == "complete" else None
            c = changes.counts() if changes is not None else {}
            counts = (
                c.get("added", 0),
                c.get("removed", 0),
                c.get("modified", 0),
                c.get("restored", 0),
            )
            row = store.SnapshotRow(
                run.id, self.name, "crm", at, status, connection_count=len(rows), counts=counts
            )  # fmt: skip
            tx.write(row, changes)
            self.told.append(
                sorted((f.rule, f.type, f.name, f.detail, f.first_seen_at, self.plain(f.note)) for f in tx.found.opened)
                + sorted(("resolved", f.rule, f.type, f.name, self.plain(f.note)) for f in tx.found.resolved)
            )  # fmt: skip
        store.finish_run(self.engine, run, "complete")

    def findings(self) -> set[tuple[Any, ...]]:
        t = m.Finding
        columns = [c for c in m.Finding.__table__.c if c.name not in ("id", "account")]
        with self.engine.connect() as conn:
            got = conn.execute(select(*columns).where(t.account == self.name))
            return {tuple(self.plain(v) for v in row) for row in got}

    def plain(self, value: Any) -> Any:
        """The account's name, which notes name, as the same word in both accounts."""
        return (
            value.replace(f" on {self.name}/", " on ACCOUNT/") if isinstance(value, str) else value
        )


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Switches the shortcut on for REUSED only, and counts how often it was taken, and
    how often it judged a snapshot's changed rows only."""
    taken = {"kept": 0, "evaluated": 0, "judged changed rows": 0}
    standing, records_of = findings_reuse.standing, findings._records_of

    def switched(conn: Any, account: str, *args: Any) -> findings_reuse.Kept | None:
        monkeypatch.setattr(findings_reuse, "ENABLED", account == REUSED)
        kept = standing(conn, account, *args)
        if account == REUSED:
            taken["kept" if kept else "evaluated"] += 1
        return kept

    def judged(conn: Any, account: str, integration: str, keys: Any) -> Any:
        assert account == REUSED  # the plain path reads every row
        taken["judged changed rows"] += bool(keys)
        return records_of(conn, account, integration, keys)

    monkeypatch.setattr(findings_reuse, "standing", switched)
    monkeypatch.setattr(findings, "_records_of", judged)
    yield taken


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_shortcut_leaves_what_the_plain_path_leaves(
    db_url: str, counted: dict[str, int], seed: int
) -> None:
    rng = random.Random(seed)
    engine = store.make_engine(db_url)
    store.ensure_schema(engine, migrate=True)
    accounts = [Account(engine, REUSED), Account(engine, ORACLE)]
    now = T0
    rows = [record(rng, f"c{i:02d}", now) for i in range(14)]
    rules: dict[str, RuleSettings] = {}
    suppress: tuple[Suppression, ...] = ()
    interval = timedelta(days=rng.choice([3, 7, 30]))
    try:
        for step in range(60):
            now += rng.choice(
                [timedelta(minutes=7), timedelta(hours=5), timedelta(days=1), timedelta(days=4)]
            )
            roll = rng.random()
            if roll < 0.15:  # a row changes, appears or goes
                i = rng.randrange(len(rows))
                if rng.random() < 0.7:
                    rows[i] = record(rng, rows[i].name, now)
                else:
                    rows.pop(i)
                    rows.append(record(rng, f"n{step:02d}", now))
            elif roll < 0.22:  # the settings change
                within = rng.choice([3, 14, 20, None])  # None: ZIS005 off, ZIS004 alone
                rules = {
                    "ZIS005": RuleSettings(params={"within_days": within})
                    if within is not None
                    else RuleSettings(enabled=False)
                }
                if rng.random() < 0.3:
                    rules["ZIS003"] = RuleSettings(severity="high")
            elif roll < 0.3:  # a suppression, ending within days
                ends = (now + timedelta(days=rng.choice([0, 1, 3]))).date()
                suppress = (
                    Suppression(0, rng.choice(["ZIS001", "ZIS004", "ZIS005"]), "SEC-1", ends),
                )
            status = rng.choices(["complete", "failed", "held"], [8, 1, 1])[0]
            settings = settings_with(
                db_url, FindingsSettings(rules=rules, suppress=suppress), interval
            )
            for account in accounts:
                account.snapshot(settings, rows, now, status)
            reused, oracle = accounts
            assert reused.findings() == oracle.findings(), f"step {step} at {now}"
            assert reused.told[-1] == oracle.told[-1], f"step {step} at {now}"
    finally:
        engine.dispose()
    # Both paths ran many times: the comparison means something.
    assert counted["kept"] >= 15 and counted["evaluated"] >= 10, counted
    assert counted["judged changed rows"] >= 3, counted
