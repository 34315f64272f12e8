"""OAuth clients (§17) end to end: fetched in the integration's snapshot with its token,
stored without client_id or client_secret, diffed into connection_changes
(type 'oauth_client'), hashed into the chain; a failing clients endpoint removes nothing
and a missing one (404) keeps the connections' snapshot complete."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from inventory import models as m
from inventory.records import format_timestamp
from inventory.store import chain
from inventory.testing import (
    SENTINEL,
    Fault,
    pagination_loop,
    rate_limited,
    sample_client,
    server_error,
)

from .helpers import Harness, expected_keys, present, query, run_verify, seed, write

OC, OV, C, S = m.OAuthClient, m.OAuthClientVersion, m.ConnectionChange, m.Snapshot
STAMP = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def clients(url: str) -> set[tuple[Any, ...]]:
    return query(
        url,
        select(
            OC.account, OC.integration, OC.uuid, OC.name, OC.auth_url, OC.token_url,
            OC.grant_type, OC.default_scopes, OC.created_by, OC.created_at, OC.updated_at,
            OC.removed_at.is_(None),
        ),
    )  # fmt: skip


def versions(url: str) -> set[tuple[Any, ...]]:
    return query(url, select(OV.uuid, OV.name, OV.token_url, OV.valid_to.is_(None)))


def client_events(url: str) -> set[tuple[Any, ...]]:
    return query(
        url,
        select(C.snapshot_id, C.type, C.name, C.change, C.field, C.old_value, C.new_value).where(
            C.type == "oauth_client"
        ),
    )


def row_of(item: dict[str, Any], account: str = "acme", integration: str = "billing") -> tuple:
    host = item["name"].replace("_", "-")
    return (
        account, integration, item["uuid"], item["name"],
        f"https://{host}.example.com/oauth/authorize", item["token_url"],
        "authorization_code", "read write", "admin_user", STAMP, STAMP, True,
    )  # fmt: skip


def with_clients(cli: Harness, *names: str) -> list[dict[str, Any]]:
    seed(cli, {"acme": {"billing": 1}})
    made = [sample_client(name, "billing") for name in names]
    for item in made:
        cli.zis.put_client("acme", "billing", item)
    return made


def test_clients_are_stored_without_secrets_and_a_redirect_is_one_modified_event(
    cli: Harness,
) -> None:
    made = with_clients(cli, "salesforce", "shopify")
    result = cli.run("sync")
    assert result.code == 0, result.err
    assert clients(cli.db_url) == {row_of(item) for item in made}
    assert client_events(cli.db_url) == {
        (1, "oauth_client", "salesforce", "added", None, None, None),
        (1, "oauth_client", "shopify", "added", None, None, None),
    }
    # The snapshot's counts are its connections'; the clients' events are beside them.
    assert query(cli.db_url, select(S.id, S.status, S.added, S.connection_count)) == {
        (1, "complete", 4, 4)
    }
    # Its two pages of connections, then its clients, with the integration's token.
    assert [(r.clients, r.authorized) for r in cli.zis.requests] == [
        (False, True),
        (False, True),
        (True, True),
    ]

    # The provider's token_url moved to a host someone else controls.
    cli.zis.update_client(
        "acme", "billing", made[0]["uuid"], token_url="https://collector.evil.example/token"
    )
    assert cli.run("sync").code == 0
    assert client_events(cli.db_url) - client_events_of_first(made) == {
        (
            2, "oauth_client", "salesforce", "modified", "token_url",
            "https://salesforce.example.com/oauth/token", "https://collector.evil.example/token",
        )
    }  # fmt: skip
    assert versions(cli.db_url) == {
        (made[0]["uuid"], "salesforce", "https://salesforce.example.com/oauth/token", False),
        (made[0]["uuid"], "salesforce", "https://collector.evil.example/token", True),
        (made[1]["uuid"], "shopify", "https://shopify.example.com/oauth/token", True),
    }
    # Unchanged clients cost no row writes: the third sync records nothing.
    assert cli.run("sync").code == 0
    assert {e[0] for e in client_events(cli.db_url)} == {1, 2}
    code, problems, _ = run_verify(cli)
    assert (code, problems) == (0, [])
    assert cli.run("db", "check", "--config", str(cli.config)).code == 0


def client_events_of_first(made: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(1, "oauth_client", item["name"], "added", None, None, None) for item in made}


def test_a_removed_client_is_removed_then_restored_and_a_nameless_one_goes_by_its_uuid(
    cli: Harness,
) -> None:
    made = with_clients(cli, "erp")
    nameless = sample_client("nameless", "billing")
    del nameless["name"]
    cli.zis.put_client("acme", "billing", nameless)
    assert cli.run("sync").code == 0
    cli.zis.delete_client("acme", "billing", made[0]["uuid"])
    assert cli.run("sync").code == 0
    cli.zis.put_client("acme", "billing", made[0])
    assert cli.run("sync").code == 0
    assert client_events(cli.db_url) == {
        (1, "oauth_client", "erp", "added", None, None, None),
        (1, "oauth_client", nameless["uuid"], "added", None, None, None),
        (2, "oauth_client", "erp", "removed", None, None, None),
        (3, "oauth_client", "erp", "restored", None, None, None),
    }
    assert {(r[2], r[3], r[-1]) for r in clients(cli.db_url)} == {
        (made[0]["uuid"], "erp", True),
        (nameless["uuid"], None, True),
    }
    code, problems, _ = run_verify(cli)
    assert (code, problems) == (0, [])


def test_a_failing_clients_endpoint_fails_the_snapshot_and_removes_nothing(
    cli: Harness,
) -> None:
    made = with_clients(cli, "salesforce")
    assert cli.run("sync").code == 0
    before = present(cli.db_url), clients(cli.db_url)
    # Everything goes away at once, but the clients cannot be fetched.
    for key in list(cli.zis.integration("acme", "billing").items):
        cli.zis.delete("acme", "billing", *key)
    cli.zis.delete_client("acme", "billing", made[0]["uuid"])
    cli.zis.fail_clients("acme", "billing", server_error(503, times=100))
    result = cli.run("sync")
    assert result.code == 1
    assert (present(cli.db_url), clients(cli.db_url)) == before
    assert query(cli.db_url, select(S.id, S.status, S.error).where(S.id == 2)) == {
        (
            2,
            "failed",
            "acme/billing: OAuth clients: page 1: gave up after 7 attempts: HTTP 503",
        )
    }
    assert query(cli.db_url, select(C.id).where(C.snapshot_id == 2)) == set()


def test_a_loop_in_the_clients_cursors_fails_the_snapshot(cli: Harness) -> None:
    with_clients(cli, "a_client", "b_client")
    fake = cli.zis.integration("acme", "billing")
    fake.clients_page_size = 1
    cli.zis.fail_clients("acme", "billing", pagination_loop())
    assert cli.run("sync").code == 1
    assert query(cli.db_url, select(S.status, S.error)) == {
        ("failed", "acme/billing: OAuth clients: page 2: pagination loop: cursor seen twice")
    }
    assert present(cli.db_url) == set() and clients(cli.db_url) == set()


@pytest.mark.parametrize(
    ("shape", "page_size", "pagination"),
    [("array", None, "meta"), ("object", 2, "meta"), ("object", 2, "links")],
)
def test_a_bare_array_and_cursors_of_either_kind_give_every_client(
    cli: Harness, shape: str, page_size: int | None, pagination: str
) -> None:
    made = with_clients(cli, *(f"client_{n}" for n in range(5)))
    fake = cli.zis.integration("acme", "billing")
    fake.clients_shape, fake.clients_page_size, fake.clients_pagination = (
        shape,
        page_size,
        pagination,
    )
    assert cli.run("sync").code == 0
    assert clients(cli.db_url) == {row_of(item) for item in made}
    pages = 1 if page_size is None else 3
    assert sum(r.clients for r in cli.zis.requests) == pages


def test_a_links_next_to_another_place_is_not_followed(cli: Harness) -> None:
    with_clients(cli, "salesforce")
    fake = cli.zis.integration("acme", "billing")
    fake.clients_page_size, fake.clients_pagination = 1, "links"
    cli.zis.put_client("acme", "billing", sample_client("second", "billing"))
    cli.zis.base_url = lambda account: "http://evil.example"  # type: ignore[method-assign]
    assert cli.run("sync").code == 1
    assert query(cli.db_url, select(S.error)) == {
        (
            "acme/billing: OAuth clients: page 1: links.next points outside this endpoint "
            "(not followed: the token is never sent to another location)",
        )
    }
    assert sum(r.clients for r in cli.zis.requests) == 1


def test_no_clients_api_keeps_the_connections_snapshot_and_is_told_once(cli: Harness) -> None:
    seed(cli, {"acme": {"billing": 1, "crm": 1}}, extra_sync="page_size = 3\nconcurrency = 1")
    for name in ("billing", "crm"):
        cli.zis.integration("acme", name).clients = None  # 404 for the endpoint
    result = cli.run("sync")
    assert result.code == 0, result.err
    assert present(cli.db_url) == expected_keys("acme", "billing", 1) | expected_keys(
        "acme", "crm", 1
    )
    told = [line for line in result.err.splitlines() if "OAuth clients API" in line]
    assert len(told) == 1
    assert told[0].endswith(
        "acme: this account has no OAuth clients API (HTTP 404 for "
        "/api/services/zis/connections/oauth/clients/billing); its OAuth clients are not "
        "inventoried this run"
    )
    # Once known, the account's other integrations do not ask again in that run.
    assert [(r.integration, r.status) for r in cli.zis.requests if r.clients] == [("billing", 404)]
    assert query(cli.db_url, select(S.integration, S.status)) == {
        ("billing", "complete"),
        ("crm", "complete"),
    }


def test_a_client_of_another_integration_or_without_uuid_fails_the_snapshot(
    cli: Harness,
) -> None:
    with_clients(cli)
    cli.zis.put_client("acme", "billing", sample_client("stray", "other_integration"))
    assert cli.run("sync").code == 1
    no_uuid = sample_client("no_uuid", "billing")
    no_uuid["uuid"] = None
    cli.zis.integration("acme", "billing").clients = [no_uuid]
    assert cli.run("sync").code == 1
    assert query(cli.db_url, select(S.id, S.error)) == {
        (
            1,
            "acme/billing: OAuth clients page 1: clients[0] "
            f"({sample_client('stray', 'x')['uuid']}): field 'integration' names another "
            "integration ('other_integration', not 'billing')",
        ),
        (2, "acme/billing: OAuth clients page 1: clients[0]: field 'uuid' must be a string, got null"),
    }  # fmt: skip


def test_a_hand_edit_of_a_client_version_is_named_by_db_verify(cli: Harness) -> None:
    made = with_clients(cli, "salesforce")
    assert cli.run("sync").code == 0
    cli.zis.update_client("acme", "billing", made[0]["uuid"], token_url="https://other.example/t")
    assert cli.run("sync").code == 0
    ((closed,),) = query(cli.db_url, select(OV.id).where(OV.valid_to.is_not(None)))
    write(cli.db_url, update(OV).where(OV.id == closed).values(token_url="https://x.example/t"))
    code, problems, _ = run_verify(cli)
    assert code == 1
    assert {(p["snapshot"], p["table"], p["row"], p["column"]) for p in problems} == {
        (1, "oauth_client_versions", closed, "token_url"),
    }
    original = "https://salesforce.example.com/oauth/token"
    write(cli.db_url, update(OV).where(OV.id == closed).values(token_url=original))
    assert run_verify(cli)[:2] == (0, [])
    # The present row is checked against its current version, value by value.
    ((row,),) = query(cli.db_url, select(OC.id))
    write(cli.db_url, update(OC).where(OC.id == row).values(token_url="https://x.example/t"))
    code, problems, _ = run_verify(cli)
    assert code == 1
    assert [(p["snapshot"], p["table"], p["row"], p["column"], p["problem"]) for p in problems] == [
        (
            None, "oauth_clients", row, "token_url",
            f"differs from its current version (oauth_client_versions row {closed + 1} token_url)",
        )
    ]  # fmt: skip
    checked = cli.run("db", "check", "--config", str(cli.config))
    assert checked.code == 1
    assert (
        f"acme/billing oauth_clients row {row} column token_url differs from its current "
        f"version (oauth_client_versions row {closed + 1} token_url)"
    ) in checked.out


def test_no_client_secret_or_id_reaches_a_table_or_an_output(cli: Harness) -> None:
    with_clients(cli, "salesforce")
    assert cli.run("sync").code == 0
    assert cli.run("changes", "--format", "json").code == 0
    dumped = repr(query(cli.db_url, select(OC))) + repr(query(cli.db_url, select(OV)))
    assert SENTINEL not in dumped and "client_secret" not in dumped
    # assert_no_secrets (the fixture's teardown) searches every table, output and file.


def test_snapshots_hashed_in_format_1_verify_as_before(cli: Harness) -> None:
    """A database whose first snapshots were hashed before the clients' tables existed
    (format 1, chain_format NULL) verifies, chained on into format 2; an edit of a format-1
    snapshot's rows is still named, and a client version no format-1 hash covers too."""
    with_clients(cli)
    with cli.monkeypatch.context() as before:
        before.setattr(chain, "FORMAT", 1)
        before.setattr(chain, "PARTS", chain.PARTS_OF[1])
        assert cli.run("sync").code == 0
        cli.zis.update(
            "acme", "billing", "api_key", "billing_api_key_0", allowed_domain="x.example"
        )
        assert cli.run("sync").code == 0
    write(cli.db_url, update(S).values(chain_format=None))  # as hashed before the upgrade
    cli.zis.put_client("acme", "billing", sample_client("salesforce", "billing"))
    assert cli.run("sync").code == 0
    assert query(cli.db_url, select(S.id, S.chain_format)) == {(1, None), (2, None), (3, 2)}
    code, problems, _ = run_verify(cli)
    assert (code, problems) == (0, [])
    V = m.ConnectionVersion
    ((first,),) = query(cli.db_url, select(func.min(V.id)))
    write(cli.db_url, update(V).where(V.id == first).values(username="someone@else.example"))
    code, problems, _ = run_verify(cli)
    assert code == 1
    assert {(p["snapshot"], p["table"], p["row"], p["column"]) for p in problems} == {
        (1, "connection_versions", first, "username")
    }
    write(cli.db_url, update(V).where(V.id == first).values(username=None))
    ((t1,),) = query(cli.db_url, select(S.started_at).where(S.id == 2))
    write(cli.db_url, insert(OV).values(
        id=99, account="acme", integration="billing", uuid="forged", valid_from=t1,
    ))  # fmt: skip
    code, problems, _ = run_verify(cli)
    assert code == 1
    assert [(p["snapshot"], p["table"], p["row"], p["column"], p["problem"]) for p in problems] == [
        (
            2, "oauth_client_versions", 99, None,
            "inserted: not among the rows hashed (its format, 1, has no client_opened)",
        ),
        (None, "oauth_client_versions", 99, None, "current, but has no oauth_clients row"),
    ]  # fmt: skip


def test_the_clients_report_now_and_as_of_a_time(cli: Harness) -> None:
    made = with_clients(cli, "salesforce", "shopify")
    assert cli.run("sync").code == 0
    ((t1,),) = query(cli.db_url, select(S.started_at))
    cli.zis.update_client("acme", "billing", made[0]["uuid"], token_url="https://evil.example/t")
    cli.zis.delete_client("acme", "billing", made[1]["uuid"])
    assert cli.run("sync").code == 0
    now = json.loads(cli.run("clients", "--format", "json").out)
    assert [(c["uuid"], c["name"], c["token_url"], c["removed_at"]) for c in now] == [
        (made[0]["uuid"], "salesforce", "https://evil.example/t", None)
    ]
    assert set(now[0]) == {
        "account", "integration", "uuid", "name", "auth_url", "token_url", "grant_type",
        "default_scopes", "created_by", "created_at", "updated_at", "first_seen_at",
        "last_changed_at", "removed_at",
    }  # fmt: skip
    stamp = format_timestamp(t1)
    then = json.loads(cli.run("clients", "--as-of", stamp, "--format", "json").out)
    assert sorted((c["name"], c["token_url"], c["valid_from"]) for c in then) == [
        ("salesforce", "https://salesforce.example.com/oauth/token", stamp),
        ("shopify", "https://shopify.example.com/oauth/token", stamp),
    ]
    table = cli.run("clients", "--include-removed").out.splitlines()
    assert table == [  # in uuid order: shopify's comes first
        "ACCOUNT/INTEGRATION  NAME (OR UUID)  TOKEN URL HOST      AUTH URL HOST     GRANT",
        "*acme/billing        shopify         shopify.example.c~  shopify.example~  code",
        "acme/billing         salesforce      evil.example        salesforce.exam~  code",
        "2 OAuth clients",
        "* removed (removed_at is set)",
    ]
    csv_lines = cli.run("clients", "--format", "csv").out.splitlines()
    assert csv_lines[0] == (
        "account,integration,uuid,name,auth_url,token_url,grant_type,default_scopes,"
        "created_by,created_at,updated_at,first_seen_at,last_changed_at,removed_at"
    )
    assert len(csv_lines) == 2


