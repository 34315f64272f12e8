"""zis.py against httpx.MockTransport: pagination, retries, rate limits, error messages."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from inventory import __version__
from inventory.config import Account, Integration, SyncSettings
from inventory.errors import ApiError, PaginationError, ResponseError
from inventory.pages import Paginator
from inventory.secret import Secret
from inventory.zis import AccountGate, ZisClient, parse_retry_after, tls_context

TOKEN = "ZIS-SENTINEL-SECRET-token-abc"
INTEGRATION = Integration("acme", "billing", Secret(TOKEN))
ACCOUNT = Account("acme", "https://acme.zendesk.com", (INTEGRATION,))


def client(
    handler: Callable[[httpx.Request], httpx.Response], **settings: Any
) -> tuple[ZisClient, list[float]]:
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # a clock that moves only when the client sleeps
        sleeps.append(seconds)
        now[0] += seconds

    opts = {"retry_backoff_seconds": 0.5, "max_retries": 3, **settings}
    zc = ZisClient(
        ACCOUNT.base_url,
        ACCOUNT.subdomain,
        SyncSettings(**opts),
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: now[0],
    )
    return zc, sleeps


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON response as a server sends it: escaped ASCII, so it may carry any string,
    an unpaired surrogate included."""
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def page(items: list[str], after: str | None, has_more: bool) -> httpx.Response:
    body = {
        "api_key": [{"name": n} for n in items],
        "meta": {"after": after, "before": None, "has_more": has_more},
    }
    return httpx.Response(200, json=body)


def names(zc: ZisClient) -> list[list[str]]:
    return [
        [i["name"] for i in p.body["api_key"]]
        for p in zc.pages(INTEGRATION.name, INTEGRATION.token)
    ]


def test_pages_follow_opaque_cursors_and_stop_on_has_more() -> None:
    seen: list[httpx.Request] = []
    cursor = "a+b/c=="

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "page[after]" not in request.url.params:
            return page(["one", "two"], cursor, True)
        assert request.url.params["page[after]"] == cursor
        return page(["three"], "still-set-on-the-last-page", False)

    zc, _ = client(handler, page_size=2)
    assert names(zc) == [["one", "two"], ["three"]]
    assert [str(r.url) for r in seen] == [
        "https://acme.zendesk.com/api/services/zis/integrations/billing/connections/all?page%5Bsize%5D=2",
        "https://acme.zendesk.com/api/services/zis/integrations/billing/connections/all"
        "?page%5Bsize%5D=2&page%5Bafter%5D=a%2Bb%2Fc%3D%3D",
    ]
    first = seen[0].headers
    assert first["user-agent"] == f"zis-inventory/{__version__}"
    assert first["accept"] == "application/json"
    assert first["authorization"] == f"Bearer {TOKEN}"
    assert "gzip" in first["accept-encoding"]


def test_a_repeated_cursor_is_a_loop() -> None:
    zc, _ = client(lambda r: page(["x"], "same", True))
    with pytest.raises(
        PaginationError, match=r"^acme/billing: page 2: pagination loop: cursor seen twice$"
    ):
        names(zc)


