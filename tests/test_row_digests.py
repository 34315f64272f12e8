"""The row-digest shortcut (store.digests) against its oracle, the plain path: two
accounts fetch the same pages at the same times through the real sync, one reading only
the rows its digests do not vouch for and one every row, with rows of both edited by hand
the same way between snapshots and the first one's digests made stale or corrupt; after
every snapshot both have the same Diff and the same stored rows. Plus the bounds of the
shortcut, one by one."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, delete, insert, select, update

from inventory import models as m
from inventory import store
from inventory.config import (
    Account,
    DatabaseSettings,
    Integration,
    ScheduleSettings,
    Settings,
    SyncSettings,
)
from inventory.diff import Diff
from inventory.fields import KNOWN_TYPES, METADATA_FIELDS, TIMESTAMP_FIELDS, kept_fields
from inventory.records import parse_item, row_hashes
from inventory.secret import Secret
from inventory.store import digests
from inventory.sync import run_sync
from inventory.testing import SENTINEL, sample_item

from .helpers import with_clients

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
ON, OFF = "on", "off"  # the shortcut taken where it can be, and never
INTERVAL = timedelta(hours=24)
NAMES = [f"k{i}" for i in range(8)]
TEXTS = ["a", "b", "c.example.com", None]
STAMPS = ["2025-01-01T00:00:00Z", "2026-02-03T04:05:06.000007Z", None]
Key = tuple[str, str]
_integrations = itertools.count()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = store.make_engine(db_url)
    store.ensure_schema(engine, migrate=True)
    yield engine
    engine.dispose()


def settings_for(url: str, integration: str, accounts: tuple[str, ...] = (ON, OFF)) -> Settings:
    return Settings(
        "(test)", url, DatabaseSettings(),
        SyncSettings(full_compare_interval=INTERVAL, max_removal_ratio=0.5, max_removal_min=3),
        ScheduleSettings(),
        tuple(Account(a, f"https://{a}.zendesk.com", (Integration(a, integration, Secret("t")),))
              for a in accounts),
    )  # fmt: skip


def fields(rng: random.Random) -> dict[str, str | None]:
    """A value, or none, for every field of every type: each type keeps its own."""
    return {f: rng.choice(STAMPS if f in TIMESTAMP_FIELDS else TEXTS) for f in METADATA_FIELDS}


class Api:
    """What the pages give: items by key, in page order, with a secret in each."""

    def __init__(self) -> None:
        self.items: dict[Key, dict[str, str | None]] = {}
        self.seen: dict[Key, list[dict[str, str | None]]] = {}  # every value each had
        self.fresh = itertools.count()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for (type_name, name), values in self.items.items():
            item = {"name": name, **values, "password": SENTINEL, "token": SENTINEL}
            body.setdefault(type_name, []).append(item)
        return {**body, "meta": {"has_more": False, "after": None}}

    def put(self, key: Key, values: dict[str, str | None]) -> None:
        self.items[key] = values
        self.seen.setdefault(key, []).append(values)

    def change(self, rng: random.Random, key: Key) -> None:
        """One field its type keeps, any of them, given a value no snapshot fetched."""
        field = rng.choice(kept_fields(key[0]))
        n = next(self.fresh)
        value = (
            (T0 + timedelta(microseconds=n)).isoformat()
            if field in TIMESTAMP_FIELDS
            else f"fresh{n}"
        )
        self.put(key, {**self.items[key], field: value})

    def step(self, rng: random.Random, removed: list[Key]) -> None:
        """Adds, removals, modifications (one field, every field, back to an earlier
        value), restores, and sometimes a new page order."""
        for key in list(self.items):
            roll = rng.random()
            if roll < 0.1:
                del self.items[key]
                removed.append(key)
            elif roll < 0.2:
                self.put(key, {**self.items[key], **fields(rng)})
            elif roll < 0.4:
                self.change(rng, key)
            elif roll < 0.5:
                self.put(key, rng.choice(self.seen[key]))
        for _ in range(rng.randint(0, 2)):
            key = (rng.choice(KNOWN_TYPES), rng.choice(NAMES))
            if key not in self.items:
                self.put(key, fields(rng))
        if removed and rng.random() < 0.4:
            key = rng.choice(removed)
            if key not in self.items:
                self.put(key, rng.choice([fields(rng), {}, *self.seen.get(key, [])]))
        if rng.random() < 0.25:
            keys = list(self.items)
            rng.shuffle(keys)
            self.items = {k: self.items[k] for k in keys}


class Spy:
    """Each account's snapshots: the Diff each wrote, and how often the shortcut gave
    one; the shortcut switched on for ON only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.diffs: dict[str, list[tuple[str, Diff | None]]] = {ON: [], OFF: []}
        self.shortcut = 0
        write, changes = store.IntegrationTransaction.write, digests.RowDigests.changes

        def spy_write(tx: store.IntegrationTransaction, row: Any, *args: Any) -> int:
            self.diffs[tx.account].append((row.status, args[0] if args else None))
            return write(tx, row, *args)

        def spy_changes(rd: digests.RowDigests, *args: Any) -> Diff | None:
            monkeypatch.setattr(digests, "ENABLED", rd.account == ON)
            got = changes(rd, *args)
            self.shortcut += got is not None
            return got

        monkeypatch.setattr(store.IntegrationTransaction, "write", spy_write)
        monkeypatch.setattr(digests.RowDigests, "changes", spy_changes)
        monkeypatch.setattr(digests, "MOST_READ", 1.0)  # whenever it can


