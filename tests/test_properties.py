"""Property-based tests (hypothesis): the allow-list never lets a value through, junk never
escapes as an unexpected exception, pagination loses and repeats nothing, and any sequence
of account states is recorded so that history, versions and events all agree."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

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
from inventory.diff import as_text
from inventory.errors import RecordError, ResponseError
from inventory.records import (
    COMMON_FIELDS,
    KNOWN_TYPES,
    METADATA_FIELDS,
    TYPE_FIELDS,
    Connection,
    parse_item,
)
from inventory.secret import Secret
from inventory.sync import run_sync
from inventory.zis import ZisClient

from .helpers import with_clients

ALLOWED = set(COMMON_FIELDS) | {f for fields in TYPE_FIELDS.values() for f in fields} | {"name"}
stamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
)
names = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=3, max_size=20
)
plain = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
counter = itertools.count()


def rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@st.composite
def raw_items(draw: st.DrawFn, type_name: str) -> tuple[dict[str, Any], list[str]]:
    """A valid item of ``type_name`` with extra, secret-marked fields; returns the markers."""
    item: dict[str, Any] = {"name": draw(names)}
    for field in (*COMMON_FIELDS, *TYPE_FIELDS.get(type_name, ())):
        if field in ("created_at", "updated_at", "token_expiry"):
            item[field] = draw(st.one_of(st.none(), st.just(""), stamps.map(rfc3339)))
        else:
            item[field] = draw(st.one_of(st.none(), plain))
    markers = []
    extra_keys = draw(
        st.lists(st.text(min_size=1, max_size=12).filter(lambda k: k not in ALLOWED), max_size=6)
    )
    for key in [*extra_keys, "api_key", "password", "token", "access_token", "refresh_token"]:
        if key in ALLOWED:
            continue
        marker = f"SECRET-{next(counter)}-{draw(st.text('xyz+/=', max_size=4))}"
        item[key] = draw(
            st.sampled_from([marker, {"nested": marker}, [marker], f"Bearer {marker}"])
        )
        markers.append(marker)
    return item, markers


@given(
    st.sampled_from([*KNOWN_TYPES, "jwt_key", "x"]).flatmap(
        lambda t: st.tuples(st.just(t), raw_items(t))
    )
)
def test_no_value_outside_the_allow_list_reaches_a_record(
    case: tuple[str, tuple[dict[str, Any], list[str]]],
) -> None:
    type_name, (item, markers) = case
    record = parse_item(type_name, item)
    text = repr(record)
    for marker in markers:
        assert marker not in text
    for field, value in zip(METADATA_FIELDS, record.metadata(), strict=True):
        if field not in (*COMMON_FIELDS, *TYPE_FIELDS.get(type_name, ())):
            assert value is None


json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50),
              st.just("x" * 100_000), st.just(math.inf)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip


@given(
    st.sampled_from(KNOWN_TYPES),
    st.one_of(json_junk, st.dictionaries(st.sampled_from(sorted(ALLOWED)), json_junk, max_size=8)),
)
def test_junk_items_give_a_clear_error_or_a_record(type_name: str, item: Any) -> None:
    try:
        record = parse_item(type_name, item, where="acme/b", page=1)
    except RecordError as exc:
        assert str(exc).startswith(f"acme/b: page 1: {type_name}[0]")
        return
    assert isinstance(record, Connection)


@given(st.binary(max_size=200))
def test_any_body_bytes_fail_cleanly_or_parse(body: bytes) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    client = ZisClient(
        "https://acme.zendesk.com", "acme", SyncSettings(max_retries=0), transport=transport
    )
    try:
        pages = list(client.pages("b", Secret("t")))
    except ResponseError as exc:  # a clear, short error naming the page, no body echoed
        message = str(exc)
        assert message.startswith("acme/b: page 1: "), message
        assert len(message) < 200 and "Traceback" not in message
    else:  # only a JSON object with a complete meta is a page
        assert [p.body for p in pages] == [json.loads(body)]
        assert pages[0].body["meta"]["has_more"] is False
    finally:
        client.close()


cursor_text = st.text(st.sampled_from(list("ab+/=%&?# é漢😀")), min_size=1, max_size=12)


@given(
    st.lists(names, min_size=0, max_size=60, unique=True),
    st.integers(min_value=1, max_value=100),
    st.data(),
)
def test_pagination_returns_the_same_set_as_one_big_page(
    all_names: list[str], size: int, data: st.DataObject
) -> None:
    cursors: dict[str, int] = {}
    boundaries = list(range(size, len(all_names), size))
    for boundary in boundaries:
        cursor = data.draw(cursor_text.filter(lambda c: c not in cursors))
        cursors[cursor] = boundary

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("page[after]")
        start = cursors[after] if after is not None else 0
        assert int(request.url.params["page[size]"]) == size
        chunk = all_names[start : start + size]
        end = start + len(chunk)
        next_cursor = next((c for c, b in cursors.items() if b == end), "last-page-cursor")
        body = {
            "api_key": [{"name": n} for n in chunk],
            "meta": {"after": next_cursor, "has_more": end < len(all_names)},
        }
        return httpx.Response(200, json=body)

    client = ZisClient(
        "https://acme.zendesk.com",
        "acme",
        SyncSettings(page_size=size),
        transport=httpx.MockTransport(handler),
    )
    got = [i["name"] for p in client.pages("b", Secret("t")) for i in p.body["api_key"]]
    client.close()
    assert got == all_names


# --- any sequence of account states ----------------------------------------------------

connection_state = st.fixed_dictionaries(
    {
        "allowed_domain": st.one_of(st.none(), st.sampled_from(["a.com", "b.com", "*.c.com"])),
        "updated_at": st.one_of(st.none(), st.sampled_from([datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 2, 3, 4, 5, 6, 7, tzinfo=UTC)])),
        "username": st.one_of(st.none(), st.sampled_from(["u1", "u2"])),
    }
)  # fmt: skip
keys = st.tuples(
    st.sampled_from(["api_key", "basic_auth", "oauth"]),
    st.sampled_from(["k1", "k2", "k3", "k4", "k5"]),
)
account_states = st.lists(
    st.dictionaries(keys, connection_state, max_size=5), min_size=1, max_size=5
)


def raw(state: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {t: [] for t in KNOWN_TYPES}
    for (type_name, name), fields in sorted(state.items()):
        item = {
            "name": name,
            **{k: (rfc3339(v) if isinstance(v, datetime) else v) for k, v in fields.items()},
        }
        body[type_name].append({**item, "password": "SECRET", "api_key": "SECRET"})
    body["meta"] = {"after": "x", "has_more": False}
    return body


def expected_records(
    state: dict[tuple[str, str], dict[str, Any]],
) -> dict[tuple[str, str], tuple[Any, ...]]:
    records = {}
    for key, item in raw(state).items():
        if key == "meta":
            continue
        for entry in item:
            record = parse_item(key, entry)
            records[record.key] = record.metadata()
    return records


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path: Path = tmp_path_factory.mktemp("prop") / "prop.db"
    eng = store.make_engine(f"sqlite:///{path}")
    store.upgrade(eng)
    return eng


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(states=account_states)
def test_history_versions_and_events_agree_for_any_sequence_of_states(
    engine: Engine,
    states: list[dict[tuple[str, str], dict[str, Any]]],
) -> None:
    integration = f"prop{next(counter)}"
    current: dict[str, Any] = {}
    transport = httpx.MockTransport(
        with_clients(lambda request: httpx.Response(200, json=current["body"]))
    )
    settings_ = Settings("(prop)", "sqlite://", DatabaseSettings(), SyncSettings(max_removal_ratio=1.0), ScheduleSettings(),
                         (Account("acme", "https://acme.zendesk.com", (Integration("acme", integration, Secret("t")),)),))  # fmt: skip
    previous: dict[tuple[str, str], tuple[Any, ...]] = {}
    last_known: dict[tuple[str, str], tuple[Any, ...]] = {}  # values when last present
    snapshots = []
    for state in states:
        current["body"] = raw(state)
        result = run_sync(settings_, engine, transport=lambda account: transport)
        (snap,) = result.snapshots
        assert snap.status == "complete"
        now_records = expected_records(state)
        snapshots.append((snap.snapshot_id, now_records))
        c, ch = m.Connection, m.ConnectionChange
        with engine.connect() as conn:
            rows = conn.execute(
                select(c.type, c.name, *(c.__table__.c[f] for f in METADATA_FIELDS)).where(
                    c.integration == integration, c.removed_at.is_(None)
                )
            ).all()
            events = conn.execute(
                select(ch.type, ch.name, ch.change, ch.field, ch.old_value, ch.new_value).where(
                    ch.snapshot_id == snap.snapshot_id
                )
            ).all()
        assert {(r[0], r[1]): tuple(r[2:]) for r in rows} == now_records
        # Events touch exactly what changed, each once, with the right kind.
        want = set()
        for key in now_records.keys() | previous.keys():
            old, new = previous.get(key), now_records.get(key)
            if old == new:
                continue
            if old is None and new is not None:
                want.add((*key, "restored" if key in last_known else "added", None, None, None))
                if key in last_known:
                    last = last_known[key]
                    want |= {(*key, "modified", f, as_text(a), as_text(b))
                             for f, a, b in zip(METADATA_FIELDS, last, new, strict=True) if a != b}  # fmt: skip
            elif new is None:
                want.add((*key, "removed", None, None, None))
            else:
                want |= {(*key, "modified", f, as_text(a), as_text(b))
                         for f, a, b in zip(METADATA_FIELDS, old, new, strict=True) if a != b}  # fmt: skip
        assert set(events) == want and len(events) == len(want)
        # The same pages again: nothing to record, whether the stored rows are skipped (the
        # pages' digest is the last applied snapshot's) or compared (compare_all).
        for compare_all in (False, True):
            again = run_sync(
                settings_, engine, transport=lambda account: transport, compare_all=compare_all
            )
            (same,) = again.snapshots
            assert (same.status, same.added, same.removed, same.modified, same.restored) == (
                "complete", 0, 0, 0, 0,
            )  # fmt: skip
            with engine.connect() as conn:
                assert (
                    conn.execute(select(ch.id).where(ch.snapshot_id == same.snapshot_id)).all()
                    == []
                )
        last_known.update(now_records)
        previous = now_records
    # The inventory as of each snapshot's start is what that snapshot fetched.
    v, s = m.ConnectionVersion, m.Snapshot
    with engine.connect() as conn:
        for snapshot_id, records in snapshots:
            started = conn.execute(select(s.started_at).where(s.id == snapshot_id)).scalar_one()
            as_of = conn.execute(
                select(v.type, v.name, *(v.__table__.c[f] for f in METADATA_FIELDS)).where(
                    v.integration == integration,
                    v.valid_from <= started,
                    (v.valid_to.is_(None)) | (v.valid_to > started),
                )
            ).all()
            assert {(r[0], r[1]): tuple(r[2:]) for r in as_of} == records
