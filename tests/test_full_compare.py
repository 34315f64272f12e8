"""sync.full_compare_interval (spec §10): a row edited by hand is corrected, its change
recorded, once the interval since the last full compare has passed, and not before; and
every snapshot row goes through the one locked write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from inventory import models as m
from inventory import store
from inventory.config import (
    Account,
    DatabaseSettings,
    Integration,
    ScheduleSettings,
    Settings,
    SyncSettings,
    load_settings,
)
from inventory.durations import parse_duration
from inventory.errors import ConfigError
from inventory.results import RunResult
from inventory.secret import Secret
from inventory.sync import run_sync
from inventory.testing import sample_item
from inventory.types import SnapshotStatus

from .helpers import with_clients

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
NAME = "billing_key"
DOMAIN = "billing.example.com"


class Clock:
    """A clock the test moves."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = store.make_engine(db_url)
    store.ensure_schema(engine, migrate=True)
    yield engine
    engine.dispose()


def settings(db_url: str, interval: str | timedelta = "24h") -> Settings:
    if isinstance(interval, str):
        interval = parse_duration(interval, zero=True)
    integration = Integration("acme", "billing", Secret("t"))
    return Settings(
        "(test)", db_url, DatabaseSettings(), SyncSettings(full_compare_interval=interval),
        ScheduleSettings(), (Account("acme", "https://acme.zendesk.com", (integration,)),),
    )  # fmt: skip


BODY = {
    "api_key": [sample_item("api_key", NAME, allowed_domain=DOMAIN)],
    "meta": {"has_more": False, "after": None},
}
TRANSPORT = httpx.MockTransport(with_clients(lambda request: httpx.Response(200, json=BODY)))


def sync(engine: Engine, s: Settings, clock: Clock, **options: Any) -> RunResult:
    return run_sync(s, engine, transport=lambda account: TRANSPORT, clock=clock, **options)


def edit_by_hand(engine: Engine, domain: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(m.Connection).values(allowed_domain=domain))


def stored_domain(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(m.Connection.allowed_domain)).scalar_one()


def modified_events(engine: Engine) -> list[tuple[Any, ...]]:
    c = m.ConnectionChange
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(c.detected_at, c.name, c.field, c.old_value, c.new_value)
                .where(c.change == "modified")
                .order_by(c.id)
            )
        ]


def full_compares(engine: Engine) -> list[tuple[datetime, bool]]:
    s = m.Snapshot
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(s.started_at, s.full_compare).order_by(s.id))]  # type: ignore[misc]


def test_a_row_edited_by_hand_is_corrected_once_the_interval_has_passed(
    engine: Engine, db_url: str
) -> None:
    s, clock = settings(db_url, "24h"), Clock(T0)
    assert sync(engine, s, clock).exit_code == 0  # first sync: every row compared
    edit_by_hand(engine, "evil.example")
    for later in (timedelta(hours=1), timedelta(hours=23, minutes=59)):
        clock.at = T0 + later
        (snap,) = sync(engine, s, clock).snapshots
        assert (snap.status, snap.modified) == ("complete", 0)  # same pages: rows not read
        assert stored_domain(engine) == "evil.example"
    assert modified_events(engine) == []
    clock.at = T0 + timedelta(hours=24)  # the interval since the last full compare
    (snap,) = sync(engine, s, clock).snapshots
    assert (snap.status, snap.modified) == ("complete", 1)
    assert stored_domain(engine) == DOMAIN
    assert modified_events(engine) == [(clock.at, NAME, "allowed_domain", "evil.example", DOMAIN)]
    clock.at = T0 + timedelta(hours=25)  # compared an hour ago: the shortcut again
    assert sync(engine, s, clock).snapshots[0].modified == 0
    assert full_compares(engine) == [
        (T0, True),
        (T0 + timedelta(hours=1), False),
        (T0 + timedelta(hours=23, minutes=59), False),
        (T0 + timedelta(hours=24), True),
        (T0 + timedelta(hours=25), False),
    ]


def test_compare_all_and_an_interval_of_zero_compare_every_sync(
    engine: Engine, db_url: str
) -> None:
    clock = Clock(T0)
    assert sync(engine, settings(db_url), clock).exit_code == 0
    edit_by_hand(engine, "evil.example")
    clock.at = T0 + timedelta(minutes=1)
    assert sync(engine, settings(db_url), clock, compare_all=True).snapshots[0].modified == 1
    edit_by_hand(engine, "evil2.example")
    clock.at = T0 + timedelta(minutes=2)
    assert sync(engine, settings(db_url, "0"), clock).snapshots[0].modified == 1
    assert stored_domain(engine) == DOMAIN
    assert [e[3] for e in modified_events(engine)] == ["evil.example", "evil2.example"]
    assert [f for _, f in full_compares(engine)] == [True, True, True]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("30s", timedelta(seconds=30)),
        ("0", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, zero=True) == expected


@pytest.mark.parametrize("text", ["", "24", "1w", "-1h", "h", "1.5h", "24 hours"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text, zero=True)


def test_the_interval_is_read_from_the_config_and_a_bad_one_refused(tmp_path: Any) -> None:
    base = '[database]\nurl = "sqlite:///x.db"\n'
    path = tmp_path / "inventory.toml"
    path.write_text(base)
    assert load_settings(str(path), require_accounts=False).sync.full_compare_interval == timedelta(
        hours=24
    )
    path.write_text(base + '[sync]\nfull_compare_interval = "12h"\n')
    assert load_settings(str(path), require_accounts=False).sync.full_compare_interval == timedelta(
        hours=12
    )
    for bad in ('"soon"', "24"):
        path.write_text(base + f"[sync]\nfull_compare_interval = {bad}\n")
        with pytest.raises(ConfigError, match="full_compare_interval"):
            load_settings(str(path), require_accounts=False)


def test_every_snapshot_row_is_written_by_the_one_locked_write(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complete, failed, held and superseded snapshots all go through
    IntegrationTransaction.write, which only integration_transaction hands out."""
    written: list[tuple[str, int | None]] = []
    real_write = store.IntegrationTransaction.write

    def spy(
        tx: store.IntegrationTransaction, row: store.SnapshotRow, *args: Any, **kwargs: Any
    ) -> int:
        written.append((row.status, row.superseded_by))
        return real_write(tx, row, *args, **kwargs)

    monkeypatch.setattr(store.IntegrationTransaction, "write", spy)
    s, clock = settings(db_url), Clock(T0)
    assert sync(engine, s, clock).exit_code == 0
    failing = httpx.MockTransport(lambda request: httpx.Response(200, content=b"not json"))
    result = run_sync(s, engine, transport=lambda a: failing, clock=Clock(T0 + timedelta(1)))
    assert [r.status for r in result.snapshots] == ["failed"]
    clock.at = T0 - timedelta(days=1)  # an older view than the applied one
    assert sync(engine, s, clock).snapshots[0].superseded_by is not None
    assert written == [
        (SnapshotStatus.COMPLETE, None),
        (SnapshotStatus.FAILED, None),
        (SnapshotStatus.COMPLETE, 1),
    ]