def test_page_cap() -> None:
    counter = iter(range(100))
    zc, _ = client(lambda r: page(["x"], f"c{next(counter)}", True), max_pages=3)
    with pytest.raises(PaginationError, match=r"more than sync.max_pages \(3\) pages"):
        names(zc)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"api_key": []}, "acme/billing: page 1: response has no 'meta' object"),
        (
            {"meta": {"has_more": "yes"}},
            "acme/billing: page 1: meta.has_more must be true or false",
        ),
        (
            {"meta": {"has_more": True, "after": None}},
            "acme/billing: page 1: meta.has_more is true but meta.after is missing or not a string",
        ),
        (
            {"meta": {"has_more": True, "after": "ab\ud800"}},
            "acme/billing: page 1: meta.after holds an unpaired surrogate, which no URL can carry",
        ),
    ],
)
def test_bad_meta_fails(body: dict[str, Any], message: str) -> None:
    zc, _ = client(lambda r: json_response(200, body))
    with pytest.raises(ResponseError) as caught:
        names(zc)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("status", "body", "headers", "message"),
    [
        (
            401,
            {"errors": [{"code": "InvalidCredentials", "title": "Token length is invalid"}]},
            {},
            "acme/billing: page 1: HTTP 401 InvalidCredentials: Token length is invalid",
        ),
        (
            403,
            {
                "errors": [
                    {
                        "code": "Forbidden",
                        "title": "Cannot access this resource. Missing scope read",
                    }
                ]
            },
            {},
            "acme/billing: page 1: HTTP 403 Forbidden: Cannot access this resource. Missing scope read",
        ),
        (
            404,
            {"errors": [{"code": "1010", "detail": "no such integration", "status": "404"}]},
            {},
            "acme/billing: page 1: HTTP 404 1010: no such integration",
        ),
        (
            400,
            {"error": "InvalidParameter", "description": "page[size]"},
            {},
            "acme/billing: page 1: HTTP 400 InvalidParameter: page[size]",
        ),
        (
            401,
            None,
            {"content-type": "text/plain"},
            "acme/billing: page 1: HTTP 401: Couldn't authenticate you",
        ),
        (
            404,
            "<html><body>" + "x" * 5000 + "</body></html>",
            {"content-type": "text/html"},
            "acme/billing: page 1: HTTP 404: (HTML body)",
        ),
        (
            302,
            None,
            {"location": "https://evil.example.com/"},
            "acme/billing: page 1: HTTP 302: redirect not followed (the token is never sent to another location)",
        ),
        (  # an unpaired surrogate or a NUL in the API's words never reaches a message
            403,
            {"errors": [{"code": "Forbidden\u0000", "title": "no \ud800 scope"}]},
            {},
            "acme/billing: page 1: HTTP 403 Forbidden: no scope",
        ),
    ],
)
def test_final_statuses_are_not_retried(
    status: int, body: Any, headers: dict[str, str], message: str
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if isinstance(body, dict):
            return json_response(status, body, headers)
        return httpx.Response(status, text=body or "Couldn't authenticate you", headers=headers)

    zc, sleeps = client(handler)
    with pytest.raises(ApiError) as caught:
        names(zc)
    assert str(caught.value) == message
    assert caught.value.status == status
    assert len(calls) == 1 and sleeps == []


def test_a_token_echoed_by_the_server_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, json={"errors": [{"code": "Bad", "title": f"token {TOKEN} unknown"}]}
        )

    zc, _ = client(handler)
    with pytest.raises(ApiError) as caught:
        names(zc)
    assert str(caught.value) == "acme/billing: page 1: HTTP 401 Bad: token [REDACTED] unknown"


def test_a_token_echoed_where_the_excerpt_is_cut_is_redacted_whole() -> None:
    title = "x" * 110 + f" {TOKEN} unknown"  # the 120-character cut falls inside the token
    zc, _ = client(lambda r: httpx.Response(401, json={"errors": [{"title": title}]}))
    with pytest.raises(ApiError) as caught:
        names(zc)
    shown = ("x" * 110 + " [REDACTED] unknown")[:120] + "..."
    assert str(caught.value) == f"acme/billing: page 1: HTTP 401: {shown}"
    assert TOKEN[:8] not in str(caught.value)


def test_5xx_and_transport_errors_are_retried_with_backoff() -> None:
    answers: list[Any] = [
        httpx.Response(500, text="oops"),
        httpx.ConnectError("refused"),
        httpx.Response(503, text="busy"),
        page(["ok"], "c", False),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    zc, sleeps = client(handler)
    assert names(zc) == [["ok"]]
    # backoff 0.5 * 2**n with equal jitter: [0.25, 0.5], [0.5, 1], [1, 2]
    assert len(sleeps) == 3
    for n, slept in enumerate(sleeps):
        assert 0.5 * 2**n / 2 <= slept <= 0.5 * 2**n


def test_retries_run_out() -> None:
    zc, sleeps = client(lambda r: httpx.Response(502, text="bad gateway"), max_retries=2)
    with pytest.raises(
        ApiError, match=r"^acme/billing: page 1: gave up after 3 attempts: HTTP 502$"
    ):
        names(zc)
    assert len(sleeps) == 2


def test_429_waits_retry_after_and_pauses_the_account() -> None:
    answers = [
        httpx.Response(
            429,
            text="<html>Rate limit exceeded</html>",
            headers={"Retry-After": "7", "content-type": "text/html"},
        ),
        page(["ok"], None, False),
    ]
    zc, sleeps = client(lambda r: answers.pop(0))
    assert names(zc) == [["ok"]]
    assert sleeps == [7.0]
    assert zc.rate_limited == 1 and zc.requests == 2


def test_retry_after_longer_than_allowed_fails_at_once() -> None:
    zc, sleeps = client(
        lambda r: httpx.Response(429, headers={"Retry-After": "3600"}), max_retry_wait_seconds=60
    )
    with pytest.raises(
        ApiError,
        match=r"the server asks to wait 3600s, more than sync.max_retry_wait_seconds \(60\)",
    ):
        names(zc)
    assert sleeps == []


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_gate_pauses_every_caller_until_the_deadline() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    gate = AccountGate(sleep, clock=lambda: clock[0])
    gate.wait()
    assert slept == []
    gate.pause(10)
    gate.pause(4)  # a shorter pause never shortens the longer one
    gate.wait()
    assert slept == [10.0]
    gate.wait()
    assert slept == [10.0]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(200, text="{not json"),
            "acme/billing: page 1: response is not valid JSON (text/plain, 9 bytes)",
        ),
        (httpx.Response(200, json=[1, 2]), "acme/billing: page 1: response is not a JSON object"),
        (
            httpx.Response(
                200, text="<html>maintenance</html>", headers={"content-type": "text/html"}
            ),
            "acme/billing: page 1: response is not valid JSON (text/html, 24 bytes)",
        ),
        (
            httpx.Response(
                200,
                stream=httpx.ByteStream(b"not gzip at all"),
                headers={"content-encoding": "gzip"},
            ),
            "acme/billing: page 1: the response body could not be decoded (bad Content-Encoding)",
        ),
    ],
)
def test_malformed_bodies_fail_without_retry(response: httpx.Response, message: str) -> None:
    zc, sleeps = client(lambda r: response)
    with pytest.raises(ResponseError) as caught:
        names(zc)
    assert str(caught.value) == message and sleeps == []