def stored(engine: Engine, account: str, integration: str) -> dict[str, Any]:
    """Every row the snapshots of one account's integration wrote, but ids and account."""
    out: dict[str, Any] = {}
    for model in (m.Connection, m.ConnectionVersion, m.ConnectionChange):
        table = model.__table__
        columns = [c for c in table.c if c.name not in ("id", "account", "snapshot_id")]
        with engine.connect() as conn:
            got = conn.execute(
                select(*columns)
                .where(table.c.account == account, table.c.integration == integration)
                .order_by(table.c.id)
            )
            out[table.name] = [tuple(r) for r in got]
    return out


def hand_edit(engine: Engine, rng: random.Random, api: Api, integration: str) -> bool:
    """One edit of ``connections`` outside the sync, the same in both accounts. Returns
    whether the next snapshot must be a full compare for the two to agree: an edit of a
    row it fetches unchanged is the full compare's to find (docs/decisions.md)."""
    c = m.Connection
    mine = (c.integration == integration,)
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.type, c.name, c.removed_at.is_(None)).where(c.account == ON, *mine)
        ).all()
    if not rows:
        return False
    type_name, name, present = rng.choice(sorted(rows))
    key = (c.type == type_name, c.name == name, *mine)
    kind = rng.choice(["edit read", "edit", "delete", "remove or restore", "insert"])
    with engine.begin() as conn:
        if kind in ("edit read", "edit"):
            conn.execute(update(c).where(*key).values(allowed_domain="hand.example.com"))
        elif kind == "delete":
            conn.execute(delete(c).where(*key))
        elif kind == "remove or restore":
            conn.execute(update(c).where(*key).values(removed_at=None if not present else T0))
        else:
            new = f"by_hand{next(api.fresh)}"
            for account in (ON, OFF):
                conn.execute(
                    insert(c).values(account=account, integration=integration, type="api_key",
                                     name=new, first_seen_at=T0,
                                     last_changed_at=T0)
                )  # fmt: skip
    if kind == "edit read":  # the next pages change or drop it: its row is read
        if (type_name, name) in api.items and rng.random() < 0.7:
            api.change(rng, (type_name, name))
        else:
            api.items.pop((type_name, name), None)
    return kind == "edit"


