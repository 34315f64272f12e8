"""The hash chain (§13): every edit, deletion or insertion of history by hand is named by
`db verify`, a cut chain end by `db verify --heads`, and the same rows hash the same on
SQLite and PostgreSQL whatever the secrets were (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, delete, func, insert, select, text, update

from inventory import canonical, store
from inventory import models as m
from inventory.diff import Diff, Event, diff
from inventory.fields import METADATA_FIELDS, TIMESTAMP_FIELDS
from inventory.records import Connection
from inventory.store import chain
from inventory.store import snapshot as store_snapshot
from inventory.store import verify as chain_verify
from inventory.store.written import NO_IDS, Ids, Written
from inventory.testing import SECRET_FIELDS, SENTINEL, server_error
from inventory.types import ChangeKind, SnapshotStatus

from .helpers import Harness, query, run_verify, seed, write

S, C, V, K = m.Snapshot, m.ConnectionChange, m.ConnectionVersion, m.Connection
T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def named(problems: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(p["chain"], p["snapshot"], p["table"], p["row"], p["column"]) for p in problems}


def history(h: Harness) -> dict[str, int]:
    """Five snapshots of acme/billing (first, changes, failed, changes again, none) and
    one of acme/crm; the ids of the interesting rows."""
    seed(h, {"acme": {"billing": 2, "crm": 1}}, extra_sync="page_size = 3\nmax_retries = 0")
    assert h.run("sync").code == 0  # snapshots 1, 2 (billing and crm, in either order)
    h.zis.delete("acme", "billing", "api_key", "billing_api_key_0")
    h.zis.update("acme", "billing", "oauth", "billing_oauth_1", allowed_domain="new.example.com")
    h.zis.update("acme", "billing", "basic_auth", "billing_basic_auth_0", username="u@example.com")
    assert h.run("sync", "--integration", "billing").code == 0
    h.zis.fail("acme", "billing", server_error(500, times=1, page=1))
    assert h.run("sync", "--integration", "billing").code == 1
    h.zis.update("acme", "billing", "oauth", "billing_oauth_0", token_type="mac")
    assert h.run("sync", "--integration", "billing").code == 0
    assert h.run("sync", "--integration", "billing").code == 0  # nothing changed
    billing = sorted(r[0] for r in query(h.db_url, select(S.id).where(S.integration == "billing")))
    first, changed, failed, last, quiet = billing
    ids = {"first": first, "changed": changed, "failed": failed, "last": last, "quiet": quiet}
    ids["change"] = min(r[0] for r in query(h.db_url, select(C.id).where(C.snapshot_id == changed)))
    started = query(h.db_url, select(S.started_at).where(S.id == changed)).pop()[0]
    opened = query(
        h.db_url, select(V.id).where(V.valid_from == started, V.integration == "billing")
    )
    closed = query(h.db_url, select(V.id).where(V.valid_to == started))
    ids["opened"] = min(r[0] for r in opened)
    ids["closed"] = min(r[0] for r in closed)
    return ids


def test_a_healthy_history_verifies_and_says_where_each_chain_starts(cli: Harness) -> None:
    history(cli)
    code, problems, last = run_verify(cli)
    assert (code, problems, last) == (0, [], "db verify: OK (2 chains, 6 snapshots)")
    table = cli.run("db", "verify", "--config", str(cli.config)).out.splitlines()
    assert table[-3:-1] == [
        "acme/billing: chained from its first snapshot (1)",
        "acme/crm: chained from its first snapshot (2)",
    ] or table[-3:-1] == [
        "acme/billing: chained from its first snapshot (2)",
        "acme/crm: chained from its first snapshot (1)",
    ]
    # Each snapshot links to the one before it in its chain; failed ones are chained too.
    rows = sorted(query(cli.db_url, select(S.id, S.integration, S.prev_hash, S.chain_hash)))
    before: dict[str, str | None] = {}
    for _, integration, prev, this in rows:
        assert prev == before.get(integration) and this is not None and len(this) == 64
        before[integration] = this
    assert cli.run("db", "check", "--config", str(cli.config)).code == 0


def edited(column: str, value: Any, ids: dict[str, int]) -> Any:
    """Another value of the same kind, that the constraints allow."""
    if column == "status":
        return "held"
    if column == "change":
        return "restored" if value != "restored" else "added"
    if column == "snapshot_id":
        return ids["failed"]
    if column in ("run_id",):
        return 1 if value != 1 else 2
    if column == "superseded_by":
        return ids["first"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1000
    if isinstance(value, datetime):
        return value + timedelta(seconds=1)
    if value is None:
        return "x" if column not in TIMESTAMPS else T0
    if len(value) == 64:  # a hash, in a String(64)
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value + "x"


TIMESTAMPS = {
    "started_at", "finished_at", "created_at", "updated_at", "token_expiry", "detected_at",
    "valid_from", "valid_to", "first_seen_at", "last_changed_at", "removed_at",
}  # fmt: skip


def cases(ids: dict[str, int]) -> Iterator[tuple[type[m.Base], int, str, int]]:
    """(model, row id, column, the snapshot whose hash breaks first) for every column of
    every history table: the snapshot row's own columns, an event's, and a version's (one
    opened by the snapshot, and for valid_to one it closed)."""
    for column in (*canonical.SNAPSHOT_COLUMNS, "prev_hash", "chain_hash"):
        row = ids["quiet"] if column == "id" else ids["changed"]  # no event refers to 'quiet'
        yield S, row, column, row
    for column in canonical.CHANGE_COLUMNS:
        yield C, ids["change"], column, ids["changed"]
    for column in canonical.CLOSED_COLUMNS:
        row = ids["closed"] if column == "valid_to" else ids["opened"]
        yield V, row, column, ids["changed"]


def test_every_column_of_every_history_table_edited_by_hand_is_named(cli: Harness) -> None:
    """chain_rows only locates a change (its digests prove nothing), so it is not here."""
    ids = history(cli)
    assert run_verify(cli)[0] == 0
    for model, row_id, column, snapshot in cases(ids):
        table: Table = model.__table__  # type: ignore[assignment]
        ((value,),) = query(cli.db_url, select(table.c[column]).where(table.c.id == row_id))
        new = edited(column, value, ids)
        where = table.c.id == row_id
        write(cli.db_url, update(table).where(where).values({column: new}))
        code, problems, last = run_verify(cli)
        assert code == 1 and last.startswith("db verify: FAILED"), (table.name, column)
        account, integration = "acme", "billing"
        if column in ("account", "integration") and model is S:
            account, integration = ("acme" + "x", "billing") if column == "account" else (
                "acme", "billing" + "x")  # fmt: skip
        new_id = new if column == "id" else row_id
        if column == "id" and model is not S:
            expected = {
                (f"{account}/{integration}", snapshot, table.name, row_id, None),
                (f"{account}/{integration}", snapshot, table.name, new_id, None),
            }
        else:
            expected = {(f"{account}/{integration}", snapshot, table.name, new_id, column)}
        if model is S and column in ("id",):
            expected = {("acme/billing", new_id, "snapshots", new_id, "id")}
        assert expected <= named(problems), (table.name, column, problems)
        back = table.c.id == new_id
        write(cli.db_url, update(table).where(back).values({column: value}))
        assert run_verify(cli)[:2] == (0, []), (table.name, column)


def test_a_timestamp_edited_into_one_no_sync_writes_is_named(cli: Harness) -> None:
    """PostgreSQL renders the hashed timestamps as text itself: an infinite one (which
    to_char would render as NULL, as a timestamp that is NULL), or the same time of a
    year before Christ (which a year's four digits alone would not tell apart), is named
    like any other edit; so is SQLite's text that is no timestamp."""
    ids = history(cli)
    started = query(cli.db_url, select(S.started_at).where(S.id == ids["changed"])).pop()[0]
    ((version,),) = query(
        cli.db_url,
        select(V.id).where(
            V.valid_from == started, V.type == "basic_auth", V.integration == "billing"
        ),
    )
    ((present,),) = query(cli.db_url, select(K.id).where(K.name == "billing_basic_auth_0"))
    event = ("connection_changes", ids["change"], "detected_at")
    empty = ("connection_versions", version, "token_expiry")  # a NULL, of a current version
    if cli.db_url.startswith("postgresql"):
        bc = "(to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00 BC')::timestamptz"
        edits = [
            (event, "'infinity'"),
            (event, "'-infinity'"),
            (event, bc.format("detected_at")),
            (empty, "'infinity'"),
            (empty, "'-infinity'"),
        ]
    else:
        edits = [(event, "'infinity'"), (empty, "'infinity'"), (event, "'2026-02-30 10:00:00'")]
    for (table, row_id, column), edit in edits:
        where = f"FROM {table} WHERE id = {row_id}"
        engine = store.make_engine(cli.db_url)
        with engine.begin() as conn:
            before = conn.exec_driver_sql(f"SELECT {column} {where}").scalar_one()
            conn.exec_driver_sql(f"UPDATE {table} SET {column} = {edit} WHERE id = {row_id}")
        engine.dispose()
        code, problems, _ = run_verify(cli)
        expected = {("acme/billing", ids["changed"], table, row_id, column)}
        if table == "connection_versions":  # its connection no longer matches it either
            expected.add(("acme/billing", None, "connections", present, column))
        assert code == 1 and named(problems) == expected, (edit, problems)
        engine = store.make_engine(cli.db_url)
        with engine.begin() as conn:
            conn.execute(
                text(f"UPDATE {table} SET {column} = :was WHERE id = {row_id}"), {"was": before}
            )
        engine.dispose()
        assert run_verify(cli)[:2] == (0, []), edit


def test_deleted_and_inserted_rows_are_named(cli: Harness) -> None:
    ids = history(cli)
    chained = "acme/billing"

    def broken_by(*statements: Any) -> set[tuple[Any, ...]]:
        write(cli.db_url, *statements)
        code, problems, _ = run_verify(cli)
        assert code == 1
        return named(problems)

    event = query(cli.db_url, select(C).where(C.id == ids["change"])).pop()
    got = broken_by(delete(C).where(C.id == ids["change"]))
    assert (chained, ids["changed"], "connection_changes", ids["change"], None) in got
    write(cli.db_url, insert(C).values(dict(zip(C.__table__.columns.keys(), event, strict=True))))
    assert run_verify(cli)[:2] == (0, [])

    version = query(cli.db_url, select(V).where(V.id == ids["opened"])).pop()
    got = broken_by(delete(V).where(V.id == ids["opened"]))
    assert (chained, ids["changed"], "connection_versions", ids["opened"], None) in got
    write(cli.db_url, insert(V).values(dict(zip(V.__table__.columns.keys(), version, strict=True))))
    assert run_verify(cli)[:2] == (0, [])

    # An event made up for a snapshot; a version opened at a snapshot's start, and one at
    # a time no snapshot started at.
    got = broken_by(
        insert(C).values(
            id=9000, snapshot_id=ids["last"], account="acme", integration="billing",
            type="api_key", name="ghost", change="added", detected_at=T0,
        )
    )  # fmt: skip
    assert (chained, ids["last"], "connection_changes", 9000, None) in got
    write(cli.db_url, delete(C).where(C.id == 9000))
    started = query(cli.db_url, select(S.started_at).where(S.id == ids["last"])).pop()[0]
    ghost = {"account": "acme", "integration": "billing", "type": "api_key", "name": "ghost"}
    got = broken_by(insert(V).values(id=9001, valid_from=started, valid_to=T0, **ghost))
    assert (chained, ids["last"], "connection_versions", 9001, None) in got
    got = broken_by(
        update(V).where(V.id == 9001).values(valid_from=started + timedelta(days=1), valid_to=None)
    )
    assert (chained, None, "connection_versions", 9001, "valid_from") in got
    write(cli.db_url, delete(V).where(V.id == 9001))
    assert run_verify(cli)[:2] == (0, [])

    # A present connection edited by hand no longer matches its current version.
    got = broken_by(update(K).where(K.name == "billing_oauth_0").values(token_type="bearer"))
    ((cid,),) = query(cli.db_url, select(K.id).where(K.name == "billing_oauth_0"))
    assert got == {(chained, None, "connections", cid, "token_type")}
    check = cli.run("db", "check", "--config", str(cli.config))
    assert check.code == 1 and "current values" in check.out


def test_rows_no_hash_covers_are_judged_by_their_own_integrations_snapshots(
    cli: Harness,
) -> None:
    """A version (or an OAuth client's) opened or closed at a time only another
    integration's snapshot started at is covered by no hash of its own chain; one from
    before its chain started is not judged."""
    ids = history(cli)
    crm_started = query(cli.db_url, select(S.started_at).where(S.integration == "crm")).pop()[0]
    billing_started = query(cli.db_url, select(S.started_at).where(S.id == ids["changed"])).pop()[0]
    later = billing_started + timedelta(days=30)  # no snapshot started then
    ghost = {"account": "acme", "type": "api_key", "name": "ghost"}
    client = {"account": "acme", "integration": "billing", "uuid": "0c1d", "name": "ghost"}
    write(
        cli.db_url,
        insert(V).values(id=9201, integration="billing", valid_from=crm_started, valid_to=later,
                         **ghost),
        insert(V).values(id=9203, integration="crm", valid_from=T0, valid_to=billing_started,
                         **ghost),
        insert(m.OAuthClientVersion).values(id=9204, token_url="https://login.example.com/t",
                                            created_at=T0, valid_from=crm_started,
                                            valid_to=later, **client),
    )  # fmt: skip
    code, problems, _ = run_verify(cli)
    assert code == 1
    assert named(problems) == {
        ("acme/billing", None, "connection_versions", 9201, "valid_from"),
        ("acme/billing", None, "connection_versions", 9201, "valid_to"),
        ("acme/crm", None, "connection_versions", 9203, "valid_to"),
        ("acme/billing", None, "oauth_client_versions", 9204, "valid_from"),
        ("acme/billing", None, "oauth_client_versions", 9204, "valid_to"),
    }


def test_the_checks_beside_the_chains_read_the_same_snapshot(
    cli: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the checks of uncovered rows and of the connections against their
    versions run on connections of their own: what is committed once `db verify` has
    begun is seen by none of its checks, and by the next `db verify`."""
    if not cli.db_url.startswith("postgresql"):
        pytest.skip("SQLite's checks share the one connection; exported snapshots are PostgreSQL's")
    ids = history(cli)
    started = query(cli.db_url, select(S.started_at).where(S.id == ids["changed"])).pop()[0]
    ghost = {"account": "acme", "integration": "billing", "type": "api_key", "name": "ghost"}
    exported = chain_verify._exported

    def then_written(conn: Any) -> str:
        snapshot = exported(conn)
        write(
            cli.db_url,
            insert(V).values(id=9301, valid_from=started + timedelta(seconds=1),
                             valid_to=started + timedelta(seconds=2), **ghost),
            update(K).where(K.name == "billing_oauth_0").values(token_type="bearer"),
        )  # fmt: skip
        return snapshot

    monkeypatch.setattr(chain_verify, "_exported", then_written)
    engine = store.make_engine(cli.db_url, readonly=True)
    try:
        assert chain_verify.verify(engine).problems == []
        monkeypatch.setattr(chain_verify, "_exported", exported)
        ((cid,),) = query(cli.db_url, select(K.id).where(K.name == "billing_oauth_0"))
        found = chain_verify.problem_rows(chain_verify.verify(engine).problems)
    finally:
        engine.dispose()
    assert named(found) == {
        ("acme/billing", None, "connection_versions", 9301, "valid_from"),
        ("acme/billing", None, "connection_versions", 9301, "valid_to"),
        ("acme/billing", None, "connections", cid, "token_type"),
    }


def heads_file(h: Harness) -> Path:
    assert h.config is not None
    result = h.run("db", "heads", "--config", str(h.config))
    assert result.code == 0
    path = h.tmp_path / f"heads-{len(h.outputs)}.json"
    path.write_text(result.out)
    return path


def test_a_cut_chain_end_is_found_only_with_the_heads_kept_before(cli: Harness) -> None:
    history(cli)
    cli.zis.update("acme", "billing", "oauth", "billing_oauth_0", token_type="bearer")
    assert cli.run("sync", "--integration", "billing").code == 0
    ((last,),) = query(cli.db_url, select(func.max(S.id)))
    kept = heads_file(cli)
    body = json.loads(kept.read_text())
    heads, digest = body["heads"], body["digest"]
    assert [(h["account"], h["integration"], h["snapshot_id"]) for h in heads] == [
        ("acme", "billing", last),
        ("acme", "crm", heads[1]["snapshot_id"]),
    ]
    assert digest == canonical.heads_digest(heads)
    assert run_verify(cli, "--heads", str(kept))[:2] == (0, [])
    # The newest snapshot goes with its events and versions, and the version it closed
    # is made current again: the chain alone cannot tell.
    started = query(cli.db_url, select(S.started_at).where(S.id == last)).pop()[0]
    write(
        cli.db_url,
        delete(C).where(C.snapshot_id == last),
        delete(V).where(V.valid_from == started),
        update(V).where(V.valid_to == started).values(valid_to=None),
        delete(S).where(S.id == last),
    )
    ((token_type, since),) = query(
        cli.db_url,
        select(V.token_type, V.valid_from).where(V.name == "billing_oauth_0", V.valid_to.is_(None)),
    )
    write(
        cli.db_url,
        update(K)
        .where(K.name == "billing_oauth_0")
        .values(token_type=token_type, last_changed_at=since),
    )
    assert run_verify(cli)[:2] == (0, [])
    code, problems, _ = run_verify(cli, "--heads", str(kept))
    assert code == 1
    assert named(problems) == {("acme/billing", last, "snapshots", last, None)}
    # A whole chain missing, and a heads file edited.
    crm = heads[1]["snapshot_id"]
    write(cli.db_url, delete(C).where(C.snapshot_id == crm), delete(V).where(V.integration == "crm"),
          delete(K).where(K.integration == "crm"), delete(S).where(S.id == crm))  # fmt: skip
    code, problems, _ = run_verify(cli, "--heads", str(kept))
    assert ("acme/crm", crm, "snapshots", crm, None) in named(problems)
    assert "whole chain is missing" in " ".join(p["problem"] for p in problems)
    body["heads"][0]["chain_hash"] = "0" * 64
    kept.write_text(json.dumps(body))
    code, problems, _ = run_verify(cli, "--heads", str(kept))
    assert ("", None, None, None, None) in named(problems)
    kept.write_text("[]")
    assert cli.run("db", "verify", "--config", str(cli.config), "--heads", str(kept)).code == 2


def test_an_upgraded_database_is_chained_from_its_upgrade_on(cli: Harness) -> None:
    """No backfill: the snapshots from before the upgrade keep no hash."""
    seed(cli, {"acme": {"billing": 1}})
    assert cli.run("sync").code == 0
    cli.zis.update("acme", "billing", "oauth", "billing_oauth_0", token_type="mac")
    assert cli.run("sync").code == 0
    engine = store.make_engine(cli.db_url)
    try:
        store.downgrade(engine, "0004")
        store.upgrade(engine)
    finally:
        engine.dispose()
    assert query(cli.db_url, select(S.id, S.chain_hash)) == {(1, None), (2, None)}
    cli.zis.update("acme", "billing", "oauth", "billing_oauth_0", token_type="bearer")
    assert cli.run("sync").code == 0
    code, problems, last = run_verify(cli)
    assert (code, problems, last) == (0, [], "db verify: OK (1 chains, 1 snapshots)")
    out = cli.run("db", "verify", "--config", str(cli.config)).out.splitlines()
    assert out[-2] == (
        "acme/billing: chained from snapshot 3; its 2 earlier snapshots were written before "
        "the upgrade and are not covered"
    )
    chains = json.loads(
        cli.run("db", "verify", "--config", str(cli.config), "--format", "json").out
    )
    assert chains["chains"] == [
        {"account": "acme", "integration": "billing", "first_snapshot": 3,
         "unchained_before": 2, "snapshots": 1}
    ]  # fmt: skip
    # A snapshot of the chain losing its hash is a broken link; the chain's first one
    # losing it moves the start, and the next one then says its predecessor is gone.
    assert cli.run("sync").code == 0
    assert cli.run("sync").code == 0
    write(cli.db_url, update(S).where(S.id == 4).values(chain_hash=None))
    code, problems, _ = run_verify(cli)
    assert code == 1 and named(problems) == {("acme/billing", 4, "snapshots", 4, "chain_hash")}
    write(cli.db_url, update(S).where(S.id == 3).values(chain_hash=None))
    code, problems, _ = run_verify(cli)
    assert code == 1 and named(problems) == {("acme/billing", 5, "snapshots", 5, "prev_hash")}


def test_the_canonical_form_is_rfc8785_of_the_whole_object() -> None:
    snapshot = [1, 2, "acme", "crm", "2026-12-02T10:00:00.000000Z", None, "complete"]
    rows = {
        "changes": [[1, 'é\u0001"', None, True], [2, "\u2028", 3, False]],
        "opened": [[5, "x"]],
    }
    joined = b"".join(canonical.canonical_pieces(snapshot, rows))
    assert joined == rfc8785.dumps(canonical.canonical_object(snapshot, rows))
    assert canonical.timestamp_text("2026-12-02 10:00:00.000000") == "2026-12-02T10:00:00.000000Z"
    assert canonical.timestamp_text(datetime(2026, 12, 2, 11, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Paris"))) == "2026-12-02T11:00:00.000000Z"  # fmt: skip
    assert canonical.timestamp_text("not a time") == {"unexpected": "str", "repr": "'not a time'"}
    assert canonical.value_json([2**60, b"\x00"]) == rfc8785.dumps(
        [{"unexpected": "int", "repr": str(2**60)}, {"unexpected": "bytes", "repr": "b'\\x00'"}]
    )


def test_the_canonical_columns_are_every_column_of_the_tables() -> None:
    """A column added to a history table must be added to the canonical form as a new
    FORMAT, not left out of the hashes silently."""
    assert set(canonical.SNAPSHOT_COLUMNS) | set(canonical.CHAIN_COLUMNS) == set(
        S.__table__.columns.keys()
    )
    assert set(canonical.CHANGE_COLUMNS) == set(C.__table__.columns.keys())
    assert set(canonical.CLOSED_COLUMNS) == set(V.__table__.columns.keys())
    assert set(canonical.CLIENT_CLOSED_COLUMNS) == set(
        m.OAuthClientVersion.__table__.columns.keys()
    )


# The hash of a fixed snapshot: the same on SQLite and PostgreSQL, and from release to
# release (a change of the canonical form needs a new FORMAT). Format 1's, of the same
# rows without the OAuth client's version, is the hash releases before format 2 wrote.
GOLDEN = "bb052ed236514fb36962df2ab10718eeed35ebbfeefeb209cc91bb61c7a2bcc8"
GOLDEN_FORMAT_1 = "c330c04b63c90f866ed678449d6da5dfbb2fc1c086628b2539ed1b66c012ef6b"


def test_the_same_rows_hash_the_same_on_either_database(db_url: str) -> None:
    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine)
        later = T0 + timedelta(seconds=2, microseconds=5)
        with engine.begin() as conn:
            conn.execute(
                insert(m.SyncRun).values(id=1, started_at=T0, trigger="cli", status="complete")
            )
            conn.execute(insert(S).values(
                id=1, run_id=1, account="acme", integration="crm", started_at=T0,
                finished_at=later, status="complete", connection_count=1, added=1, pages=1,
                accepted_removals=True, fetched_digest="ab" * 32,
            ))  # fmt: skip
            conn.execute(insert(C).values(
                id=1, snapshot_id=1, account="acme", integration="crm", type="oauth",
                name="ünï \"côde\"\n", change="added", detected_at=T0,
            ))  # fmt: skip
            conn.execute(insert(V).values(
                id=1, account="acme", integration="crm", type="oauth", name="ünï \"côde\"\n",
                token_expiry=datetime(2027, 1, 1, 0, 0, 0, 999999, tzinfo=UTC),
                created_at=T0 - timedelta(days=400), valid_from=T0,
            ))  # fmt: skip
            conn.execute(insert(m.OAuthClientVersion).values(
                id=1, account="acme", integration="crm", uuid="0c1d", name="Sälesforce",
                token_url="https://login.example.com/token", created_at=T0, valid_from=T0,
            ))  # fmt: skip
            # What the snapshot's transaction bound for those rows, as it hands it over.
            name = 'ünï "côde"\n'
            record = Connection(
                "oauth", name, created_at=T0 - timedelta(days=400),
                token_expiry=datetime(2027, 1, 1, 0, 0, 0, 999999, tzinfo=UTC),
            )  # fmt: skip
            row = store.SnapshotRow(
                1, "acme", "crm", T0, SnapshotStatus.COMPLETE, connection_count=1, pages=1,
                counts=(1, 0, 0, 0), accepted_removals=True, fetched_digest="ab" * 32,
            )  # fmt: skip
            changes = Diff(added=(record,), events=(Event(ChangeKind.ADDED, "oauth", name),))
            ids = Ids({("oauth", name, "added", None): 1}, {("oauth", name): 1}, {})
            chain.extend_chain(conn, Written(1, row, later, changes, ids, (record,)))
        ((prev, got, format_),) = query(db_url, select(S.prev_hash, S.chain_hash, S.chain_format))
        assert prev is None and got == GOLDEN and format_ == canonical.FORMAT == 2
        # db verify, recomputing it from the stored rows, finds the same hash (this test
        # wrote no connections or oauth_clients row, which is all it names).
        reader = store.make_engine(db_url, readonly=True)
        verified = chain_verify.verify(reader)
        reader.dispose()
        problems = {(p.snapshot, p.table, p.row, p.problem) for p in verified.problems}
        assert verified.snapshots == 1
        assert problems == {
            (None, "connection_versions", 1, "current, but has no connections row"),
            (None, "oauth_client_versions", 1, "current, but has no oauth_clients row"),
        }
        with engine.connect() as conn:
            readers = chain.Readers.of(conn)
            snap = chain.read_snapshot(conn, readers, 1)
            rows = {
                p.key: [values for _, values in chain.part_rows(conn, readers, p, snap)]
                for p in chain.PARTS_OF[1]
            }
        format_1 = canonical.chain_hash(None, canonical.canonical_pieces(snap.values, rows, 1))
        assert format_1 == GOLDEN_FORMAT_1
    finally:
        engine.dispose()


class Clock:
    """store.now, the same sequence of times in each world."""

    def __init__(self) -> None:
        self.ticks = itertools.count()
        self.base = T0

    def at(self, base: datetime) -> None:
        self.base, self.ticks = base, itertools.count()

    def __call__(self) -> datetime:
        return self.base + timedelta(milliseconds=next(self.ticks))


def test_secrets_never_reach_the_chain_and_both_databases_agree(
    cli: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same account synced into this database and into a new SQLite file, with every
    secret field changed before each sync of the second, at the same times: the same
    hashes (on PostgreSQL too, so both databases give the same bytes)."""
    seed(cli, {"acme": {"billing": 2}})
    clock = Clock()
    monkeypatch.setattr(store, "now", clock)  # each snapshot's start
    monkeypatch.setattr(store_snapshot, "now", clock)  # and its finish
    other = f"sqlite:///{cli.tmp_path / 'other.db'}"

    def secrets_changed(round_: int) -> None:
        for (type_name, name), item in cli.zis.integration("acme", "billing").items.items():
            for secret in SECRET_FIELDS.get(type_name, ("secret",)):
                item[secret] = f"{SENTINEL}-other-{round_}-{name}"

    for round_, base in enumerate((T0, T0 + timedelta(hours=1))):
        if round_:
            cli.zis.update("acme", "billing", "oauth", "billing_oauth_0", token_type="mac")
            cli.zis.delete("acme", "billing", "api_key", "billing_api_key_1")
        clock.at(base)
        assert cli.run("sync").code == 0
        secrets_changed(round_)
        clock.at(base)
        monkeypatch.setenv("INVENTORY_DATABASE_URL", other)
        assert cli.run("sync").code == 0
        monkeypatch.delenv("INVENTORY_DATABASE_URL")
    hashes = select(S.id, S.prev_hash, S.chain_hash)
    ours, theirs = query(cli.db_url, hashes), query(other, hashes)
    assert ours == theirs and len(ours) == 2
    assert {r[1:] for r in query(cli.db_url, select(S.id, S.added, S.removed, S.modified))} == {
        (8, 0, 0), (0, 1, 1)
    }  # fmt: skip
    assert run_verify(cli)[0] == 0


PLAIN_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.sampled_from([2**53 - 1, -(2**53) + 1, 2**53, -(2**53), 0, -1]),
    st.text(),  # any code point, lone surrogates included
    # every character JSON escapes, and those it need not (DEL, U+2028, U+2029, "/")
    st.text(st.sampled_from([*map(chr, range(0x20)), '"', "\\", "/", "\x7f", "\u2028",
                             "\u2029", "\ufeff", "\U0001f600", "é"])),
)  # fmt: skip
OTHER_VALUES = st.one_of(
    st.integers(),
    st.floats(),
    st.binary(),
    st.dictionaries(st.text(), st.text(), max_size=2),
    st.datetimes(timezones=st.just(UTC)),
    st.lists(st.text(), max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(PLAIN_VALUES, OTHER_VALUES)))
def test_rows_are_written_as_rfc8785_writes_them(values: list[Any]) -> None:
    """value_json's orjson path gives rfc8785's bytes for every plain value, and every
    other value goes to rfc8785 (as an unexpected value when it has no JSON form), also
    those orjson would write its own way (floats, dicts, datetimes, lists)."""
    try:
        expected = rfc8785.dumps(values)
    except rfc8785.CanonicalizationError:
        expected = rfc8785.dumps([canonical._safe(v) for v in values])
    assert canonical.value_json(values) == expected


# Text either database stores: no lone surrogate, no NUL (PostgreSQL refuses both).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
STAMPS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
RECORDS = st.lists(
    st.builds(
        Connection,
        st.sampled_from(("api_key", "basic_auth", "bearer_token", "oauth", "new_type")),
        TEXT.filter(bool),
        **{f: st.none() | (STAMPS if f in TIMESTAMP_FIELDS else TEXT) for f in METADATA_FIELDS},
    ),
    max_size=6,
    unique_by=lambda c: c.key,
)
WORLDS = itertools.count()


def test_what_is_bound_is_what_db_verify_reads_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots of random records written through the real write path: their hashes are
    made from the values the transaction bound, and `db verify`, recomputing them from the
    stored rows, finds each the same; so does it when the ids read back do not cover what
    was written and the chain reads the rows back (SQLite and PostgreSQL)."""
    engine = store.make_engine(db_url)
    reader = store.make_engine(db_url, readonly=True)
    worlds = itertools.count()
    real_ids = store_snapshot.IntegrationTransaction._ids

    @settings(max_examples=10, deadline=None)
    @given(st.lists(RECORDS, min_size=1, max_size=4))
    def written_and_verified(fetches: list[list[Connection]]) -> None:
        world = next(worlds)
        run = store.start_run(engine, "cli")
        for fallback in (False, True):
            ids = (lambda *a: NO_IDS) if fallback else real_ids
            monkeypatch.setattr(store_snapshot.IntegrationTransaction, "_ids", ids)
            integration = f"w{world}_{fallback}"
            for n, fetched in enumerate(fetches):
                at = T0 + timedelta(minutes=n)
                with store.integration_transaction(engine, "acme", integration) as tx:
                    changes = diff(tx.load_state(), fetched)
                    c = changes.counts()
                    counts = (c["added"], c["removed"], c["modified"], c["restored"])
                    row = store.SnapshotRow(
                        run.id, "acme", integration, at, SnapshotStatus.COMPLETE,
                        connection_count=len(fetched), counts=counts,
                    )  # fmt: skip
                    tx.write(row, changes, fetched)
        verified = chain_verify.verify(reader)
        mine = {
            (c.account, c.integration, c.first is not None, c.snapshots)
            for c in verified.chains
            if c.integration.startswith(f"w{world}_")
        }
        assert verified.problems == []
        assert mine == {("acme", f"w{world}_{f}", True, len(fetches)) for f in (False, True)}

    try:
        store.upgrade(engine)
        written_and_verified()
    finally:
        reader.dispose()
        engine.dispose()


def format_1(db_url: str, snapshot_id: int) -> str:
    """chain_rows as it was written before the row digests (digests format 1, no
    ``digests`` key): 16 bits per value, for every row of every part."""
    engine = store.make_engine(db_url)
    try:
        with engine.connect() as conn:
            readers = chain.Readers.of(conn)
            snap = chain.read_snapshot(conn, readers, snapshot_id)
            kept: dict[str, Any] = {
                "format": snap.format,
                "snapshot": canonical.column_digests(snap.values),
            }
            for part in chain.PARTS_OF[snap.format]:
                kept[part.key] = {
                    str(row_id): canonical.column_digests(values)
                    for row_id, values in chain.part_rows(conn, readers, part, snap)
                }
    finally:
        engine.dispose()
    return json.dumps(kept, separators=(",", ":"), sort_keys=True)


def test_chain_rows_of_both_formats_name_a_single_edit(cli: Harness) -> None:
    """A hand edit is named by row and column whether the snapshot's chain_rows keeps the
    row digests (format 2, written now) or a digest per value (format 1, written before)."""
    ids = history(cli)
    changed = ids["changed"]
    kept = json.loads(query(cli.db_url, select(S.chain_rows).where(S.id == changed)).pop()[0])
    assert (kept["format"], kept["digests"]) == (canonical.FORMAT, 2)
    parts = {"changes", "client_closed", "client_opened", "closed", "opened"}
    assert set(kept) == {"format", "digests", "snapshot", *parts}
    assert kept["opened"]["ids"] == sorted(kept["opened"]["ids"])
    assert len(kept["opened"]["rows"]) == 8 * len(kept["opened"]["ids"])
    older = format_1(cli.db_url, changed)
    for rows in ("current", older):
        if rows == older:
            write(cli.db_url, update(S).where(S.id == changed).values(chain_rows=older))
        edits = (  # (table, row, column, new value, the snapshot whose hash breaks first)
            (V, ids["opened"], "allowed_domain", "evil.example.com", changed),
            (C, ids["change"], "new_value", "edited", changed),
            (V, ids["closed"], "username", "someone@example.com", ids["first"]),  # opened it
        )
        for model, row_id, column, value, broken in edits:
            table: Table = model.__table__  # type: ignore[assignment]
            ((was,),) = query(cli.db_url, select(table.c[column]).where(table.c.id == row_id))
            write(cli.db_url, update(table).where(table.c.id == row_id).values({column: value}))
            code, problems, _ = run_verify(cli)
            chains = {p for p in named(problems) if p[1] is not None}
            assert (code, chains) == (1, {("acme/billing", broken, table.name, row_id, column)})
            write(cli.db_url, update(table).where(table.c.id == row_id).values({column: was}))
        assert run_verify(cli)[:2] == (0, [])
