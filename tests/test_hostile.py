"""A hostile server: each answer fails the snapshot with a clear error, changes nothing
else, and the process exits 1 without a traceback (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from inventory.testing import Fault, rate_limited

from .helpers import Harness, dump_database, failed_error, seed

BIG = 50 * 1024 * 1024
PAST = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)

CORPUS = {
    "truncated json": (
        Fault("status", status=200, body=b'{"api_key": [{"name": "tr'),
        r"page 2: response is not valid JSON \(application/json, 25 bytes\)",
    ),
    "an array, not an object": (
        Fault("status", status=200, body=b"[1, 2, 3]"),
        r"page 2: response is not a JSON object",
    ),
    "has_more without a cursor": (
        Fault(
            "status",
            status=200,
            body=json.dumps({"api_key": [], "meta": {"has_more": True}}).encode(),
        ),
        r"page 2: meta.has_more is true but meta.after is missing or not a string",
    ),
    "200 with an HTML body": (
        Fault(
            "status",
            status=200,
            body=b"<html><body>Maintenance</body></html>",
            content_type="text/html",
        ),
        r"page 2: response is not valid JSON \(text/html, 37 bytes\)",
    ),
    "gzip garbage": (
        Fault(
            "status",
            status=200,
            body=b"\x1f\x8bnot really gzip",
            headers={"Content-Encoding": "gzip"},
        ),
        r"page 2: the response body could not be decoded \(bad Content-Encoding\)",
    ),
    "a 50 MB body": (
        Fault("status", status=200, body=b" " * BIG),
        rf"page 2: response of {BIG} bytes exceeds sync.max_response_bytes \(16777216\)",
    ),
    "slow drip": (
        Fault("drip", delay=1.5),
        r"page 2: gave up after 2 attempts: "
        r"no complete response within sync.timeout_seconds \(1s\)",
    ),
    "connection reset mid-body": (
        Fault("reset"),
        r"page 2: gave up after 2 attempts: transport error: (RemoteProtocolError|ReadError)",
    ),
    "redirect to another host": (
        Fault("status", status=302, headers={"Location": "http://attacker.invalid/steal"}),
        r"page 2: HTTP 302: redirect not followed \(the token is never sent to another location\)",
    ),
    "negative Retry-After": (
        rate_limited("-5"),
        r"page 2: gave up after 2 attempts: HTTP 429 rate limited",
    ),
    "huge Retry-After": (
        rate_limited("99999999"),
        r"page 2: HTTP 429 rate limited; the server asks to wait 99999999s, "
        r"more than sync.max_retry_wait_seconds \(5\)",
    ),
    "Retry-After date in the past": (
        rate_limited(PAST),
        r"page 2: gave up after 2 attempts: HTTP 429 rate limited",
    ),
}


def inventory_tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    tables = dump_database(url)
    return {
        name: sorted(map(repr, tables[name]))
        for name in ("connections", "connection_versions", "connection_changes")
    }  # type: ignore[misc]


@pytest.mark.parametrize("case", list(CORPUS))
def test_hostile_answers_fail_cleanly(cli: Harness, case: str) -> None:
    fault, message = CORPUS[case]
    seed(
        cli,
        {"acme": {"billing": 2}},
        extra_sync="page_size = 3\nmax_retries = 1\ntimeout_seconds = 1",
    )
    assert cli.run("sync").code == 0
    cli.zis.delete(
        "acme", "billing", "api_key", "billing_api_key_0"
    )  # a removal that must not land
    before = inventory_tables(cli.db_url)
    fault.page, fault.times = 2, 50
    cli.zis.fail("acme", "billing", fault)
    result = cli.run("sync")
    assert result.code == 1
    assert "Traceback" not in result.err
    ((integration, status, error),) = failed_error(cli)
    assert (integration, status) == ("billing", "failed")
    assert re.fullmatch(r"acme/billing: " + message, error), error
    assert f"failed: {error}" in result.out
    assert inventory_tables(cli.db_url) == before