def spoil(engine: Engine, rng: random.Random, api: Api, integration: str, kept: list[Any]) -> None:
    """ON's row digests made corrupt, or stale: those of an older snapshot with as many
    rows put back, and the pages back to what that snapshot fetched (its digests would
    vouch for every row)."""
    d = m.RowDigest
    mine = (d.account == ON, d.integration == integration)
    with engine.begin() as conn:
        row = conn.execute(select(d).where(*mine)).one_or_none()
        if row is None:
            return
        older = [
            (r, items)
            for r, items in kept
            if r.snapshot_id != row.snapshot_id and r.entries == row.entries
        ]
        kind = rng.choice(["stale"] * 4 + ["format", "entries", "keys", "hashes", "swap", "utf8"])
        if kind == "stale" and older:
            old, items = rng.choice(older)
            values = {c: getattr(old, c) for c in ("format", "snapshot_id", "entries")}
            values |= {"entry_keys": old.entry_keys, "entry_hashes": old.entry_hashes}
            api.items = dict(items)
        elif kind in ("stale", "format"):
            values = {"format": digests.FORMAT + 1}
        elif kind == "entries":
            values = {"entries": row.entries + rng.choice([-1, 1])}
        elif kind == "keys":  # a key renamed: the digests say another key is present
            values = {"entry_keys": bytes(row.entry_keys).replace(b"k", b"q", 1)}
        elif kind == "hashes":
            values = {"entry_hashes": bytes(row.entry_hashes)[:-1]}
        elif kind == "swap":  # two rows' hashes exchanged
            h = bytes(row.entry_hashes)
            values = {"entry_hashes": h[16:32] + h[:16] + h[32:]}
        else:
            values = {"entry_keys": b"\xff" + bytes(row.entry_keys)}
        conn.execute(update(d).where(*mine).values(values))


def keep_a_copy(engine: Engine, api: Api, integration: str, kept: list[Any]) -> None:
    """ON's row digests as they are now, with the pages they were written from."""
    d = m.RowDigest
    with engine.connect() as conn:
        row = conn.execute(
            select(d).where(d.account == ON, d.integration == integration)
        ).one_or_none()
    if row is not None:
        kept.append((row, dict(api.items)))


