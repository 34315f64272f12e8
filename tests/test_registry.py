"""registry.py against httpx.MockTransport: both admin auth forms, the allow-list,
pagination in its three shapes with loop detection, and the connections client's HTTP
behaviour (no retry of 401/403, retries of 5xx, 429 pausing the account, no redirects)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from inventory import __version__
from inventory.config import AdminCredential, SyncSettings, load_settings
from inventory.errors import ConfigError, RegistryError
from inventory.registry import (
    RegisteredIntegration,
    RegistryPaginator,
    list_integrations,
    parse_integrations,
)
from inventory.secret import Secret
from inventory.testing import SENTINEL, registry_item
from inventory.zis import ZisClient

API_TOKEN = f"{SENTINEL}-admin-api-token"
OAUTH_TOKEN = f"{SENTINEL}-admin-oauth-token"
BASIC = AdminCredential(Secret(API_TOKEN), "secops@acme.example")
OAUTH = AdminCredential(Secret(OAUTH_TOKEN))
URL = "https://acme.zendesk.com/api/services/zis/registry/integrations"


def leaky(name: str, description: str | None = None) -> dict[str, Any]:
    """A registry item with a sentinel in every field that is not on the allow-list."""
    return registry_item(
        name,
        description,
        secret=f"{SENTINEL}-client-secret-{name}",
        jwt_public_key=f"{SENTINEL}-jwt-{name}",
        new_field={"nested": f"{SENTINEL}-unknown-{name}"},
    )


def client(
    handler: Callable[[httpx.Request], httpx.Response],
    base_url: str = "https://acme.zendesk.com",
    **settings: Any,
) -> tuple[ZisClient, list[float]]:
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    opts = {"retry_backoff_seconds": 0.5, "max_retries": 3, **settings}
    zc = ZisClient(
        base_url,
        "acme",
        SyncSettings(**opts),
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: now[0],
    )
    return zc, sleeps


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(body).encode())


def names(zc: ZisClient, admin: AdminCredential = OAUTH) -> list[str]:
    return [i.name for i in list_integrations(zc, admin.header()).integrations]


def test_basic_auth_lists_the_integrations_keeping_name_and_description_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"integrations": [leaky("billing_sync", "Stripe"), leaky("legacy", "")]})

    zc, _ = client(handler)
    listing = list_integrations(zc, BASIC.header())
    assert listing.integrations == (
        RegisteredIntegration("billing_sync", "Stripe"),
        RegisteredIntegration("legacy", None),
    )
    assert listing.pages == 1 and listing.account == "acme"
    assert SENTINEL not in repr(listing)
    assert [str(r.url) for r in seen] == [URL]
    headers = seen[0].headers
    pair = base64.b64encode(f"secops@acme.example/token:{API_TOKEN}".encode()).decode()
    assert headers["authorization"] == f"Basic {pair}"
    assert headers["user-agent"] == f"zis-inventory/{__version__}"
    assert headers["accept"] == "application/json"


def test_oauth_bearer_token() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return ok({"integrations": [leaky("a")]})

    zc, _ = client(handler)
    assert names(zc) == ["a"]
    assert seen == [f"Bearer {OAUTH_TOKEN}"]


def test_pagination_by_meta_cursor() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("page[after]")
        if after is None:
            return ok({"integrations": [leaky("a")], "meta": {"has_more": True, "after": "x+/="}})
        assert after == "x+/="
        return ok({"integrations": [leaky("b")], "meta": {"has_more": False, "after": "still"}})

    zc, _ = client(handler)
    assert names(zc) == ["a", "b"]


def test_pagination_by_next_page_and_links_next() -> None:
    def next_page(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        following = f"{URL}?page={page + 1}" if page < 3 else None
        return ok({"integrations": [leaky(f"p{page}")], "next_page": following})

    zc, _ = client(next_page)
    assert names(zc) == ["p1", "p2", "p3"]

    def links(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("page[after]")
        if after is None:
            return ok(
                {
                    "integrations": [leaky("a")],
                    "meta": {"has_more": True, "after_cursor": "c1"},
                    "links": {"next": f"{URL}?page%5Bafter%5D=c1&page%5Bsize%5D=1"},
                }
            )
        assert request.url.params["page[size]"] == "1"
        return ok({"integrations": [leaky("b")], "meta": {"has_more": False}, "links": {}})

    zc, _ = client(links)
    assert names(zc) == ["a", "b"]


def test_a_link_under_a_base_url_with_a_path_is_followed() -> None:
    base = "http://127.0.0.1:1/acme"

    def handler(request: httpx.Request) -> httpx.Response:
        if "page" not in request.url.params:
            nxt = f"{base}/api/services/zis/registry/integrations?page=2"
            return ok({"integrations": [leaky("a")], "next_page": nxt})
        assert str(request.url) == f"{base}/api/services/zis/registry/integrations?page=2"
        return ok({"integrations": [leaky("b")], "next_page": None})

    zc, _ = client(handler, base_url=base)
    assert names(zc) == ["a", "b"]


@pytest.mark.parametrize(
    "body",
    [
        {"integrations": [], "meta": {"has_more": True, "after": "same"}},
        {"integrations": [], "next_page": f"{URL}?page=2"},
        {"integrations": [], "links": {"next": URL}},
    ],
    ids=["meta", "next_page", "links"],
)
def test_a_pagination_loop_fails(body: dict[str, Any]) -> None:
    zc, _ = client(lambda r: ok(body))
    with pytest.raises(RegistryError, match=r"^acme/registry: page \d: pagination loop"):
        names(zc)


@pytest.mark.parametrize(
    ("link", "message"),
    [
        (
            "https://evil.example/api/services/zis/registry/integrations?page=2",
            "next_page points to another host; not followed",
        ),
        ("https://acme.zendesk.com/api/v2/users?page=2", "next_page leaves the registry's path"),
        (7, "next_page must be a URL or null"),
    ],
)
def test_a_next_page_elsewhere_is_not_followed(link: Any, message: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return ok({"integrations": [], "next_page": link})

    zc, _ = client(handler)
    with pytest.raises(RegistryError, match=f"^acme/registry: page 1: {message}"):
        names(zc)
    assert seen == [URL]


def test_the_page_cap() -> None:
    counter = iter(range(100))
    zc, _ = client(
        lambda r: ok(
            {"integrations": [], "meta": {"has_more": True, "after": f"c{next(counter)}"}}
        ),
        max_pages=3,
    )
    with pytest.raises(RegistryError, match=r"more than sync.max_pages \(3\) pages"):
        names(zc)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            {"errors": [{"code": "1001", "detail": "Couldn't authenticate you", "status": "401"}]},
            "acme/registry: page 1: HTTP 401 1001: Couldn't authenticate you",
        ),
        (
            403,
            {"errors": [{"code": "1003", "detail": "Forbidden", "status": "403"}]},
            "acme/registry: page 1: HTTP 403 1003: Forbidden",
        ),
        (
            302,
            {},
            "acme/registry: page 1: HTTP 302: redirect not followed "
            "(the token is never sent to another location)",
        ),
    ],
)
def test_final_statuses_are_not_retried(status: int, body: Any, message: str) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"Location": "https://evil.example/"} if status == 302 else {}
        return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)

    zc, sleeps = client(handler)
    with pytest.raises(RegistryError) as caught:
        names(zc)
    assert str(caught.value) == message
    assert len(calls) == 1 and sleeps == []


@pytest.mark.parametrize("admin", [BASIC, OAUTH], ids=["basic", "oauth"])
def test_a_credential_echoed_by_the_server_is_redacted(admin: AdminCredential) -> None:
    echoed = f"{admin.token.reveal()} and {admin.credentials().reveal()}"
    body = {"errors": [{"code": "1001", "detail": f"bad {echoed}"}]}
    zc, _ = client(lambda r: httpx.Response(401, content=json.dumps(body).encode()))
    with pytest.raises(RegistryError) as caught:
        names(zc, admin)
    assert str(caught.value) == (
        "acme/registry: page 1: HTTP 401 1001: bad [REDACTED] and [REDACTED]"
    )


def test_5xx_is_retried_and_a_429_pauses_the_account() -> None:
    answers = iter(
        [
            httpx.Response(503, content=b"down"),
            httpx.Response(429, content=b"<html>slow</html>", headers={"Retry-After": "7"}),
            ok({"integrations": [leaky("a")]}),
        ]
    )
    zc, sleeps = client(lambda r: next(answers))
    assert names(zc) == ["a"]
    assert len(sleeps) == 2 and sleeps[1] == 7.0
    assert zc.rate_limited == 1 and zc.requests == 3
    assert zc.gate.single_flight  # the account's connections requests are paced too


def test_retries_run_out() -> None:
    zc, _ = client(lambda r: httpx.Response(500, content=b"oops"), max_retries=2)
    with pytest.raises(
        RegistryError, match=r"^acme/registry: page 1: gave up after 3 attempts: HTTP 500$"
    ):
        names(zc)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "page 1: response has no 'integrations' array"),
        ({"integrations": {"a": 1}}, "page 1: response has no 'integrations' array"),
        ({"integrations": ["a"]}, r"page 1: integrations\[0\]: item must be an object"),
        ({"integrations": [{"description": "x"}]}, "field 'name' must be 1-255 printable"),
        ({"integrations": [{"name": "a\x1b[2J"}]}, "field 'name' must be 1-255 printable"),
        (
            {"integrations": [{"name": "a", "description": 5}]},
            r"integrations\[0\] \(a\): field 'description' must be a string or null",
        ),
        (
            {"integrations": [{"name": "a", "description": "x\x00"}]},
            "field 'description' holds a NUL character",
        ),
        ({"integrations": [{"name": "a"}, {"name": "a"}]}, "integration 'a' appears twice"),
        (
            {"integrations": [], "meta": {"has_more": "no"}},
            "meta.has_more must be true or false",
        ),
        (
            {"integrations": [], "meta": {"has_more": True}},
            "meta.has_more is true but neither links.next nor meta.after",
        ),
    ],
)
def test_malformed_listings_fail(body: dict[str, Any], message: str) -> None:
    zc, _ = client(lambda r: ok(body))
    with pytest.raises(RegistryError, match=message):
        names(zc)


def test_the_allow_list_alone() -> None:
    items = [leaky("a", "first"), {"name": "b", "description": None, "secret": SENTINEL}]
    parsed = parse_integrations({"integrations": items}, where="acme/registry", page=1)
    assert parsed == [RegisteredIntegration("a", "first"), RegisteredIntegration("b", None)]
    assert {f for f in RegisteredIntegration.__dataclass_fields__} == {"name", "description"}


def test_the_paginator_alone() -> None:
    paginator = RegistryPaginator("https://acme.zendesk.com", 10, "acme/registry")
    paginator.advance({"integrations": []})
    assert paginator.done and paginator.page == 1


# --- configuration -------------------------------------------------------------------

CONFIG = """
[[accounts]]
subdomain = "acme"
token_env = "ACME_TOKEN"
integrations = ["billing_sync"]
admin = {admin}
"""


def settings_with(tmp_path: Path, admin: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "inventory.toml"
    path.write_text(CONFIG.replace("{admin}", admin))
    environ = {"ACME_TOKEN": "t", "ADMIN_API": API_TOKEN, "ADMIN_OAUTH": OAUTH_TOKEN}
    return load_settings(str(path), environ=env if env is not None else environ)


def test_both_admin_forms_resolve_to_a_masked_secret(tmp_path: Path) -> None:
    basic = settings_with(tmp_path, '{ email = "secops@acme.example", token_env = "ADMIN_API" }')
    assert basic.accounts[0].admin == BASIC
    oauth = settings_with(tmp_path, '{ oauth_token_env = "ADMIN_OAUTH" }')
    assert oauth.accounts[0].admin == OAUTH
    for settings, admin in ((basic, BASIC), (oauth, OAUTH)):
        assert SENTINEL not in repr(settings)
        assert set(admin.secrets()) <= set(settings.secrets())
    token = tmp_path / "admin.token"
    token.write_text(OAUTH_TOKEN + "\n")
    token.chmod(0o600)
    from_file = settings_with(tmp_path, f'{{ oauth_token_file = "{token}" }}')
    assert from_file.accounts[0].admin == OAUTH


def test_no_admin_is_none(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(CONFIG.replace("admin = {admin}", ""))
    assert load_settings(str(path), environ={"ACME_TOKEN": "t"}).accounts[0].admin is None


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        (
            '{ email = "a@b.example", token = "literal" }',
            "accounts[0].admin.token: a literal secret is not allowed",
        ),
        (
            '{ oauth_token = "literal" }',
            "accounts[0].admin.oauth_token: a literal secret is not allowed",
        ),
        (
            '{ email = "a@b.example", token_env = "ADMIN_API", oauth_token_env = "ADMIN_OAUTH" }',
            "accounts[0].admin: set either email with token_env or token_file",
        ),
        ("{ }", "accounts[0].admin: set either email with token_env or token_file"),
        ('{ token_env = "ADMIN_API" }', "accounts[0].admin.email: required with token_env"),
        ('{ email = "a@b.example" }', "accounts[0].admin: set token_env or token_file"),
        (
            '{ email = "not-an-email", token_env = "ADMIN_API" }',
            "accounts[0].admin.email: must be the admin's email address",
        ),
        (
            '{ oauth_token_env = "ADMIN_OAUTH", oauth_token_file = "/x" }',
            "accounts[0].admin: set oauth_token_env or oauth_token_file, not both",
        ),
        (
            '{ oauth_token_env = "MISSING_VAR" }',
            "accounts[0].admin.oauth_token_env: environment variable MISSING_VAR is not set "
            "or empty; export MISSING_VAR=<an admin's OAuth access token>",
        ),
        (
            '{ email = "a@b.example", token_env = "MISSING_VAR" }',
            "accounts[0].admin.token_env: environment variable MISSING_VAR is not set "
            "or empty; export MISSING_VAR=<an admin's API token>",
        ),
        ('{ oauth_token_env = "x y" }', "accounts[0].admin.oauth_token_env: must be the NAME"),
        ('{ emial = "a@b.example" }', "accounts[0].admin.emial: unknown key"),
    ],
)
def test_admin_configuration_errors_name_the_key(tmp_path: Path, admin: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, admin)
    assert str(caught.value).startswith(f"{tmp_path / 'inventory.toml'}: {message}")
    assert "literal" not in str(caught.value).split(":", 1)[1].replace("a literal secret", "")