def test_response_size_cap() -> None:
    big = json.dumps({"api_key": [{"name": "x" * 100}] * 100, "meta": {"has_more": False}})
    zc, _ = client(lambda r: httpx.Response(200, text=big), max_response_bytes=4096)
    with pytest.raises(ResponseError, match=r"exceeds sync.max_response_bytes \(4096\)"):
        names(zc)


def test_paginator_alone() -> None:
    p = Paginator(max_pages=10, where="a/b")
    p.advance({"meta": {"after": "x", "has_more": True}})
    assert (p.page, p.cursor, p.done) == (1, "x", False)
    p.advance({"meta": {"after": "x", "has_more": False}})
    assert (p.page, p.done) == (2, True)


def test_quota_headers_pause_the_account_before_the_window_is_spent() -> None:
    answers = [
        httpx.Response(200, json={"meta": {"after": "a", "has_more": True}},
                       headers={"ratelimit-remaining": "5", "ratelimit-reset": "9"}),
        httpx.Response(200, json={"meta": {"after": "b", "has_more": True}},
                       headers={"ratelimit-remaining": "3", "ratelimit-reset": "7"}),
        httpx.Response(200, json={"meta": {"after": "c", "has_more": False}},
                       headers={"X-Rate-Limit-Remaining": "2"}),
    ]  # fmt: skip
    zc, sleeps = client(lambda r: answers.pop(0), concurrency=3)
    assert len(list(zc.pages(INTEGRATION.name, INTEGRATION.token))) == 3
    assert sleeps == [7.0]  # 3 left <= 3 that may be in flight: wait for the reset
    assert zc.gate.quota_headers and not zc.gate.single_flight


def test_a_429_without_quota_headers_turns_the_account_to_one_request_at_a_time() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "2"}), page(["x"], None, False)]
    zc, sleeps = client(lambda r: answers.pop(0))
    assert names(zc) == [["x"]]
    assert sleeps == [2.0] and zc.gate.single_flight


def test_the_tls_context_is_made_once_per_ca_file_until_the_file_changes(tmp_path: Path) -> None:
    assert tls_context(None) is tls_context(None)
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    first = tls_context(str(bundle))
    assert tls_context(str(bundle)) is first
    bundle.write_text(bundle.read_text() + "\n")  # edited: loaded again
    second = tls_context(str(bundle))
    assert second is not first
    assert second.verify_mode == ssl.CERT_REQUIRED and second.check_hostname
    bundle.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        tls_context(str(bundle))


def test_a_body_that_trickles_fails_at_the_deadline_and_is_retried() -> None:
    clock = [0.0]

    def trickle() -> Iterator[bytes]:
        for _ in range(100):
            clock[0] += 0.4  # each chunk comes 0.4 s after the one before
            yield b" "

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, stream=Trickle(trickle()))

    zc, sleeps = client(handler, timeout_seconds=1.0, max_retries=2)
    zc._clock = lambda: clock[0]
    with pytest.raises(ApiError) as caught:
        names(zc)
    assert str(caught.value) == (
        "acme/billing: page 1: gave up after 3 attempts: "
        "no complete response within sync.timeout_seconds (1s)"
    )
    assert len(calls) == 3 and len(sleeps) == 2


class Trickle(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks
