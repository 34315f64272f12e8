"""A fake ZIS server on 127.0.0.1 for tests, the demo and the benchmarks.

It serves GET /{account}/api/services/zis/integrations/{integration}/connections/all
from in-memory accounts as §2 of the spec describes: opaque cursors that stay set on the
last page, per-integration tokens, 401/403/404, 429 with Retry-After and an HTML body,
5xx, latency and malformed bodies. Point an account's base_url at ``server.base_url(acct)``.
It also serves the registry, GET /{account}/api/services/zis/registry/integrations (§14),
to an admin's basic auth (email/token:API_TOKEN) or OAuth bearer token, and each
integration's OAuth clients, GET /{account}/api/services/zis/connections/oauth/clients/
{integration} (§17), in the documented shape: client_id and client_secret in clear.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import RATE_LIMIT_PAGE, Fault, error_body

_PATH_RE = re.compile(
    r"^/(?P<account>[^/]+)/api/services/zis/integrations/(?P<integration>[^/]+)/connections/all$"
)
_REGISTRY_RE = re.compile(r"^/(?P<account>[^/]+)/api/services/zis/registry/integrations$")
_CLIENTS_RE = re.compile(
    r"^/(?P<account>[^/]+)/api/services/zis/connections/oauth/clients/(?P<integration>[^/]+)$"
)
REGISTRY = "(registry)"  # the integration of a registry request in the request log


@dataclass
class FakeRegistry:
    """An account's registry: its items, in order, and the admin credentials it accepts."""

    items: list[dict[str, Any]] = field(default_factory=list)
    basic: tuple[str, str] | None = None  # (email, API token)
    oauth: str | None = None
    forbidden: bool = False  # 403: the credential is not an admin's
    page_size: int | None = None  # None: one response holds everything, as documented
    pagination: str = "meta"  # meta (page[after]) | next_page (?page=N) | links (links.next)
    faults: list[Fault] = field(default_factory=list)

    def accepts(self, authorization: str | None) -> bool:
        allowed = []
        if self.basic is not None:
            pair = f"{self.basic[0]}/token:{self.basic[1]}".encode()
            allowed.append(f"Basic {base64.b64encode(pair).decode()}")
        if self.oauth is not None:
            allowed.append(f"Bearer {self.oauth}")
        return authorization in allowed


@dataclass
class FakeIntegration:
    token: str
    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: bool = False
    faults: list[Fault] = field(default_factory=list)
    extra_top_level: dict[str, Any] = field(default_factory=dict)
    _ordered: list[tuple[str, str]] | None = None  # reset by every change of keys
    # Its OAuth clients, in order; None: the endpoint answers 404 (no clients API).
    clients: list[dict[str, Any]] | None = field(default_factory=list)
    client_faults: list[Fault] = field(default_factory=list)
    clients_shape: str = "object"  # object ({"clients": [...]}) | array (a bare array)
    clients_page_size: int | None = None  # None: one page, no cursors, as documented
    clients_pagination: str = "meta"  # meta (meta.has_more/after) | links (links.next)

    def ordered(self) -> list[tuple[str, str]]:
        """The keys in page order."""
        if self._ordered is None or len(self._ordered) != len(self.items):
            self._ordered = sorted(self.items)
        return self._ordered


@dataclass(frozen=True)
class Request:
    account: str
    integration: str
    path: str
    query: dict[str, list[str]]
    user_agent: str | None
    authorized: bool
    status: int
    at: float = 0.0  # time.monotonic() when it was answered

    @property
    def clients(self) -> bool:
        """A request of the OAuth clients endpoint (not of connections/all)."""
        return "/connections/oauth/clients/" in self.path


def encode_cursor(type_name: str, name: str) -> str:
    # Opaque, and with '+', '/' and '=' in it, so a client that forgets to URL-encode fails.
    raw = f"\xfe{type_name}\x00{name}\x00>>?".encode()
    return base64.b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    raw = base64.b64decode(cursor.encode(), validate=True).decode()
    if not raw.startswith("\xfe") or not raw.endswith("\x00>>?"):
        raise ValueError("bad cursor")
    type_name, name, _ = raw[1:].split("\x00")
    return type_name, name


