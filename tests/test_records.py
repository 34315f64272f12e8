"""records.py: the allow-list, timestamps, and per-item errors."""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inventory import __version__, records
from inventory.errors import RecordError, ResponseError
from inventory.records import (
    COMMON_FIELDS,
    KNOWN_TYPES,
    TIMESTAMP_FIELDS,
    TYPE_FIELDS,
    Connection,
    FetchedDigest,
    Settled,
    SharedValues,
    format_timestamp,
    parse_item,
    parse_page,
    parse_timestamp,
)
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


def test_values_repeated_across_pages_are_held_once() -> None:
    shared = SharedValues()
    stamp = "2025-03-01T10:00:00.52Z"
    pages = [
        parse_page(
            {
                "api_key": [
                    sample_item("api_key", f"p{p}_{i}", created_at=stamp, updated_at=stamp)
                    for i in range(3)
                ],
                "meta": {"has_more": False},
            },
            where="acme/billing",
            page=p,
            shared=shared,
        ).connections
        for p in (1, 2)
    ]
    records = pages[0] + pages[1]
    assert [r.name for r in records] == ["p1_0", "p1_1", "p1_2", "p2_0", "p2_1", "p2_2"]
    assert {r.header_name for r in records} == {"x-api-key"}
    assert len({id(r.header_name) for r in records}) == 1  # one object for six connections
    for r in records:  # updated_at equal to created_at: parsed once, one object
        assert r.updated_at is r.created_at
        assert r.created_at == datetime(2025, 3, 1, 10, 0, 0, 520000, tzinfo=UTC)
    assert len({id(r.allowed_domain) for r in records}) == 6
    # Each field keeps at most LIMIT values: a field whose values never repeat stops
    # growing, and the values are still right.
    many = [
        parse_item("api_key", sample_item("api_key", f"n{i}"), shared=shared)
        for i in range(SharedValues.LIMIT + 10)
    ]
    assert len(shared.texts["allowed_domain"]) == SharedValues.LIMIT
    assert many[-1].allowed_domain == f"n{SharedValues.LIMIT + 9}.example.com"


def pages_digest(*bodies: dict[str, Any]) -> str:
    return pages_fetched_digest(*bodies).hexdigest()


def pages_fetched_digest(*bodies: dict[str, Any]) -> records.FetchedDigest:
    digest = FetchedDigest()
    for number, body in enumerate(bodies, 1):
        parse_page(body, where="acme/crm", page=number, digest=digest)
    return digest


def crm_page() -> dict[str, Any]:
    return {t: [sample_item(t, f"crm_{t}_{i}") for i in range(2)] for t in KNOWN_TYPES}


def test_the_digest_of_the_same_pages_is_the_same_and_parsing_is_unchanged() -> None:
    page = crm_page()
    digest = FetchedDigest()
    with_digest = parse_page(page, where="acme/crm", page=1, digest=digest)
    assert with_digest == parse_page(page, where="acme/crm", page=1)
    assert digest.hexdigest() == pages_digest(crm_page()) == pages_digest(crm_page())
    # The same items over two pages, in the same order, give the same digest; in another
    # order, another one (which only means that the rows are compared).
    first = {"api_key": page["api_key"], "basic_auth": page["basic_auth"]}
    second = {"bearer_token": page["bearer_token"], "oauth": page["oauth"]}
    assert pages_digest(first, second) == digest.hexdigest()
    assert pages_digest(second, first) != digest.hexdigest()


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
    assert pages_fetched_digest(page).kept() == pages_fetched_digest(plain).kept()


def test_the_digest_changes_with_the_parsing_code() -> None:
    """Its header names this version and the text of records.py, so that the first
    snapshot after any change to parsing compares rows instead of trusting old digests."""
    code = hashlib.sha256(Path(records.__file__).read_bytes()).hexdigest()
    header = hashlib.sha256(
        "\x00".join(
            (
                "zis-inventory fetched set 2",
                f"{__version__} {code}",
                repr(COMMON_FIELDS),
                repr(sorted(TYPE_FIELDS.items())),
                "",
            )
        ).encode()
    )
    assert FetchedDigest().hexdigest() == header.hexdigest()
    # The whole set's digest is taken over the chunks' digests after the header, and the
    # chunks' digests are kept after the header's: read back under another header (other
    # parsing code), they are not used.
    digest = FetchedDigest()
    item = {"name": "b1", "allowed_domain": "x.com", "token": SENTINEL}
    parse_page({"bearer_token": [item]}, where="acme/crm", page=1, digest=digest)
    chunk = hashlib.sha256(b"bearer_token\x00b1\x00x.com\x00\x00\x00").digest()
    assert digest.chunks() == [chunk]
    whole = header.copy()
    whole.update(chunk)
    assert digest.hexdigest() == whole.hexdigest()
    assert digest.kept() == header.digest() + chunk
    assert records.chunk_set(digest.kept()) == {chunk}
    other = hashlib.sha256(b"another header").digest()
    for kept in (other + chunk, digest.kept()[:-1], b""):
        assert records.chunk_set(kept) is None


def api_keys(names: list[str]) -> list[dict[str, Any]]:
    return [sample_item("api_key", name) for name in names]


def chunked(*pages: list[dict[str, Any]]) -> records.FetchedDigest:
    digest = FetchedDigest()
    for number, items in enumerate(pages, 1):
        parse_page({"api_key": items}, where="acme/crm", page=number, digest=digest)
    return digest


NAMES = [f"crm_key_{i:03d}" for i in range(60)]
# The items whose names start a chunk, by the rule parse_page applies.
STARTS = [i for i, n in enumerate(NAMES) if not zlib.crc32(n.encode()) & records.CHUNK_MASK]


