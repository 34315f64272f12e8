"""Helpers the test modules share: the CLI harness, seeding the fake server, reading
the database back, and starting processes. No test module imports another."""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, create_engine, func, select

from inventory import models as m
from inventory import store
from inventory.cli import main
from inventory.store import head_revision, normalize_url
from inventory.testing import (
    SENTINEL,
    FakeRegistry,
    FakeZisServer,
    registry_item,
    sample_item,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# The README and every page under docs/, by path relative to the repository.
DOCS = {
    str(path.relative_to(ROOT)): path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
}
HEAD = head_revision()  # the migrations' head, whatever its name
CONFIG_COMMANDS = {
    "sync",
    "connections",
    "clients",
    "changes",
    "snapshots",
    "check",
    "discover",
    "findings",
}
ADMIN_EMAIL = "secops@example.com"


Handler = Callable[[httpx.Request], httpx.Response]


def with_clients(handler: Handler, clients: list[dict[str, Any]] | None = None) -> Handler:
    """A MockTransport handler of connections/all that also answers the OAuth clients
    endpoint, in its documented shape (``{"clients": [...]}``, none unless given)."""

    def route(request: httpx.Request) -> httpx.Response:
        if "/connections/oauth/clients/" in request.url.path:
            return httpx.Response(200, json={"clients": clients or []})
        return handler(request)

    return route


def dump_database(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for the no-secret check."""
    engine = create_engine(normalize_url(url))
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: [tuple(r) for r in conn.execute(select(t))] for name, t in meta.tables.items()
            }
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Harness:
    """A config file pointing at the fake server, and the CLI run in-process."""

    tmp_path: Path
    db_url: str
    zis: FakeZisServer
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch
    outputs: list[str] = field(default_factory=list)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    config: Path | None = None
    admins: dict[str, str] = field(default_factory=dict)  # account: basic | oauth
    derived: list[str] = field(default_factory=list)  # secrets made of tokens (basic auth)
    sent: list[bytes] = field(default_factory=list)  # bodies loopback receivers were sent

    def token(self, account: str, integration: str) -> str:
        return self.tokens.setdefault(
            (account, integration),
            f"{SENTINEL}-TOKEN-{account}-{integration}-{secrets.token_hex(4)}",
        )

    def admin_env(self, account: str) -> str:
        kind = "API" if self.admins[account] == "basic" else "OAUTH"
        return f"{account.upper().replace('-', '_')}_ADMIN_{kind}_TOKEN"

    def registry(
        self, account: str, items: list[dict[str, Any]], kind: str = "oauth"
    ) -> FakeRegistry:
        """The account's fake registry, answering an admin credential of ``kind`` (basic:
        email and API token; oauth: a bearer token) that write_config puts in ``admin``."""
        token = self.token(account, "(admin)")
        self.admins[account] = kind
        self.monkeypatch.setenv(self.admin_env(account), token)
        if kind == "basic":
            pair = f"{ADMIN_EMAIL}/token:{token}".encode()
            self.derived.append(base64.b64encode(pair).decode())
            return self.zis.add_registry(account, items, basic=(ADMIN_EMAIL, token))
        return self.zis.add_registry(account, items, oauth=token)

    def admin_line(self, account: str) -> str:
        if account not in self.admins:
            return ""
        if self.admins[account] == "basic":
            return f'admin = {{ email = "{ADMIN_EMAIL}", token_env = "{self.admin_env(account)}" }}'
        return f'admin = {{ oauth_token_env = "{self.admin_env(account)}" }}'

    def write_config(self, extra_sync: str = "", **accounts: list[str]) -> Path:
        """accounts: subdomain -> integration names; each integration gets its own token env."""
        parts = [
            f'[database]\nurl = "{self.db_url}"\n',
            f"[sync]\nretry_backoff_seconds = 0.01\nmax_retry_wait_seconds = 5\n{extra_sync}\n",
        ]
        for account, integrations in accounts.items():
            entries = []
            for name in integrations:
                env = f"TOKEN_{account}_{name}".upper().replace("-", "_")
                self.monkeypatch.setenv(env, self.token(account, name))
                entries.append(f'{{ name = "{name}", token_env = "{env}" }}')
            parts.append(
                textwrap.dedent(
                    f"""
                    [[accounts]]
                    subdomain = "{account}"
                    base_url = "{self.zis.base_url(account)}"
                    integrations = [{", ".join(entries)}]
                    {self.admin_line(account)}
                    """
                )
            )
        self.config = self.tmp_path / "inventory.toml"
        self.config.write_text("\n".join(parts))
        return self.config

    def run(self, *args: str, log_format: str = "text") -> Result:
        self.capsys.readouterr()
        argv = ["--log-level", "DEBUG", "--log-format", log_format, *args]
        if self.config is not None and args and args[0] in CONFIG_COMMANDS:
            argv += ["--config", str(self.config)]
        code = main(argv)
        captured = self.capsys.readouterr()
        self.outputs += [captured.out, captured.err]
        return Result(code, captured.out, captured.err)

    def assert_no_secrets(self) -> None:
        secrets_seen = [SENTINEL, *self.tokens.values(), *self.derived]
        tables = repr(dump_database(self.db_url))
        for value in secrets_seen:
            assert value not in tables
            for output in self.outputs:
                assert value not in output
            for body in self.sent:  # notification payloads and Slack messages
                assert value.encode() not in body
        for path in self.tmp_path.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert SENTINEL.encode() not in data, path


def leaky(name: str, description: str | None = None) -> dict[str, Any]:
    """A registry item with a sentinel in the OAuth client's secret, the JWT public key
    and an unknown field: none of them may be stored or printed."""
    return registry_item(
        name,
        description,
        secret=f"{SENTINEL}-client-secret-{name}",
        jwt_public_key=f"{SENTINEL}-jwt-{name}",
        webhook_signing_key=f"{SENTINEL}-unknown-{name}",
    )


def run_verify(h: Harness, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Exit status, problems (JSON) and the table output's last line."""
    assert h.config is not None
    got = h.run("db", "verify", "--config", str(h.config), "--format", "json", *args)
    table = h.run("db", "verify", "--config", str(h.config), *args)
    assert table.code == got.code
    body = json.loads(got.out)
    assert body["ok"] == (got.code == 0)
    return got.code, body["problems"], table.out.splitlines()[-1]


def write(url: str, *statements: Any) -> None:
    engine = store.make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        engine.dispose()


SQL_BLOCK = re.compile(
    r"```sql\n-- (?P<title>[^\n]*?)(?: \((?P<dialect>SQLite|PostgreSQL)\))?\n(?P<sql>.*?)```", re.S
)


def docs_sql() -> list[tuple[str, str | None, str]]:
    """(title, dialect or None, SQL) of every sql block of the README and docs/."""
    blocks = []
    for name, text in DOCS.items():
        found = [(m["title"], m["dialect"], m["sql"]) for m in SQL_BLOCK.finditer(text)]
        assert len(found) == text.count("```sql"), f"{name}: a sql block without a -- title"
        blocks += found
    titles = [(title, dialect) for title, dialect, _ in blocks]
    assert len(titles) == len(set(titles)), "two sql blocks have the same title"
    return blocks


readme_sql = docs_sql  # the name the findings tests use


def _norm(value: Any) -> Any:
    """SQLite returns UTC text, PostgreSQL datetimes: compare them as SQLite's text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def sync_at(h: Harness, when: datetime, code: int = 0) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: when)
        assert h.run("sync").code == code


# The report tests' history: three syncs at T1, T2, T3; reports at NOW.
T1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
T3 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def items(prefix: str, count: int = 2) -> list[tuple[str, dict[str, Any]]]:
    """``count`` connections of each of the four types."""
    return [
        (t, sample_item(t, f"{prefix}_{t}_{i}"))
        for t in ("api_key", "basic_auth", "bearer_token", "oauth")
        for i in range(count)
    ]


def seed(h: Harness, layout: dict[str, dict[str, int]], extra_sync: str = "page_size = 3") -> None:
    """layout: account -> integration -> connections per type."""
    for account, integrations in layout.items():
        for name, count in integrations.items():
            h.zis.add_integration(account, name, h.token(account, name), items(name, count))
    h.write_config(extra_sync, **{a: list(i) for a, i in layout.items()})


def query(url: str, statement: Any) -> set[tuple[Any, ...]]:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            return {tuple(r) for r in conn.execute(statement)}
    finally:
        engine.dispose()


def present(url: str) -> set[tuple[Any, ...]]:
    c = m.Connection
    return query(
        url, select(c.account, c.integration, c.type, c.name).where(c.removed_at.is_(None))
    )


def changes(url: str, snapshot_ids: set[int] | None = None) -> set[tuple[Any, ...]]:
    c = m.ConnectionChange
    stmt = select(c.integration, c.type, c.name, c.change, c.field, c.old_value, c.new_value)
    if snapshot_ids is not None:
        stmt = stmt.where(c.snapshot_id.in_(snapshot_ids))
    return query(url, stmt)


def last_changes(url: str) -> set[tuple[Any, ...]]:
    """``changes`` of the newest snapshot."""
    return changes(url, {max(r[0] for r in snapshots(url))})


def snapshots(url: str) -> list[tuple[Any, ...]]:
    s = m.Snapshot
    return sorted(
        query(
            url,
            select(
                s.id,
                s.run_id,
                s.account,
                s.integration,
                s.status,
                s.connection_count,
                s.added,
                s.removed,
                s.modified,
                s.restored,
                s.pages,
            ),
        )
    )


def expected_keys(account: str, integration: str, count: int) -> set[tuple[str, str, str, str]]:
    return {(account, integration, t, n["name"]) for t, n in items(integration, count)}


def spawn(h: Harness, *args: str) -> subprocess.Popen[str]:
    assert h.config is not None
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inventory",
            "--log-level",
            "DEBUG",
            "sync",
            "--config",
            str(h.config),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=h.tmp_path,
    )


def finish(h: Harness, proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    h.outputs += [out, err]
    return proc.returncode, out, err


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SCHEDULE = (
    "[schedule]\ninterval_seconds = {interval}\nrun_on_start = true\nmisfire_grace_seconds = 5\n"
)


def start(h: Harness, *args: str) -> subprocess.Popen[str]:
    assert h.config is not None
    return subprocess.Popen(
        [sys.executable, "-m", "inventory", "--log-format", "json", "--log-level", "DEBUG", "daemon",
         "--config", str(h.config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=h.tmp_path,
    )  # fmt: skip


def stop(
    h: Harness, proc: subprocess.Popen[str], sig: int = signal.SIGTERM
) -> tuple[int, float, list[dict[str, Any]]]:
    began = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # not left running into the next test
        proc.kill()
        out, err = proc.communicate()
        h.outputs += [out, err]
        raise AssertionError(
            f"the daemon did not stop within 20 s of signal {sig}; its last log lines: "
            f"{err.splitlines()[-5:]}"
        ) from None
    h.outputs += [out, err]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return proc.returncode, time.monotonic() - began, logs


def snapshot_count(h: Harness, integration: str, status: str = "complete") -> int:
    s = m.Snapshot
    ((n,),) = query(
        h.db_url, select(func.count()).where(s.integration == integration, s.status == status)
    )
    return int(n)


def run_check(h: Harness) -> tuple[int, list[str]]:
    result = h.run("db", "check", "--config", str(h.config))
    return result.code, result.out.splitlines()


def mutate(h: Harness, rng: random.Random, integrations: list[str]) -> None:
    for name in integrations:
        keys = sorted(h.zis.integration("acme", name).items)
        for type_name, item in rng.sample(keys, 5):
            h.zis.delete("acme", name, type_name, item)
        for type_name, item in rng.sample(sorted(h.zis.integration("acme", name).items), 5):
            h.zis.update(
                "acme", name, type_name, item, allowed_domain=f"d{rng.randrange(10**6)}.example.com"
            )
        for i in range(5):
            h.zis.put(
                "acme", name, "api_key", sample_item("api_key", f"new_{rng.randrange(10**9)}_{i}")
            )


def expected(h: Harness, integrations: list[str]) -> set[tuple[str, str, str, str]]:
    return {
        ("acme", name, t, n)
        for name in integrations
        for (t, n) in h.zis.integration("acme", name).items
    }


def failed_error(h: Harness) -> set[tuple[Any, ...]]:
    s = m.Snapshot
    return query(h.db_url, select(s.integration, s.status, s.error).where(s.status != "complete"))


def assert_valid_slack(message: dict[str, Any]) -> None:
    """A Slack message within Block Kit's limits, as slack_sdk's block models check them:
    a ``text`` fallback, at most 50 blocks, a header of at most 150 characters, sections
    of at most 3,000; each block parses to itself and validates."""
    from slack_sdk.models.blocks import Block, HeaderBlock, SectionBlock

    assert set(message) == {"text", "blocks"}
    assert isinstance(message["text"], str) and message["text"].strip()
    assert len(message["text"]) <= 3000
    blocks = message["blocks"]
    assert 2 <= len(blocks) <= 50
    parsed = [Block.parse(b) for b in blocks]
    for block, raw in zip(parsed, blocks, strict=True):
        assert block is not None, raw
        block.validate_json()
        assert block.to_dict() == raw
    assert isinstance(parsed[0], HeaderBlock) and len(blocks[0]["text"]["text"]) <= 150
    for block in parsed:
        if isinstance(block, SectionBlock):
            assert block.text is not None and len(block.text.text) <= 3000


# --- a webhook receiver on loopback, and a config with one signed sink ------------------

SECRET = "whsec_" + base64.b64encode(b"notify-test-signing-secret-0123").decode()
AUTH = f"Bearer {SENTINEL}-SIEM-AUTH"


# --- a receiver on loopback ------------------------------------------------------------


@dataclass
class Got:
    headers: dict[str, str]
    body: bytes
    status: int | None  # what it answered; None while blocked
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


Answer = int | tuple[int, dict[str, str]] | str  # a status, with headers, or "block"


@dataclass
class Receiver:
    """A webhook receiver: answers each request with the next scripted answer (then
    ``default``), or by ``decide(payload)``; can be down (connection refused)."""

    default: int = 200
    script: list[Answer] = field(default_factory=list)
    decide: Callable[[dict[str, Any]], Answer] | None = None
    delay: float = 0.0
    got: list[Got] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    overlaps: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    bodies: list[bytes] | None = None  # also append each body here (the harness's search)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{SENTINEL}-URL-PATH"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Got({k.lower(): v for k, v in self.headers.items()}, body, None)
                with receiver.lock:
                    receiver.got.append(got)
                    if receiver.bodies is not None:
                        receiver.bodies.append(body)
                    wid = got.headers.get("webhook-id", "")
                    receiver.in_flight[wid] += 1
                    if receiver.in_flight[wid] > 1:
                        receiver.overlaps += 1
                    answer = receiver._answer(got)
                try:
                    if answer == "block":
                        receiver.release.wait(30)
                        answer = 200
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    status, headers = answer if isinstance(answer, tuple) else (answer, {})
                    got.status = int(status)
                    self.send_response(int(status))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver.lock:
                        receiver.in_flight[wid] -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, got: Got) -> Answer:
        if self.script:
            return self.script.pop(0)
        if self.decide is not None:
            return self.decide(got.payload)
        return self.default

    def delivered(self) -> list[Got]:
        """The requests answered 2xx, in the order they came."""
        with self.lock:
            return [g for g in self.got if g.status is not None and 200 <= g.status < 300]


# The connection rules are off here: the notification tests test the delivery of what the
# seam passes (the findings the rules open are tested in test_findings.py).
NO_FINDINGS = "\n".join(f"[findings.rules.ZIS{n:03d}]\nenabled = false" for n in range(1, 11))


def configure_webhook(
    h: Harness,
    receiver: Receiver,
    layout: dict[str, int],
    *,
    sink: str = "",
    notifications: str = "",
    extra_sync: str = "page_size = 3\nmax_retries = 0",
    connections: Callable[[str, int], list[tuple[str, dict[str, Any]]]] | None = None,
) -> None:
    """Integrations of account acme, and a config with one signed webhook sink whose URL,
    secret and header value are secrets the harness looks for everywhere."""
    for name, count in layout.items():
        made = connections(name, count) if connections else far_expiry(items(name, count))
        h.zis.add_integration("acme", name, h.token("acme", name), made)
    config = h.write_config(extra_sync, acme=list(layout))
    receiver.bodies = h.sent
    h.monkeypatch.setenv("SIEM_URL", receiver.url)
    h.monkeypatch.setenv("SIEM_SECRET", SECRET)
    h.monkeypatch.setenv("SIEM_AUTH", AUTH)
    h.tokens[("notify", "url")] = receiver.url
    h.tokens[("notify", "secret")] = SECRET
    h.tokens[("notify", "auth")] = AUTH
    config.write_text(
        config.read_text()
        + f"""
[[notify]]
name = "siem"
kind = "webhook"
url_env = "SIEM_URL"
secret_env = "SIEM_SECRET"
headers_env = {{ Authorization = "SIEM_AUTH" }}
{sink}

[notifications]
backoff_seconds = 0.001
max_backoff_seconds = 0.002
{notifications}
{NO_FINDINGS}
"""
    )


def add_slack_sink(h: Harness, chat: Receiver, extra: str = "") -> None:
    """A second sink, kind slack, at another loopback receiver."""
    assert h.config is not None
    url = chat.url.replace("URL-PATH", "SLACK-PATH")
    h.monkeypatch.setenv("CHAT_URL", url)
    h.tokens[("notify", "chat")] = url
    chat.bodies = h.sent
    text = h.config.read_text()
    sink = f'[[notify]]\nname = "chat"\nkind = "slack"\nurl_env = "CHAT_URL"\n{extra}\n\n'
    h.config.write_text(text.replace("[notifications]", sink + "[notifications]", 1))


def far_expiry(made: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    for type_name, item in made:
        if type_name == "oauth":
            item["token_expiry"] = "2099-01-01T00:00:00Z"
    return made
