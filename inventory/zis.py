"""The ZIS HTTP client: yields raw pages of one integration (its connections, then its
OAuth clients), with retries and rate-limit pauses.

It never transforms items (records.py does) and never touches the database.
"""

from __future__ import annotations

import json
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from . import __version__
from .errors import (
    ApiError,
    DeadlinePassed,
    Interrupted,
    NoClientsApi,
    ResponseError,
    RetryableError,
)
from .pages import ClientsPage, ClientsPaginator, Page, Paginator
from .progress import NO_PROGRESS, RATE_LIMITED, Progress
from .secret import Credential, Secret

PATH = "/api/services/zis/integrations/{integration}/connections/all"
CLIENTS_PATH = "/api/services/zis/connections/oauth/clients/{integration}"
USER_AGENT = f"zis-inventory/{__version__}"
EXCERPT_LIMIT = 120
_SPACE_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # and unpaired surrogates

Sleep = Callable[[float], Any]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    max_wait: float
    backoff: float

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); backoff with jitter."""
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_wait, self.backoff * (2.0**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class Deadline:
    """One request's deadline, from connect to the last byte of the body.

    httpx's timeouts bound each network operation, not the request: a body that trickles
    a byte at a time never trips them. Each phase of the request (connect, TLS, headers,
    body) starts with its timeouts set to the time left, and the body is checked between
    chunks, so a request that passes its deadline fails there, whatever the server does.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._at = clock() + seconds
        # The request's timeout extension: httpcore reads it as each phase starts.
        self.timeouts: dict[str, float] = dict.fromkeys(
            ("connect", "read", "write", "pool"), seconds
        )

    def left(self) -> float:
        return self._at - self._clock()

    def check(self) -> None:
        """Raise DeadlinePassed when no time is left; else give each timeout what is left."""
        left = self.left()
        if left <= 0:
            raise DeadlinePassed(self.seconds)
        for key in self.timeouts:
            self.timeouts[key] = left

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` extension: called as each phase of the request starts and ends.
        Closing is not a phase to fail: the response is complete, or failing already."""
        if event.endswith(".started") and not event.endswith(("close.started", "closed.started")):
            self.check()


class AccountGate:
    """Pacing shared by every request to one account.

    - A pause, set by a 429's Retry-After, or when the quota headers (``ratelimit-remaining``
      with ``ratelimit-reset``, or ``X-Rate-Limit-Remaining``) say that no more than the
      requests that may be in flight are left in the window: then no 429 comes at all.
    - Without quota headers, the first 429 turns the account to one request at a time, so
      a spent window costs at most one 429 from then on.
    """

    def __init__(
        self, sleep: Sleep, clock: Callable[[], float] = time.monotonic, reserve: int = 1
    ) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._sleep = sleep
        self._clock = clock
        self._reserve = reserve
        self._one_at_a_time = threading.Lock()
        self.quota_headers = False
        self.single_flight = False

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def wait(self) -> None:
        while True:
            with self._lock:
                remaining = self._until - self._clock()
            if remaining <= 0:
                return
            self._sleep(remaining)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold while one request is in flight."""
        if not self.single_flight:
            yield
            return
        with self._one_at_a_time:
            self.wait()
            yield

    def observe(self, headers: httpx.Headers) -> None:
        """Pace from the quota headers of a response, when the server sends them."""
        remaining = _number(
            headers.get("ratelimit-remaining") or headers.get("x-rate-limit-remaining")
        )
        if remaining is None:
            return
        self.quota_headers = True
        if remaining <= self._reserve:
            reset = _number(headers.get("ratelimit-reset"))
            self.pause(reset if reset is not None else 1.0)

    def rate_limited(self, retry_after: float) -> None:
        self.pause(retry_after)
        if not self.quota_headers:
            self.single_flight = True


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The TLS context of the clients: the default CA store, or sync.ca_bundle. Loading a
    CA store takes tens of milliseconds and every run makes new clients, so a context is
    made once per file and reused while the file is unchanged."""
    if ca_bundle is None:
        return _tls_context(None, None)
    try:
        st = os.stat(ca_bundle)
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None  # loading it will say what is wrong
    return _tls_context(ca_bundle, stamp)


@cache
def _tls_context(ca_bundle: str | None, _stamp: tuple[int, int] | None) -> ssl.SSLContext:
    if ca_bundle is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_bundle)


class ClientSettings(Protocol):
    """What a client reads of its settings (``config.SyncSettings`` has each of them)."""

    @property
    def timeout_seconds(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def max_retry_wait_seconds(self) -> float: ...
    @property
    def retry_backoff_seconds(self) -> float: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def ca_bundle(self) -> str | None: ...
    @property
    def page_size(self) -> int: ...
    @property
    def max_pages(self) -> int: ...
    @property
    def max_response_bytes(self) -> int: ...


class ZisClient:
    """One per account: one keep-alive connection pool and one rate-limit gate, shared by
    the worker threads that fetch that account's integrations. ``name`` (the account's
    subdomain) leads every error message."""

    def __init__(
        self,
        base_url: str,
        name: str,
        settings: ClientSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> None:
        self.base_url = base_url
        self.name = name
        self._stop = stop
        self.progress = progress  # told of retries and pauses; sync.fetch tells it of pages
        self.settings = settings
        self.policy = RetryPolicy(
            settings.max_retries, settings.max_retry_wait_seconds, settings.retry_backoff_seconds
        )
        self._sleep = sleep
        self._clock = clock
        self.gate = AccountGate(sleep, clock, reserve=settings.concurrency)
        self._http = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=settings.timeout_seconds,
            verify=tls_context(settings.ca_bundle),
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(
                max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
            ),
        )
        self._counts_lock = threading.Lock()
        self.requests = 0
        self.rate_limited = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pages(self, integration: str, token: Secret) -> Iterator[Page]:
        """Every page of one integration, in order; raises a SnapshotError on any failure."""
        where = f"{self.name}/{integration}"
        paginator = Paginator(self.settings.max_pages, where)
        url = PATH.format(integration=integration)
        while not paginator.done:
            params = {"page[size]": str(self.settings.page_size)}
            if paginator.cursor is not None:
                params["page[after]"] = paginator.cursor
            body = self._get(url, params, Credential(token), where, paginator.page + 1)
            paginator.advance(body)
            yield Page(paginator.page, body)

    def client_pages(self, integration: str, token: Secret) -> Iterator[ClientsPage]:
        """Every page of one integration's OAuth clients, in order, with the same token,
        deadlines, retries, pauses and caps as its connections; NoClientsApi when the
        endpoint answers 404, any other failure a SnapshotError."""
        where = f"{self.name}/{integration}: OAuth clients"
        url = CLIENTS_PATH.format(integration=integration)
        base = urlsplit(self.base_url)
        paginator = ClientsPaginator(
            self.settings.max_pages,
            where,
            path=base.path.rstrip("/") + url,
            netloc=base.netloc,
        )
        while not paginator.done:
            try:
                body = self._get(
                    url, paginator.params, Credential(token), where, paginator.page + 1,
                    lists=True, text_excerpt=False,
                )  # fmt: skip
            except ApiError as exc:
                if exc.status == 404 and paginator.page == 0:
                    raise NoClientsApi(
                        f"{self.name}: this account has no OAuth clients API (HTTP 404 for {url})",
                        status=404,
                        code=exc.code,
                    ) from None
                raise
            paginator.advance(body)
            yield ClientsPage(paginator.page, body)

    def get_json(
        self, url: str, params: dict[str, str], credential: Credential, where: str, page: int
    ) -> dict[str, Any]:
        """One GET of a JSON object with this client's deadline, retries, account pauses,
        size cap and error messages, sent with ``credential`` (the registry's admin)."""
        body: dict[str, Any] = self._get(url, params, credential, where, page)
        return body

    def _get(
        self,
        url: str,
        params: dict[str, str],
        credential: Credential,
        where: str,
        page: int,
        *,
        lists: bool = False,
        text_excerpt: bool = True,
    ) -> Any:
        """A JSON object (or, with ``lists``, an array too) after retries and pauses. An
        error's message quotes its body's error fields, and (``text_excerpt``) the start of
        a body that has none: not for an endpoint whose bodies hold secrets."""
        attempt = 0
        while True:
            self.gate.wait()
            if self._stop is not None and self._stop.is_set():
                raise Interrupted(f"{where}: page {page}: interrupted")
            try:
                with self.gate.slot():
                    return self._request_once(
                        url, params, credential, where, page, lists, text_excerpt
                    )
            except RetryableError as exc:
                if attempt >= self.policy.max_retries:
                    raise ApiError(
                        f"{where}: page {page}: gave up after {attempt + 1} attempts: {exc}"
                    ) from None
                wait = self.policy.delay(attempt, exc.retry_after)
                if wait > self.policy.max_wait:
                    raise ApiError(
                        f"{where}: page {page}: {exc}; the server asks to wait {wait:.0f}s, "
                        f"more than sync.max_retry_wait_seconds ({self.policy.max_wait:g})"
                    ) from None
                reason = (
                    RATE_LIMITED
                    if exc.rate_limited
                    else f"retry {attempt + 1} of {self.policy.max_retries}: {exc}"
                )
                account, _, name = where.partition("/")
                self.progress.waiting(account, name.partition(":")[0], reason, wait)
                if exc.retry_after is not None:
                    self.gate.rate_limited(wait)  # a 429 pauses every request to this account
                    self.gate.wait()
                else:
                    self._sleep(wait)
                attempt += 1

    def _request_once(
        self,
        url: str,
        params: dict[str, str],
        credential: Credential,
        where: str,
        page: int,
        lists: bool = False,
        text_excerpt: bool = True,
    ) -> Any:
        token = credential.value.reveal()
        headers = {"Authorization": f"{credential.scheme} {token}"}
        with self._counts_lock:
            self.requests += 1
        deadline = Deadline(self.settings.timeout_seconds, self._clock)
        extensions = {"timeout": deadline.timeouts, "trace": deadline.trace}
        try:
            request = self._http.build_request(
                "GET", url, params=params, headers=headers, extensions=extensions
            )
            with closing(self._http.send(request, stream=True)) as response:
                status = response.status_code
                self.gate.observe(response.headers)
                # Read whole, so the connection is reused.
                content = self._read(response, where, page, deadline)
                if status == 429:
                    with self._counts_lock:
                        self.rate_limited += 1
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if retry_after is None:
                        retry_after = self.policy.delay(0, None)
                    raise RetryableError(
                        "HTTP 429 rate limited", retry_after=retry_after, rate_limited=True
                    )
                if status >= 500:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise RetryableError(f"HTTP {status}", retry_after=retry_after)
        except httpx.DecodingError:
            raise ResponseError(
                f"{where}: page {page}: the response body could not be decoded "
                "(bad Content-Encoding)"
            ) from None
        except (DeadlinePassed, httpx.TimeoutException):
            # Every httpx timeout is set to the time left, so one that fires is the deadline.
            raise RetryableError(str(DeadlinePassed(deadline.seconds))) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"transport error: {type(exc).__name__}") from None
        if status != 200:
            hidden = [token, *(secret.reveal() for secret in credential.hidden)]
            raise _status_error(
                status, content, response.headers, where, page, hidden, text_excerpt
            )
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):
            raise ResponseError(
                f"{where}: page {page}: response is not valid JSON "
                f"({_content_type(response.headers)}, {len(content)} bytes)"
            ) from None
        if not isinstance(body, dict) and not (lists and isinstance(body, list)):
            expected = "a JSON object or array" if lists else "a JSON object"
            raise ResponseError(f"{where}: page {page}: response is not {expected}")
        return body

    def _read(self, response: httpx.Response, where: str, page: int, deadline: Deadline) -> bytes:
        limit = self.settings.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ResponseError(
                f"{where}: page {page}: response of {declared} bytes exceeds "
                f"sync.max_response_bytes ({limit})"
            )
        chunks = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseError(
                    f"{where}: page {page}: response exceeds sync.max_response_bytes ({limit})"
                )
            chunks.append(chunk)
            deadline.check()  # a body that trickles in never trips a read timeout
        return b"".join(chunks)


def _status_error(
    status: int,
    content: bytes,
    headers: httpx.Headers,
    where: str,
    page: int,
    hidden: list[str],
    text_excerpt: bool = True,
) -> ApiError:
    # Redacted before the excerpt is cut: a cut token would not be found whole.
    code, detail = _error_summary(_redact_bytes(content, hidden), headers, text_excerpt)
    if 300 <= status < 400:
        detail = "redirect not followed (the token is never sent to another location)"
        code = None
    parts = [f"{where}: page {page}: HTTP {status}"]
    if code:
        parts.append(code)
    text = " ".join(parts)
    if detail:
        text += f": {detail}"
    return ApiError(_redact(text, hidden), status=status, code=code)


def _error_summary(
    content: bytes, headers: httpx.Headers, text_excerpt: bool = True
) -> tuple[str | None, str | None]:
    """(code, short detail) from {"errors":[{code,title|detail}]}, {"error":...} or text
    (``text_excerpt``; else only the body's size: a cut or unparsable body of the OAuth
    clients endpoint may hold a client_secret)."""
    ctype = _content_type(headers)
    text = content.decode("utf-8", errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("code")
            detail = first.get("title") or first.get("detail")
            return _excerpt(code), _excerpt(detail)
        error = data.get("error")
        description = data.get("description") or data.get("message")
        if isinstance(error, dict):
            return _excerpt(error.get("code")), _excerpt(error.get("title") or error.get("message"))
        return _excerpt(error), _excerpt(description)
    if "html" in ctype:
        return None, "(HTML body)"
    if not text_excerpt:
        return None, (
            f"({len(content)} bytes that are no JSON error, not shown)" if content else None
        )
    return None, _excerpt(text)


def _excerpt(value: object) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = _SPACE_RE.sub(" ", _CONTROL_RE.sub(" ", str(value))).strip()
    if not text:
        return None
    return text if len(text) <= EXCERPT_LIMIT else text[:EXCERPT_LIMIT] + "..."


def _redact(text: str, hidden: list[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "[REDACTED]") if secret else text
    return text


def _redact_bytes(content: bytes, hidden: list[str]) -> bytes:
    for secret in hidden:
        content = content.replace(secret.encode(), b"[REDACTED]") if secret else content
    return content


def _content_type(headers: httpx.Headers) -> str:
    value = headers.get("Content-Type", "no content type").split(";")[0].strip()
    return _excerpt(value) or "no content type"