@pytest.mark.parametrize("seed", range(16))
def test_the_shortcut_gives_the_plain_paths_diff_and_rows(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """A seeded random sequence of snapshots (the seed names the one that fails)."""
    rng = random.Random(seed)
    with monkeypatch.context() as patch:
        integration = f"crm{next(_integrations)}"
        s = settings_for(db_url, integration)
        api, spy = Api(), Spy(patch)
        transport = httpx.MockTransport(
            with_clients(lambda request: httpx.Response(200, json=api.body()))
        )
        at, removed, kept = T0, [], []
        for _ in range(rng.randint(3, 7)):
            api.put((rng.choice(KNOWN_TYPES), rng.choice(NAMES)), fields(rng))
        for step in range(10):
            full = False
            if step:
                api.step(rng, removed)
                if step > 1 and rng.random() < 0.3:
                    full = hand_edit(engine, rng, api, integration)
                if step > 1 and rng.random() < 0.3:
                    spoil(engine, rng, api, integration, kept)
            at += (
                INTERVAL + timedelta(hours=1) if full or rng.random() < 0.1 else timedelta(hours=1)
            )
            accept = rng.random() < 0.3
            for account in (ON, OFF):
                result = run_sync(
                    s, engine, accounts=[account], transport=lambda a: transport,
                    clock=lambda at=at: at, accept_removals=accept, consumers=(),
                )  # fmt: skip
                assert result.snapshots[0].status in ("complete", "held"), result.snapshots
            assert spy.diffs[ON] == spy.diffs[OFF]
            assert stored(engine, ON, integration) == stored(engine, OFF, integration)
            keep_a_copy(engine, api, integration, kept)
        assert spy.shortcut > 0
    # The digests hold keys and hashes only: no secret of the pages.
    with engine.connect() as conn:
        assert SENTINEL.encode() not in repr(conn.execute(select(m.RowDigest)).all()).encode()


# --- the bounds, one by one -------------------------------------------------------------


class Pages:
    """An account of ``n`` API keys, through a MockTransport."""

    def __init__(self, n: int) -> None:
        self.items = {f"key_{i:04}": sample_item("api_key", f"key_{i:04}") for i in range(n)}

    def transport(self) -> httpx.MockTransport:
        body = {"api_key": list(self.items.values()), "meta": {"has_more": False, "after": None}}
        return httpx.MockTransport(with_clients(lambda request: httpx.Response(200, json=body)))

    def records(self) -> list[Any]:
        return [parse_item("api_key", i) for i in self.items.values()]


class Reads:
    """What each snapshot read of the stored rows: every row, or how many by key."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str | int] = []
        self.written: list[dict[str, int]] = []
        load, write = store.IntegrationTransaction.load_state, store.IntegrationTransaction.write

        def spy_load(tx: store.IntegrationTransaction, *where: Any, **kind: Any) -> Any:
            got = load(tx, *where, **kind)
            if kind.get("kind") is store.CLIENTS:  # the OAuth clients: read every time
                pass
            elif not where:
                self.log.append("every row")
            elif self.log and isinstance(self.log[-1], int):
                self.log[-1] += len(got)
            else:
                self.log.append(len(got))
            return got

        def spy_write(tx: store.IntegrationTransaction, *args: Any) -> int:
            try:
                return write(tx, *args)
            finally:
                self.written.append(dict(tx.written))

        monkeypatch.setattr(store.IntegrationTransaction, "load_state", spy_load)
        monkeypatch.setattr(store.IntegrationTransaction, "write", spy_write)

    def taken(self) -> list[str | int]:
        log, self.log = self.log, []
        return log


def sync(engine: Engine, url: str, pages: Pages, at: datetime, **options: Any) -> Any:
    s = settings_for(url, "crm", (ON,))
    transport = pages.transport()
    (snap,) = run_sync(
        s, engine, transport=lambda a: transport, clock=lambda: at, **options
    ).snapshots
    return snap


def digest_row(engine: Engine) -> tuple[Any, ...]:
    d = m.RowDigest
    with engine.connect() as conn:
        row = conn.execute(
            select(d.format, d.snapshot_id, d.entries, d.entry_keys, d.entry_hashes)
        ).one()
    return (row[0], row[1], row[2], bytes(row[3]), bytes(row[4]))


def expected_digest(snapshot_id: int, pages: Pages) -> tuple[Any, ...]:
    records = pages.records()
    keys = "".join(f"{r.type}\x00{r.name}\x00" for r in records).encode()
    return (digests.FORMAT, snapshot_id, len(records), keys, b"".join(row_hashes(records)))


def test_a_one_percent_change_reads_and_writes_its_rows_only(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages, reads = Pages(200), Reads(monkeypatch)
    first = sync(engine, db_url, pages, T0)
    assert digest_row(engine) == expected_digest(first.snapshot_id, pages)
    del pages.items["key_0003"]
    pages.items["key_0007"] = {**pages.items["key_0007"], "allowed_domain": "new.example.com"}
    snap = sync(engine, db_url, pages, T0 + timedelta(hours=1))
    assert (snap.added, snap.removed, snap.modified, snap.restored) == (0, 1, 1, 0)
    assert reads.taken() == ["every row", 2]  # the first sync's, then the two changed
    assert reads.written[-1] == {
        "connections": 2,
        "connection_versions": 3,
        "connection_changes": 2,
        "oauth_clients": 0,
        "oauth_client_versions": 0,
    }
    assert digest_row(engine) == expected_digest(snap.snapshot_id, pages)
    # No change: no row read, the digests moved on to the new snapshot as they are.
    again = sync(engine, db_url, pages, T0 + timedelta(hours=2))
    assert reads.taken() == [] and digest_row(engine) == expected_digest(again.snapshot_id, pages)


def test_compare_all_and_the_interval_bypass_the_digests_and_write_them_again(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages, reads = Pages(20), Reads(monkeypatch)
    sync(engine, db_url, pages, T0)
    assert reads.taken() == ["every row"]  # the first snapshot's full compare
    d = m.RowDigest
    with engine.begin() as conn:  # digests that vouch for nothing any more
        conn.execute(update(d).values(entry_hashes=b"\x00" * 16 * 20))
    snap = sync(engine, db_url, pages, T0 + timedelta(hours=1), compare_all=True)
    assert reads.taken() == ["every row"]
    assert digest_row(engine) == expected_digest(snap.snapshot_id, pages)
    # A row edited by hand that the pages give unchanged: the full compare finds it.
    with engine.begin() as conn:
        conn.execute(
            update(m.Connection)
            .where(m.Connection.name == "key_0001")
            .values(allowed_domain="evil.example")
        )
    pages.items["key_0002"] = {**pages.items["key_0002"], "allowed_domain": "new.example.com"}
    snap = sync(engine, db_url, pages, T0 + timedelta(hours=2))
    assert (reads.taken(), snap.modified) == ([1], 1)  # key_0002 only, read by key
    snap = sync(engine, db_url, pages, T0 + timedelta(hours=1) + INTERVAL)
    assert (reads.taken(), snap.modified) == (["every row"], 1)  # key_0001 put back
    assert digest_row(engine) == expected_digest(snap.snapshot_id, pages)
    s = m.Snapshot
    with engine.connect() as conn:
        assert conn.execute(select(s.full_compare).order_by(s.id)).scalars().all() == [
            True,
            True,
            False,
            True,
        ]


def test_held_and_failed_snapshots_write_no_digests_and_many_changes_read_every_row(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages, reads = Pages(20), Reads(monkeypatch)
    first = sync(engine, db_url, pages, T0)
    written = digest_row(engine)
    kept = dict(pages.items)
    for name in list(pages.items)[:15]:
        del pages.items[name]
    assert sync(engine, db_url, pages, T0 + timedelta(hours=1)).status == "held"
    assert digest_row(engine) == written == expected_digest(first.snapshot_id, Pages(20))
    assert reads.taken() == ["every row", "every row"]  # 15 of 20 to read: more than MOST_READ
    failing = httpx.MockTransport(lambda request: httpx.Response(404))
    s = settings_for(db_url, "crm", (ON,))
    failed = run_sync(s, engine, transport=lambda a: failing, clock=lambda: T0 + timedelta(hours=2))
    assert failed.snapshots[0].status == "failed" and digest_row(engine) == written
    pages.items = kept
    pages.items["key_0005"] = {**pages.items["key_0005"], "allowed_domain": "new.example.com"}
    assert sync(engine, db_url, pages, T0 + timedelta(hours=3)).modified == 1
    assert reads.taken() == [1]  # the held and failed snapshots left the digests valid


def test_a_corrupt_digest_row_is_logged_and_every_row_compared(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pages, reads = Pages(20), Reads(monkeypatch)
    sync(engine, db_url, pages, T0)
    with engine.begin() as conn:
        conn.execute(update(m.RowDigest).values(entry_keys=b"\xff\xfe"))
    pages.items["key_0005"] = {**pages.items["key_0005"], "allowed_domain": "new.example.com"}
    snap = sync(engine, db_url, pages, T0 + timedelta(hours=1))
    assert (snap.status, snap.modified, reads.taken()) == (
        "complete",
        1,
        ["every row", "every row"],
    )
    assert [r.getMessage() for r in caplog.records if r.name == digests.__name__] == [
        "on/crm: its row_digests row cannot be read (changed outside zis-inventory?); every row "
        "compared, and the row written again"
    ]
    assert digest_row(engine) == expected_digest(snap.snapshot_id, pages)


@pytest.mark.parametrize(
    ("entries", "keys", "hashes", "expected"),
    [
        (0, b"", b"", {}),
        (1, b"api_key\x00a\x00", b"h" * 16, {("api_key", "a"): b"h" * 16}),
        (2, b"api_key\x00a\x00oauth\x00b\x00", b"h" * 16 + b"i" * 16,
         {("api_key", "a"): b"h" * 16, ("oauth", "b"): b"i" * 16}),
        (2, b"api_key\x00a\x00api_key\x00a\x00", b"h" * 32, None),  # a key twice
        (1, b"api_key\x00a\x00", b"h" * 15, None),
        (1, b"api_key\x00a", b"h" * 16, None),
        (2, b"api_key\x00a\x00", b"h" * 32, None),
        (1, b"\xffpi_key\x00a\x00", b"h" * 16, None),
        ("1", b"api_key\x00a\x00", b"h" * 16, None),
        (1, "api_key\x00a\x00", b"h" * 16, None),
    ],
)  # fmt: skip
def test_decode_takes_only_what_encode_writes(
    entries: Any, keys: Any, hashes: Any, expected: dict[Key, bytes] | None
) -> None:
    assert digests.decode(entries, keys, hashes) == expected
    if expected is not None:
        assert digests.encode(list(expected), list(expected.values())) == (keys, hashes)


def test_keys_no_parsed_record_has_are_not_encoded() -> None:
    assert digests.encode([("api_key", "a\x00b")], [b"h" * 16]) is None
    assert digests.encode([("api_key", "a\ud800")], [b"h" * 16]) is None