def test_chunks_are_cut_where_names_say_whatever_the_pages() -> None:
    assert 5 <= len(STARTS) <= 15 and STARTS[0] != 0  # the test's names cut in between
    whole = chunked(api_keys(NAMES))
    assert whole.starts == [0, *STARTS]
    assert len(whole.chunks()) == len(STARTS) + 1 and whole.count == 60
    for size in (1, 7, STARTS[0], STARTS[0] + 1):
        split = chunked(*(api_keys(NAMES[i : i + size]) for i in range(0, 60, size)))
        assert (split.starts, split.chunks(), split.hexdigest()) == (
            whole.starts,
            whole.chunks(),
            whole.hexdigest(),
        )
    empty = FetchedDigest()
    parse_page({"api_key": []}, where="acme/crm", page=1, digest=empty)
    assert (empty.starts, empty.chunks(), empty.count) == ([], [], 0)


def test_a_change_to_one_item_changes_the_chunk_it_is_in_and_no_other() -> None:
    before = chunked(api_keys(NAMES)).chunks()
    inside = STARTS[2] + 1  # in the chunk STARTS[2] begins (the fourth), not starting one
    assert inside not in STARTS
    modified = api_keys(NAMES)
    modified[inside] = sample_item("api_key", NAMES[inside], allowed_domain="other.example")
    removed = api_keys(NAMES[:inside] + NAMES[inside + 1 :])
    added = api_keys([*NAMES[:inside], "crm_key_new", *NAMES[inside:]])
    assert zlib.crc32(b"crm_key_new") & records.CHUNK_MASK  # it starts no chunk
    for items in (modified, removed, added):
        after = chunked(items).chunks()
        assert len(after) == len(before)
        assert [n for n, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [3]


def skipping(
    known: frozenset[bytes], *pages: dict[str, Any]
) -> tuple[FetchedDigest, list[Settled]]:
    """Parsing that skips the ``known`` chunks, over ``pages``: the digest and what it settled."""
    digest, settled, shared = FetchedDigest(known), [], SharedValues()
    for number, body in enumerate(pages, 1):
        page = parse_page(body, where="acme/crm", page=number, shared=shared, digest=digest)
        assert page.connections == []
        settled += page.settled
    return digest, settled + digest.finish("acme/crm", shared)


def mixed_page(names: list[str], **changed: str) -> dict[str, Any]:
    """Items of every type by turns, the named ones with another allowed_domain."""
    page: dict[str, Any] = {t: [] for t in KNOWN_TYPES}
    for i, name in enumerate(names):
        t = KNOWN_TYPES[i % 4]
        domain = {"allowed_domain": changed[name]} if name in changed else {}
        page[t].append(sample_item(t, name, **domain))
    return page


def test_parsing_that_skips_known_chunks_makes_records_of_the_others_only() -> None:
    """With the chunk digests of earlier pages, parsing gives every item in page order
    with a record only where its chunk is not among them, and the same digests as parsing
    every item; over any pages and whichever items changed."""
    known = frozenset(pages_fetched_digest(mixed_page(NAMES)).chunks())
    changed = {NAMES[21]: "other.example", NAMES[-1]: "last.example"}
    one_page = [mixed_page(NAMES, **changed)]
    two_pages = [mixed_page(NAMES[:7], **changed), mixed_page(NAMES[7:], **changed)]
    skipped = []
    for pages in (one_page, two_pages):
        full = pages_fetched_digest(*pages)
        digest, settled = skipping(known, *pages)
        assert (digest.hexdigest(), digest.kept(), digest.count) == (
            full.hexdigest(),
            full.kept(),
            60,
        )
        # Each item in page order, with its page, its record when its chunk is new.
        listed = [
            (number, connection)
            for number, body in enumerate(pages, 1)
            for connection in parse_page(body, where="acme/crm", page=number).connections
        ]
        starts, chunks = [*full.starts, 60], full.chunks()
        new = {
            i for c, chunk in enumerate(chunks) if chunk not in known
            for i in range(starts[c], starts[c + 1])
        }  # fmt: skip
        assert settled == [
            Settled(c.type, c.name, number, c if i in new else None)
            for i, (number, c) in enumerate(listed)
        ]
        skipped.append(60 - len(new))
    # On one page as before, only the chunks of the two changed items are parsed.
    assert 40 <= skipped[0] < 60 and skipped[0] > skipped[1]
    # Knowing nothing, every item is parsed; knowing every chunk, none is.
    assert all(s.connection is not None for s in skipping(frozenset(), *one_page)[1])
    everything = frozenset(pages_fetched_digest(*one_page).chunks())
    assert all(s.connection is None for s in skipping(everything, *one_page)[1])


def test_parsing_that_skips_known_chunks_says_what_is_wrong_as_parsing_every_item_does() -> None:
    known = frozenset(pages_fetched_digest(mixed_page(NAMES)).chunks())
    not_a_name = mixed_page(NAMES)
    not_a_name["basic_auth"][3]["name"] = 7
    bad_time = mixed_page(NAMES)
    bad_time["oauth"][2]["created_at"] = "yesterday"
    not_text = mixed_page(NAMES)
    not_text["api_key"][5]["header_name"] = ["x"]
    for body in (not_a_name, bad_time, not_text):
        with pytest.raises(RecordError) as every_item:
            parse_page(body, where="acme/crm", page=1)
        with pytest.raises(RecordError) as skipping_known:
            skipping(known, body)
        assert str(skipping_known.value) == str(every_item.value)
