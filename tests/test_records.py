"""records.py: the allow-list, timestamps, and per-item errors."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory import fields
from inventory import models as m
from inventory.errors import RecordError, ResponseError
from inventory.records import (
    COMMON_FIELDS,
    KNOWN_TYPES,
    RECORD_FIELDS,
    TIMESTAMP_FIELDS,
    TYPE_FIELDS,
    Connection,
    fetched_digest,
    format_timestamp,
    parse_item,
    parse_page,
    parse_timestamp,
    row_hashes,
)
from inventory.store.bulk import sqlite_value
from inventory.testing import SECRET_FIELDS, SENTINEL, sample_item


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-10-01T12:44:22Z", datetime(2021, 10, 1, 12, 44, 22, tzinfo=UTC)),
        ("1985-04-12T23:20:50.52Z", datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC)),
        ("1985-04-12T23:20:50.123456789Z", datetime(1985, 4, 12, 23, 20, 50, 123456, tzinfo=UTC)),
        ("1985-04-12T23:20:50.1z", datetime(1985, 4, 12, 23, 20, 50, 100000, tzinfo=UTC)),
        ("2021-10-01T14:44:22+02:00", datetime(2021, 10, 1, 12, 44, 22, tzinfo=UTC)),
        ("2021-10-01T00:30:00-01:30", datetime(2021, 10, 1, 2, 0, 0, tzinfo=UTC)),
    ],
)
def test_timestamps_parse_to_utc(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2021-10-01",
        "2021-10-01T12:44:22",
        "2021-13-01T00:00:00Z",
        "yesterday",
        "2021-10-01T12:44:22.Z",
    ],
)
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_format_timestamp_is_rfc3339_utc() -> None:
    assert format_timestamp(datetime(2021, 10, 1, 12, 44, 22, tzinfo=UTC)) == "2021-10-01T12:44:22Z"
    assert (
        format_timestamp(datetime(2021, 10, 1, 12, 44, 22, 520000, tzinfo=UTC))
        == "2021-10-01T12:44:22.520000Z"
    )


def test_documented_example_keeps_exactly_the_allow_list() -> None:
    body = {
        "api_key": [
            {
                "allowed_domain": "",
                "api_key": "*****",
                "created_at": "1985-04-12T23:20:50.52Z",
                "header_name": "x-api-key",
                "name": "my_api_key_connection",
                "updated_at": "1985-04-12T23:20:50.52Z",
            }
        ],
        "basic_auth": [
            {
                "allowed_domain": "",
                "created_at": "1985-04-12T23:20:50.52Z",
                "name": "my_basic_auth_connection",
                "password": "*****",
                "updated_at": "1985-04-12T23:20:50.52Z",
                "username": "john@example.com",
            }
        ],
        "bearer_token": [
            {
                "allowed_domain": "",
                "created_at": "1985-04-12T23:20:50.52Z",
                "name": "my_bearer_token_connection",
                "token": "*****",
                "updated_at": "1985-04-12T23:20:50.52Z",
            }
        ],
        "meta": {"after": "my_first_connection", "before": "my_tenth_connection", "has_more": True},
        "oauth": [
            {
                "access_token": f"{SENTINEL}-a",
                "created_by": "test_user",
                "name": "my_oauth_connection",
                "oauth_access_token_response_body": f'{{"access_token":"{SENTINEL}-b"}}',
                "oauth_url_subdomain": "foobar",
                "permission_scope": "read write",
                "refresh_token": f"{SENTINEL}-c",
                "token_expiry": "2021-10-01T12:44:22Z",
                "token_type": "bearer",
                "uuid": "ac10a230-0c43-45f8-b221-9e085ce90418",
                "zendesk_account_id": 1,
                "integration": "x",
            }
        ],
    }
    page = parse_page(body, where="acme/billing", page=1)
    stamp = datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC)
    assert page.unknown_types == frozenset()
    assert page.connections == [
        Connection("api_key", "my_api_key_connection", None, stamp, stamp, header_name="x-api-key"),
        Connection(
            "basic_auth",
            "my_basic_auth_connection",
            None,
            stamp,
            stamp,
            username="john@example.com",
        ),
        Connection("bearer_token", "my_bearer_token_connection", None, stamp, stamp),
        Connection(
            "oauth",
            "my_oauth_connection",
            created_by="test_user",
            uuid="ac10a230-0c43-45f8-b221-9e085ce90418",
            oauth_url_subdomain="foobar",
            permission_scope="read write",
            token_type="bearer",
            token_expiry=datetime(2021, 10, 1, 12, 44, 22, tzinfo=UTC),
        ),
    ]
    assert SENTINEL not in repr(page) and "*****" not in repr(page)


@pytest.mark.parametrize("expiry", [None, "", "missing"])
def test_no_expiry_known_is_null(expiry: str | None) -> None:
    item = sample_item("oauth", "slack")
    if expiry == "missing":
        del item["token_expiry"]
    else:
        item["token_expiry"] = expiry
    assert parse_item("oauth", item).token_expiry is None


def test_type_specific_fields_of_other_types_are_dropped() -> None:
    item = sample_item("bearer_token", "tok", username="someone", header_name="x", created_by="me")
    assert parse_item("bearer_token", item) == Connection(
        "bearer_token",
        "tok",
        "tok.example.com",
        datetime(2025, 3, 1, 10, 0, 0, 520000, tzinfo=UTC),
        datetime(2025, 3, 1, 10, 0, 0, 520000, tzinfo=UTC),
    )


def test_unknown_type_keeps_common_fields_and_is_reported() -> None:
    body = {
        "jwt": [
            {
                "name": "signer",
                "allowed_domain": "a.example.com",
                "private_key": f"{SENTINEL}-k",
                "created_at": "2024-01-01T00:00:00Z",
            }
        ],
        "links": {"next": "x"},
        "count": 3,
        "meta": {"has_more": False},
    }
    page = parse_page(body, where="acme/billing", page=1)
    assert page.unknown_types == frozenset({"jwt"})
    assert page.connections == [
        Connection("jwt", "signer", "a.example.com", datetime(2024, 1, 1, tzinfo=UTC), None)
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"allowed_domain": "x"},
            "acme/billing: page 3: api_key[0]: field 'name' must be a string, got null",
        ),
        (
            {"name": 42},
            "acme/billing: page 3: api_key[0]: field 'name' must be a string, got number",
        ),
        (
            {"name": ""},
            "acme/billing: page 3: api_key[0]: field 'name' must be 1-255 printable characters",
        ),
        (
            {"name": "a\nb"},
            "acme/billing: page 3: api_key[0]: field 'name' must be 1-255 printable characters",
        ),
        (
            {"name": "k", "header_name": ["x"]},
            "acme/billing: page 3: api_key[0] (k): field 'header_name' must be a string or null, got array",
        ),
        (
            {"name": "k", "created_at": "2021-10-01"},
            "acme/billing: page 3: api_key[0] (k): field 'created_at' is not an RFC 3339 timestamp ('2021-10-01')",
        ),
        (
            {"name": "k", "updated_at": 1633092262},
            "acme/billing: page 3: api_key[0] (k): field 'updated_at' must be a string or null, got number",
        ),
        ("just a string", "acme/billing: page 3: api_key[0]: item must be an object, got string"),
        (
            {"name": "k\ud800"},
            "acme/billing: page 3: api_key[0]: field 'name' must be 1-255 printable characters",
        ),
        (
            {"name": "k", "allowed_domain": "a\u0000b"},
            "acme/billing: page 3: api_key[0] (k): field 'allowed_domain' holds a NUL character or an unpaired surrogate, which cannot be stored as text",
        ),
        (
            {"name": "k", "header_name": "x-\udfff"},
            "acme/billing: page 3: api_key[0] (k): field 'header_name' holds a NUL character or an unpaired surrogate, which cannot be stored as text",
        ),
        (
            {"name": "k", "created_at": "2021-10-01T00:00:00\ud800"},
            "acme/billing: page 3: api_key[0] (k): field 'created_at' is not an RFC 3339 timestamp ('2021-10-01T00:00:00?')",
        ),
    ],
)
def test_malformed_items_name_integration_page_and_field(item: object, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_page({"api_key": [item], "meta": {"has_more": False}}, where="acme/billing", page=3)
    assert str(caught.value) == message


def test_secret_fields_never_appear_in_errors() -> None:
    item = {"name": "k", "api_key": f"{SENTINEL}-x", "created_at": 5}
    with pytest.raises(RecordError) as caught:
        parse_item("api_key", item, where="a/b")
    assert SENTINEL not in str(caught.value)


def test_a_type_that_is_not_an_array_fails_the_page() -> None:
    with pytest.raises(
        ResponseError, match=r"acme/b: page 1: 'oauth' must be an array, got object"
    ):
        parse_page({"oauth": {"name": "x"}, "meta": {"has_more": False}}, where="acme/b", page=1)


def test_a_missing_array_is_empty() -> None:
    assert (
        parse_page({"oauth": None, "meta": {"has_more": False}}, where="a/b", page=1).connections
        == []
    )


def pages_digest(*bodies: dict[str, Any]) -> str:
    connections = [
        c
        for number, body in enumerate(bodies, 1)
        for c in parse_page(body, where="acme/crm", page=number).connections
    ]
    return fetched_digest(connections)


def crm_page() -> dict[str, Any]:
    return {t: [sample_item(t, f"crm_{t}_{i}") for i in range(2)] for t in KNOWN_TYPES}


def test_the_digest_of_the_same_pages_is_the_same_and_parsing_is_unchanged() -> None:
    page = crm_page()
    whole = pages_digest(page)
    assert re.fullmatch("[0-9a-f]{64}", whole)
    assert whole == pages_digest(crm_page())
    # The same items over two pages, in the same order, give the same digest; in another
    # order, another one (which only means that the rows are compared).
    first = {"api_key": page["api_key"], "basic_auth": page["basic_auth"]}
    second = {"bearer_token": page["bearer_token"], "oauth": page["oauth"]}
    assert pages_digest(first, second) == whole
    assert pages_digest(second, first) != whole


# Each kept field of each type, changed to another text, or to null (absent).
KEPT_FIELD_CHANGES = [
    (type_name, field, value)
    for type_name in KNOWN_TYPES
    for field in ("allowed_domain", "created_at", "updated_at", *TYPE_FIELDS[type_name])
    for value in (
        "2031-02-03T04:05:06Z" if field in TIMESTAMP_FIELDS else "other.example.com",
        None,
    )
    if value is not None or sample_item(type_name, "x").get(field) is not None
]


@pytest.mark.parametrize(("type_name", "field", "value"), KEPT_FIELD_CHANGES)
def test_any_kept_value_changed_changes_the_digest(
    type_name: str, field: str, value: str | None
) -> None:
    page = crm_page()
    page[type_name][1] = sample_item(type_name, f"crm_{type_name}_1", **{field: value})
    before = parse_page(crm_page(), where="acme/crm", page=1).connections
    after = parse_page(page, where="acme/crm", page=1).connections
    assert before != after  # a change the records see...
    assert pages_digest(page) != pages_digest(crm_page())  # ...the digest sees too


def test_names_types_and_text_moved_between_fields_change_the_digest() -> None:
    base = pages_digest(crm_page())
    renamed = crm_page()
    renamed["oauth"][0]["name"] = "crm_oauth_9"
    retyped = crm_page()
    retyped["bearer_token"].append(retyped["api_key"].pop())
    moved_from, moved_to = crm_page(), crm_page()  # "ab" + "c" against "a" + "bc"
    moved_from["basic_auth"][0].update(allowed_domain="ab", created_at=None, updated_at=None)
    moved_from["basic_auth"][0].update(username="c")
    moved_to["basic_auth"][0].update(allowed_domain="a", created_at=None, updated_at=None)
    moved_to["basic_auth"][0].update(username="bc")
    digests = {pages_digest(p) for p in (renamed, retyped, moved_from, moved_to)}
    assert len(digests | {base}) == 5


def test_secrets_other_fields_and_null_or_empty_leave_the_digest_alone() -> None:
    """The digest is made of kept metadata only: no secret reaches it, and two items that
    give the same record give the same digest."""
    page = crm_page()
    for type_name, items in page.items():
        for item in items:
            for secret in SECRET_FIELDS[type_name]:
                item[secret] = "another secret"
            item["zendesk_account_id"] = 999
    page["api_key"][0]["allowed_domain"] = ""  # empty and absent are both no value
    plain = crm_page()
    del plain["api_key"][0]["allowed_domain"]
    assert pages_digest(page) == pages_digest(plain)
    assert SENTINEL not in repr(parse_page(page, where="acme/crm", page=1))


def page_row_hashes(page: dict[str, Any]) -> dict[tuple[str, str], bytes]:
    records = parse_page(page, where="acme/crm", page=1).connections
    return {r.key: h for r, h in zip(records, row_hashes(records), strict=True)}


@pytest.mark.parametrize(("type_name", "field", "value"), KEPT_FIELD_CHANGES)
def test_any_kept_value_changed_changes_that_rows_hash_only(
    type_name: str, field: str, value: str | None
) -> None:
    page = crm_page()
    page[type_name][1] = sample_item(type_name, f"crm_{type_name}_1", **{field: value})
    before, after = page_row_hashes(crm_page()), page_row_hashes(page)
    assert {k for k in before if before[k] != after[k]} == {(type_name, f"crm_{type_name}_1")}
    assert {len(h) for h in after.values()} == {16}


def test_text_moved_between_fields_changes_the_row_hash_and_empty_or_secrets_do_not() -> None:
    moved_from, moved_to = crm_page(), crm_page()  # "ab" + "c" against "a" + "bc"
    moved_from["basic_auth"][0].update(allowed_domain="ab", created_at=None, updated_at=None)
    moved_from["basic_auth"][0].update(username="c")
    moved_to["basic_auth"][0].update(allowed_domain="a", created_at=None, updated_at=None)
    moved_to["basic_auth"][0].update(username="bc")
    key = ("basic_auth", "crm_basic_auth_0")
    assert page_row_hashes(moved_from)[key] != page_row_hashes(moved_to)[key]
    page = crm_page()
    for type_name, items in page.items():
        for item in items:
            for secret in SECRET_FIELDS[type_name]:
                item[secret] = "another secret"
    page["api_key"][0]["allowed_domain"] = ""
    plain = crm_page()
    del plain["api_key"][0]["allowed_domain"]
    assert page_row_hashes(page) == page_row_hashes(plain)
    # The same record under another key is another row.
    renamed = crm_page()
    renamed["oauth"][0]["name"] = "crm_oauth_9"
    assert (
        page_row_hashes(renamed)[("oauth", "crm_oauth_9")]
        != page_row_hashes(crm_page())[("oauth", "crm_oauth_0")]
    )


def test_row_hashes_are_the_same_in_any_process() -> None:
    """Stored by one sync and compared by another: no per-process salt (``hash()``)."""
    code = (
        "from inventory.records import parse_item, row_hashes; from inventory.testing import "
        "sample_item; print(row_hashes([parse_item(t, sample_item(t, 'k')) for t in "
        "('api_key', 'oauth')])[1].hex())"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }  # fmt: skip
    here = row_hashes([parse_item("oauth", sample_item("oauth", "k"))])[0].hex()
    assert seen == {here}


def test_the_record_the_allow_list_and_the_columns_come_from_one_field_spec() -> None:
    """fields.FIELDS is the one spec: the Connection's fields, each type's kept fields and
    the metadata columns of connections and connection_versions all follow it."""
    assert Connection._fields == RECORD_FIELDS == ("type", "name", *fields.METADATA_FIELDS)
    for type_name in KNOWN_TYPES:
        assert fields.kept_fields(type_name) == tuple(
            f.name for f in fields.FIELDS if not f.types or type_name in f.types
        )
    assert fields.kept_fields("a_new_type") == COMMON_FIELDS
    for model in (m.Connection, m.ConnectionVersion):
        table = model.__table__
        columns = [c.name for c in table.columns if c.name in RECORD_FIELDS]
        assert tuple(columns) == RECORD_FIELDS
        stamps = {c.name for c in table.columns if isinstance(c.type, m.UTCDateTime)}
        assert stamps & set(RECORD_FIELDS) == TIMESTAMP_FIELDS


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))])))
def test_timestamps_are_written_the_same_by_the_short_path(value: datetime) -> None:
    """format_timestamp's and sqlite_value's isoformat path (UTC values) writes what their
    general path writes: strftime's RFC 3339 text, and SQLAlchemy's stored SQLite text."""
    utc = value.astimezone(UTC)
    general = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    assert format_timestamp(value) == general
    assert format_timestamp(utc) == general
    stored = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert sqlite_value(value) == sqlite_value(utc) == stored