class FakeZisServer:
    """``with FakeZisServer() as server:`` starts it on a free loopback port."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        max_page_size: int = 100,
        rate_limit: tuple[int, float] | None = None,
        quota_headers: bool = False,
    ) -> None:
        self.latency = latency
        self.max_page_size = max_page_size
        # (requests, seconds): per account, in fixed windows; beyond it, 429 + Retry-After.
        self.rate_limit = rate_limit
        self.quota_headers = quota_headers  # send ratelimit-* and X-Rate-Limit-* headers
        self._window_start = time.monotonic()
        self._window_counts: Counter[tuple[str, int]] = Counter()
        self.accounts: dict[str, dict[str, FakeIntegration]] = {}
        self.registries: dict[str, FakeRegistry] = {}
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ---

    def start(self, port: int = 0) -> FakeZisServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeZisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, account: str) -> str:
        return f"{self.url}/{account}"

    # --- the account's content ---

    def add_integration(
        self,
        account: str,
        integration: str,
        token: str,
        items: Iterable[tuple[str, dict[str, Any]]] = (),
    ) -> FakeIntegration:
        with self._lock:
            fake = FakeIntegration(token)
            self.accounts.setdefault(account, {})[integration] = fake
            for type_name, item in items:
                fake.items[(type_name, item["name"])] = item
            return fake

    def integration(self, account: str, integration: str) -> FakeIntegration:
        return self.accounts[account][integration]

    def put(self, account: str, integration: str, type_name: str, item: dict[str, Any]) -> None:
        with self._lock:
            fake = self.integration(account, integration)
            fake.items[(type_name, item["name"])] = item
            fake._ordered = None

    def update(
        self, account: str, integration: str, type_name: str, name: str, **fields: Any
    ) -> None:
        with self._lock:
            self.integration(account, integration).items[(type_name, name)].update(fields)

    def delete(self, account: str, integration: str, type_name: str, name: str) -> dict[str, Any]:
        with self._lock:
            fake = self.integration(account, integration)
            fake._ordered = None
            return fake.items.pop((type_name, name))

    def fail(self, account: str, integration: str, fault: Fault) -> None:
        with self._lock:
            self.integration(account, integration).faults.append(fault)

    def put_client(self, account: str, integration: str, item: dict[str, Any]) -> None:
        """Add an OAuth client, or replace the one with its uuid."""
        with self._lock:
            fake = self.integration(account, integration)
            fake.clients = [c for c in fake.clients or [] if c.get("uuid") != item.get("uuid")]
            fake.clients.append(item)

    def update_client(self, account: str, integration: str, uuid: str, **fields: Any) -> None:
        with self._lock:
            for item in self.integration(account, integration).clients or []:
                if item.get("uuid") == uuid:
                    item.update(fields)

    def delete_client(self, account: str, integration: str, uuid: str) -> None:
        with self._lock:
            fake = self.integration(account, integration)
            fake.clients = [c for c in fake.clients or [] if c.get("uuid") != uuid]

    def fail_clients(self, account: str, integration: str, fault: Fault) -> None:
        with self._lock:
            self.integration(account, integration).client_faults.append(fault)

    def add_registry(
        self,
        account: str,
        items: Iterable[dict[str, Any]] = (),
        *,
        basic: tuple[str, str] | None = None,
        oauth: str | None = None,
    ) -> FakeRegistry:
        """The account's registry, answering the admin ``basic`` (email, API token) or
        ``oauth`` (bearer token) credential."""
        with self._lock:
            fake = FakeRegistry(list(items), basic, oauth)
            self.registries[account] = fake
            return fake

    def registry(self, account: str) -> FakeRegistry:
        return self.registries[account]

    def register(self, account: str, item: dict[str, Any]) -> None:
        with self._lock:
            self.registries[account].items.append(item)

    def unregister(self, account: str, name: str) -> None:
        with self._lock:
            fake = self.registries[account]
            fake.items = [i for i in fake.items if i.get("name") != name]

    def fail_registry(self, account: str, fault: Fault) -> None:
        with self._lock:
            self.registries[account].faults.append(fault)

    # --- serving ---

    def _take_fault(
        self, fake: FakeIntegration | FakeRegistry, page: int, clients: bool = False
    ) -> Fault | None:
        faults = (
            fake.client_faults if clients and isinstance(fake, FakeIntegration) else fake.faults
        )
        for fault in faults:
            if fault.times > 0 and (fault.page is None or fault.page == page):
                fault.times -= 1
                if fault.times == 0:
                    faults.remove(fault)
                return fault
        return None

    def respond(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, Fault | None]:
        clients = _CLIENTS_RE.match(path)
        match = _PATH_RE.match(path) or clients
        registry = _REGISTRY_RE.match(path)
        if registry:
            account, integration = registry["account"], REGISTRY
        elif match:
            account, integration = match["account"], match["integration"]
        else:
            return 404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>", None
        with self._lock:
            fake = self.accounts.get(account, {}).get(integration)
            listing = self.registries.get(account) if registry else None
            if registry:
                authorized = listing is not None and listing.accepts(headers.get("authorization"))
            else:
                authorized = (
                    fake is not None and headers.get("authorization") == f"Bearer {fake.token}"
                )
            quota = self._quota(account)
            if quota is not None and quota[0] < 0:
                status, out_headers, body = 429, {"Content-Type": "text/html"}, RATE_LIMIT_PAGE
                out_headers["Retry-After"] = str(quota[1])
                fault = None
            elif registry:
                status, out_headers, body, fault = self._registry_page(
                    account, listing, query, authorized
                )
            elif fake is None:
                status, out_headers, body = error_body(404, "NotFound", "Integration not found")
                fault = None
            elif clients:
                status, out_headers, body, fault = self._clients_page(
                    account, integration, fake, query, authorized
                )
            else:
                status, out_headers, body, fault = self._page(fake, query, authorized)
            if quota is not None and self.quota_headers:
                left = str(max(quota[0], 0))
                out_headers = {
                    **out_headers,
                    "ratelimit-limit": str(self.rate_limit[0] if self.rate_limit else 0),
                    "ratelimit-remaining": left,
                    "ratelimit-reset": str(quota[1]),
                    "X-Rate-Limit-Remaining": left,
                }
            self.requests.append(
                Request(
                    account,
                    integration,
                    path,
                    query,
                    headers.get("user-agent"),
                    authorized,
                    status,
                    time.monotonic(),
                )
            )
            return status, out_headers, body, fault

    def window(self, at: float) -> int:
        """The rate-limit window a time.monotonic() instant falls in."""
        assert self.rate_limit is not None
        return int((at - self._window_start) // self.rate_limit[1])

    def _quota(self, account: str) -> tuple[int, int] | None:
        """(requests left in this window after this one, or -1 when spent; seconds to reset)."""
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        elapsed = time.monotonic() - self._window_start
        index = int(elapsed // window)
        reset = math.ceil((index + 1) * window - elapsed)
        used = self._window_counts[(account, index)]
        if used >= limit:
            return -1, reset
        self._window_counts[(account, index)] += 1
        return limit - used - 1, reset

    def _page(
        self, fake: FakeIntegration, query: dict[str, list[str]], authorized: bool
    ) -> tuple[int, dict[str, str], bytes, Fault | None]:
        if not authorized:
            return (*error_body(401, "InvalidCredentials", "Token length is invalid"), None)
        if fake.forbidden:
            return (
                *error_body(403, "Forbidden", "Cannot access this resource. Missing scope read"),
                None,
            )
        try:
            size = int(query.get("page[size]", ["100"])[0])
        except ValueError:
            return (*error_body(400, "InvalidParameter", "page[size] must be an integer"), None)
        if not 1 <= size <= 100:
            return (*error_body(400, "InvalidParameter", "page[size] can't exceed 100"), None)
        size = min(size, self.max_page_size)
        ordered = fake.ordered()
        start = 0
        after = query.get("page[after]", [None])[0]
        if after is not None:
            try:
                key = decode_cursor(after)
            except ValueError:
                return (
                    *error_body(400, "InvalidCursor", "page[after] is not a valid cursor"),
                    None,
                )
            start = bisect.bisect_right(ordered, key)
        page_number = start // size + 1
        fault = self._take_fault(fake, page_number)
        chunk = ordered[start : start + size]
        has_more = start + size < len(ordered)
        body: dict[str, Any] = {t: [] for t in ("api_key", "basic_auth", "bearer_token", "oauth")}
        for key in chunk:
            body.setdefault(key[0], []).append(fake.items[key])
        if start == 0:
            body.update(fake.extra_top_level)
        body["meta"] = {
            "after": encode_cursor(*chunk[-1]) if chunk else after,
            "before": encode_cursor(*chunk[0]) if chunk else None,
            "has_more": has_more,
        }
        if fault is not None:
            if fault.kind == "loop":
                body["meta"] = {
                    "after": after or encode_cursor(*chunk[0]),
                    "before": None,
                    "has_more": True,
                }
            elif fault.kind == "status":
                return (
                    fault.status,
                    {"Content-Type": fault.content_type, **fault.headers},
                    fault.body or b"",
                    fault,
                )
        return (
            200,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(body).encode(),
            fault,
        )

    def _clients_page(
        self,
        account: str,
        integration: str,
        fake: FakeIntegration,
        query: dict[str, list[str]],
        authorized: bool,
    ) -> tuple[int, dict[str, str], bytes, Fault | None]:
        if not authorized:
            return (*error_body(401, "InvalidCredentials", "Token length is invalid"), None)
        if fake.clients is None:
            return 404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>", None
        items = fake.clients
        size = fake.clients_page_size or max(len(items), 1)
        try:
            start = int(query.get("page[after]", ["0"])[0])
        except ValueError:
            return (*error_body(400, "InvalidCursor", "page[after] is not a valid cursor"), None)
        fault = self._take_fault(fake, start // size + 1, clients=True)
        if fault is not None and fault.kind == "status":
            headers = {"Content-Type": fault.content_type, **fault.headers}
            return fault.status, headers, fault.body or b"", fault
        following = start + size if start + size < len(items) else None
        if fault is not None and fault.kind == "loop":
            following = start
        chunk = items[start : start + size]
        body: Any = chunk if fake.clients_shape == "array" else {"clients": chunk}
        if fake.clients_page_size is not None and isinstance(body, dict):
            if fake.clients_pagination == "meta":
                after = str(following if following is not None else start)
                body["meta"] = {"after": after, "before": None, "has_more": following is not None}
            else:
                link = f"{self.base_url(account)}/api/services/zis/connections/oauth/clients"
                body["links"] = {
                    "next": None
                    if following is None
                    else f"{link}/{integration}?page%5Bafter%5D={following}"
                }
        return (
            200,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(body).encode(),
            fault,
        )

    def _registry_page(
        self,
        account: str,
        fake: FakeRegistry | None,
        query: dict[str, list[str]],
        authorized: bool,
    ) -> tuple[int, dict[str, str], bytes, Fault | None]:
        if fake is None or not authorized:
            return (*_registry_error(401, "1001", "Couldn't authenticate you"), None)
        if fake.forbidden:
            return (*_registry_error(403, "1003", "Forbidden: admins only"), None)
        size = fake.page_size or max(len(fake.items), 1)
        start = 0
        try:
            if fake.pagination == "next_page":
                start = (int(query.get("page", ["1"])[0]) - 1) * size
            elif "page[after]" in query:
                start = int(base64.b64decode(query["page[after]"][0]).decode())
        except ValueError:
            return (*_registry_error(400, "1010", "invalid page parameter"), None)
        page_number = start // size + 1
        fault = self._take_fault(fake, page_number)
        if fault is not None and fault.kind == "status":
            headers = {"Content-Type": fault.content_type, **fault.headers}
            return fault.status, headers, fault.body or b"", fault
        chunk = fake.items[start : start + size]
        following = start + size if start + size < len(fake.items) else None
        if fault is not None and fault.kind == "loop":
            following = start  # the next page is this one again
        body: dict[str, Any] = {"integrations": chunk}
        after = None if following is None else base64.b64encode(str(following).encode()).decode()
        link = f"{self.base_url(account)}/api/services/zis/registry/integrations"
        if fake.page_size is None and fault is None:
            pass  # as documented: no pagination keys at all
        elif fake.pagination == "meta":
            body["meta"] = {"after": after or "c3RvcA==", "before": None, "has_more": bool(after)}
        elif fake.pagination == "next_page":
            body["next_page"] = (
                f"{link}?page={following // size + 1}" if following is not None else None
            )
        else:
            next_link = f"{link}?page%5Bafter%5D={after}" if after else None
            body["meta"] = {"has_more": bool(after), "after_cursor": after}
            body["links"] = {"next": next_link, "prev": None}
        return (
            200,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(body).encode(),
            fault,
        )


def _registry_error(status: int, code: str, detail: str) -> tuple[int, dict[str, str], bytes]:
    """The registry's documented error shape: detail and status, not title."""
    errors = [{"code": code, "detail": detail, "status": str(status)}]
    body = json.dumps({"errors": errors, "message": "Unauthorized"}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8"}, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a keep-alive connection (or is told to reset it) is normal
        # here; anything else is still reported.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeZisServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if self.fake.latency:
            time.sleep(self.fake.latency)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, body, fault = self.fake.respond(parts.path, query, headers)
        if fault is not None and fault.delay and fault.kind != "drip":
            time.sleep(fault.delay)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if fault is not None and fault.kind == "drip":  # a byte at a time: a read timeout
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(fault.delay)
            elif fault is not None and fault.kind == "reset":  # half the body, then RST
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
                self.close_connection = True
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up first: fine

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the request log instead
