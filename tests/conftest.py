"""Fixtures: a fresh database per test (SQLite always, PostgreSQL when
INVENTORY_TEST_POSTGRES_URL is set), the loopback fake ZIS server, and a CLI harness
that proves no secret comes out anywhere."""

from __future__ import annotations

import itertools
import os
import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.engine import make_url

from inventory.cli import main
from inventory.store import normalize_url
from inventory.testing import SENTINEL, FakeZisServer

PG_ENV = "INVENTORY_TEST_POSTGRES_URL"
CONFIG_COMMANDS = {"sync", "connections", "changes", "snapshots", "check"}
RUN_TAG = secrets.token_hex(4)
_counter = itertools.count()


def pytest_sessionstart(session: pytest.Session) -> None:
    url = os.environ.get(PG_ENV)
    if not url:
        return
    try:
        with psycopg.connect(_libpq(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.exit(f"{PG_ENV} is set but PostgreSQL is unreachable: {exc}", returncode=3)


def _libpq(url: str) -> str:
    return (
        make_url(normalize_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database for this test; dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inventory.db'}"
        return
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    name = f"zis_inventory_test_{RUN_TAG}_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(normalize_url(admin)).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def zis() -> Iterator[FakeZisServer]:
    with FakeZisServer() as server:
        yield server


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
    sent: list[bytes] = field(default_factory=list)  # bodies loopback receivers were sent

    def token(self, account: str, integration: str) -> str:
        return self.tokens.setdefault(
            (account, integration),
            f"{SENTINEL}-TOKEN-{account}-{integration}-{secrets.token_hex(4)}",
        )

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
        secrets_seen = [SENTINEL, *self.tokens.values()]
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


@pytest.fixture
def cli(
    tmp_path: Path,
    db_url: str,
    zis: FakeZisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVENTORY_DATABASE_URL", raising=False)
    monkeypatch.delenv("INVENTORY_CONFIG", raising=False)
    harness = Harness(tmp_path, db_url, zis, capsys, monkeypatch)
    yield harness
    harness.assert_no_secrets()
