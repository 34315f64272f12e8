"""The store below the CLI: what one snapshot's transaction writes, row for row, and the
counts it keeps of them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from inventory import models as m
from inventory import store
from inventory.diff import diff
from inventory.records import Connection
from inventory.store import bulk

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
T3 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
EXPIRY = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = store.make_engine(db_url)
    store.ensure_schema(engine, migrate=True)
    yield engine
    engine.dispose()


def apply(engine: Engine, fetched: list[Connection], at: datetime) -> dict[str, int]:
    """One complete snapshot of acme/crm seen at ``at``; the rows its transaction wrote."""
    run = store.start_run(engine, "cli")
    with store.integration_transaction(engine, "acme", "crm") as tx:
        result = diff(tx.load_state(), fetched)
        row = store.SnapshotRow(run.id, "acme", "crm", at, "complete")
        tx.write(row, result)
    store.finish_run(engine, run, "complete")
    # No OAuth client was fetched: the clients' tables were not written.
    assert {k: v for k, v in tx.written.items() if k.startswith("oauth_client")} == {
        "oauth_clients": 0,
        "oauth_client_versions": 0,
    }
    return {k: v for k, v in tx.written.items() if not k.startswith("oauth_client")}


def table(engine: Engine, *columns: object) -> set[tuple[object, ...]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(*columns))}  # type: ignore[call-overload]


def test_each_snapshot_writes_exactly_its_changed_rows(engine: Engine) -> None:
    key = Connection("api_key", "key", "a.com", T0, T0, "x-api-key")
    oauth = Connection("oauth", "app", "b.com", created_by="me", token_expiry=EXPIRY)
    gone = Connection("bearer_token", "gone", "c.com")
    assert apply(engine, [key, oauth, gone], T0) == {
        "connections": 3,
        "connection_versions": 3,
        "connection_changes": 3,
    }
    assert apply(engine, [key, oauth, gone], T1) == dict.fromkeys(
        ("connections", "connection_versions", "connection_changes"), 0
    )
    moved = key._replace(allowed_domain="z.com", updated_at=T2)
    assert apply(engine, [moved, oauth], T2) == {
        "connections": 2,  # key modified, gone removed
        "connection_versions": 3,  # two closed, one opened
        "connection_changes": 3,  # two fields of key, one removal
    }
    v, c = m.ConnectionVersion, m.ConnectionChange
    assert table(
        engine, v.type, v.name, v.allowed_domain, v.updated_at, v.valid_from, v.valid_to
    ) == {
        ("api_key", "key", "a.com", T0, T0, T2),
        ("api_key", "key", "z.com", T2, T2, None),
        ("oauth", "app", "b.com", None, T0, None),
        ("bearer_token", "gone", "c.com", None, T0, T2),
    }
    with engine.connect() as conn:
        events = conn.execute(
            select(
                c.detected_at, c.change, c.type, c.name, c.field, c.old_value, c.new_value
            ).order_by(c.id)
        ).all()
    # Within a snapshot: restored, modified and removed events as found, then the added
    # ones in key order.
    assert [tuple(e) for e in events] == [
        (T0, "added", "api_key", "key", None, None, None),
        (T0, "added", "bearer_token", "gone", None, None, None),
        (T0, "added", "oauth", "app", None, None, None),
        (T2, "modified", "api_key", "key", "allowed_domain", "a.com", "z.com"),
        (T2, "modified", "api_key", "key", "updated_at", "2026-01-01T12:00:00Z",
         "2026-03-01T12:00:00.250000Z"),
        (T2, "removed", "bearer_token", "gone", None, None, None),
    ]  # fmt: skip


def test_the_state_reads_back_as_the_records_that_were_written(engine: Engine) -> None:
    fetched = [
        Connection("api_key", "key", "a.com", T0, T2, "x-api-key"),
        Connection("oauth", "app", None, None, None, None, None, "me", "u-1", "acme",
                   "read", "bearer", EXPIRY, "c-1"),
        Connection("basic_auth", "user", "c.com", T1, T1, None, "bob"),
    ]  # fmt: skip
    apply(engine, fetched, T0)
    apply(engine, fetched[:2], T1)  # user removed
    with store.integration_transaction(engine, "acme", "crm") as tx:
        state = tx.load_state()
    assert {k: (s.connection, s.removed) for k, s in state.items()} == {
        ("api_key", "key"): (fetched[0], False),
        ("oauth", "app"): (fetched[1], False),
        ("basic_auth", "user"): (fetched[2], True),
    }
    assert all(
        v.tzinfo is UTC for s in state.values() for v in s.connection if isinstance(v, datetime)
    )


def test_updates_of_several_chunks_reach_every_row(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are inserted a chunk at a time and modified, removed and restored rows are
    updated by key: every row gets its own values, including a timestamp or text becoming
    NULL, and only the open versions are closed."""
    monkeypatch.setattr(bulk, "CHUNK", 2)
    keys = [Connection("api_key", f"k{i}", f"{i}.com", T0, T0, "x-key") for i in range(5)]
    apps = [Connection("oauth", f"o{i}", "b.com", created_by="me", token_expiry=EXPIRY)
            for i in range(2)]  # fmt: skip
    apply(engine, [*keys, *apps], T0)
    second = [
        keys[3]._replace(allowed_domain="three.com"),
        keys[4]._replace(updated_at=None),
        apps[0]._replace(token_expiry=T2),
        apps[1]._replace(allowed_domain=None),
    ]
    assert apply(engine, second, T1) == {
        "connections": 7,  # four modified, three removed
        "connection_versions": 11,  # seven closed, four opened
        "connection_changes": 7,
    }
    third = [keys[0]._replace(allowed_domain="back.com"), keys[1], *second]
    assert apply(engine, third, T2) == {
        "connections": 2,
        "connection_versions": 2,
        "connection_changes": 3,  # two restored, and k0's new domain
    }
    with store.integration_transaction(engine, "acme", "crm") as tx:
        state = tx.load_state()
    assert {k: (s.connection, s.removed) for k, s in state.items()} == {
        **{c[:2]: (c, False) for c in third},
        ("api_key", "k2"): (keys[2], True),
    }
    v = m.ConnectionVersion
    assert table(engine, v.name, v.allowed_domain, v.valid_from, v.valid_to) == {
        *((f"k{i}", f"{i}.com", T0, T1) for i in range(5)),
        ("k0", "back.com", T2, None),
        ("k1", "1.com", T2, None),
        ("k3", "three.com", T1, None),
        ("k4", "4.com", T1, None),
        ("o0", "b.com", T0, T1),
        ("o0", "b.com", T1, None),
        ("o1", "b.com", T0, T1),
        ("o1", None, T1, None),
    }


