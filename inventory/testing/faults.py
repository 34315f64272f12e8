"""Answers the fake server gives instead of a normal page: a status, a loop, a slow or
dripping body, a reset connection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Fault:
    """An answer the server gives instead of a normal page, ``times`` times."""

    kind: str  # status | loop | slow | drip | reset
    times: int = 1
    page: int | None = None  # only on this page number (1-based); None = any
    status: int = 500
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


RATE_LIMIT_PAGE = b"<html><body><h1>Rate limit exceeded</h1></body></html>"


def error_body(status: int, code: str, title: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"errors": [{"code": code, "title": title}]}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8"}, body


def rate_limited(retry_after: str = "1", times: int = 1, page: int | None = None) -> Fault:
    """A 429 with an HTML body, as Zendesk sends it."""
    return Fault(
        "status",
        times=times,
        page=page,
        status=429,
        body=RATE_LIMIT_PAGE,
        content_type="text/html",
        headers={"Retry-After": retry_after},
    )


def server_error(status: int = 503, times: int = 1, page: int | None = None) -> Fault:
    return Fault(
        "status",
        times=times,
        page=page,
        status=status,
        body=b"upstream unavailable",
        content_type="text/plain",
    )


def malformed(page: int | None = None, times: int = 1) -> Fault:
    return Fault("status", times=times, page=page, status=200, body=b'{"api_key": [{"name": "trunc')


def pagination_loop(page: int | None = None) -> Fault:
    return Fault("loop", times=1_000_000, page=page)