def test_a_rate_limited_clients_endpoint_is_waited_for_like_any_page(cli: Harness) -> None:
    made = with_clients(cli, "salesforce")
    cli.zis.fail_clients("acme", "billing", rate_limited("0", times=2))
    assert cli.run("sync").code == 0
    assert [r.status for r in cli.zis.requests if r.clients] == [429, 429, 200]
    assert clients(cli.db_url) == {row_of(made[0])}


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        # a listing cut short, holding a client_secret: only its size is said
        (b'{"clients": [{"uuid": "0c1d", "client_secret": "' + SENTINEL.encode() + b'", "na',
         "application/json", ": ({} bytes that are no JSON error, not shown)"),
        (b"client_secret=" + SENTINEL.encode(), "text/plain",
         ": ({} bytes that are no JSON error, not shown)"),
        # a JSON error's own fields are quoted, as on the connections' endpoint
        (b'{"errors": [{"code": "Forbidden", "title": "no access"}]}', "application/json",
         " Forbidden: no access"),
    ],
)  # fmt: skip
def test_a_clients_error_body_is_quoted_only_by_its_error_fields(
    cli: Harness, body: bytes, content_type: str, detail: str
) -> None:
    """An error answer of the OAuth clients endpoint is quoted by its JSON error fields
    only: the start of any other body could be a listing's client_secret."""
    with_clients(cli, "salesforce")
    fault = Fault("status", times=1, status=400, body=body, content_type=content_type)
    cli.zis.fail_clients("acme", "billing", fault)
    result = cli.run("sync")
    assert result.code == 1
    error = "acme/billing: OAuth clients: page 1: HTTP 400" + detail.format(len(body))
    assert query(cli.db_url, select(S.status, S.error)) == {("failed", error)}
    assert SENTINEL not in result.out + result.err
    cli.assert_no_secrets()