def test_postgresql_sessions_run_in_utc_and_keep_the_urls_own_options(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("session options are a PostgreSQL matter")
    url = db_url + ("&" if "?" in db_url else "?") + "options=-c%20search_path%3Dinventory_x"
    for readonly in (False, True):
        engine = store.make_engine(url, readonly=readonly)
        with engine.connect() as conn:
            settings = conn.exec_driver_sql(
                "SELECT current_setting('TimeZone'), current_setting('search_path'), "
                "current_setting('default_transaction_read_only')"
            ).one()
        engine.dispose()
        assert tuple(settings) == ("UTC", "inventory_x", "on" if readonly else "off")


def test_the_transaction_hands_what_it_wrote_to_its_consumers_in_order(engine: Engine) -> None:
    """§10 "One pass": one Written value, the same object to each consumer, in the order
    given, inside the snapshot's transaction (the rows are there to see); a snapshot that
    applies nothing hands no changes, and an empty list of consumers writes no hash."""
    key = Connection("api_key", "key", "a.com", T0, T0, "x-api-key")
    seen: list[tuple[str, int, object, frozenset[tuple[str, str]], int]] = []

    def consumer(name: str) -> store.Consumer:
        def consume(p: store.Pass) -> None:
            present = p.conn.execute(select(m.Connection.name)).scalars().all()
            w = p.written
            seen.append((name, w.snapshot_id, w.changes, w.changed, len(present)))

        return consume

    run = store.start_run(engine, "cli")
    changes = diff({}, [key])
    with store.integration_transaction(
        engine, "acme", "crm", consumers=(consumer("first"), consumer("second"))
    ) as tx:
        applied = tx.write(store.SnapshotRow(run.id, "acme", "crm", T0, "complete"), changes)
        failed = tx.write(
            store.SnapshotRow(run.id, "acme", "crm", T1, "failed", error="x"), changes
        )
    store.finish_run(engine, run, "complete")
    keys = frozenset({("api_key", "key")})
    assert seen == [
        ("first", applied, changes, keys, 1),
        ("second", applied, changes, keys, 1),
        ("first", failed, None, frozenset(), 1),
        ("second", failed, None, frozenset(), 1),
    ]
    assert table(engine, m.Snapshot.id, m.Snapshot.chain_hash) == {(applied, None), (failed, None)}
