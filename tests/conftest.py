"""Fixtures: a fresh database per test (SQLite always, PostgreSQL when
INVENTORY_TEST_POSTGRES_URL is set), the loopback fake ZIS server, and a CLI harness
that proves no secret comes out anywhere."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from inventory.cli import common as cli_common
from inventory.store import normalize_url
from inventory.testing import FakeZisServer, sample_item

from .helpers import NOW, T1, T2, T3, Harness, stamp, sync_at

# How fast examples are drawn is the machine's load, not a behaviour: not checked.
settings.register_profile("inventory", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("inventory")

PG_ENV = "INVENTORY_TEST_POSTGRES_URL"
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
    with new_database(request.param, tmp_path / "inventory.db") as url:
        yield url


@pytest.fixture
def other_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second new, empty database of the same kind as ``db_url``."""
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    with new_database(kind, tmp_path / "other.db") as url:
        yield url


@contextmanager
def new_database(kind: str, sqlite_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_path}"
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


@pytest.fixture
def history(cli: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """T1: four connections. T2: one modified, one removed. T3: the removed one restored,
    one added. Reports see NOW as the present."""
    monkeypatch.setattr(cli_common, "now", lambda: NOW)
    items = [
        (
            "api_key",
            sample_item(
                "api_key",
                "key_a",
                allowed_domain="a.example.com",
                updated_at=stamp(NOW - timedelta(days=200)),
            ),
        ),
        (
            "basic_auth",
            sample_item("basic_auth", "user_b", updated_at=stamp(NOW - timedelta(days=10))),
        ),
        ("oauth", sample_item("oauth", "tok_c", token_expiry=stamp(NOW + timedelta(days=30)))),
        ("oauth", sample_item("oauth", "tok_d", token_expiry=stamp(NOW - timedelta(seconds=1)))),
        ("oauth", sample_item("oauth", "tok_e", token_expiry="")),
    ]
    cli.zis.add_integration("acme", "billing", cli.token("acme", "billing"), items)
    cli.zis.add_integration(
        "acme",
        "crm",
        cli.token("acme", "crm"),
        [("bearer_token", sample_item("bearer_token", "crm_tok"))],
    )
    cli.write_config("", acme=["billing", "crm"])
    sync_at(cli, T1)
    cli.zis.update("acme", "billing", "api_key", "key_a", allowed_domain="narrow.example.com")
    removed = cli.zis.delete("acme", "billing", "basic_auth", "user_b")
    sync_at(cli, T2)
    cli.zis.put("acme", "billing", "basic_auth", removed)
    cli.zis.put(
        "acme",
        "billing",
        "oauth",
        sample_item("oauth", "tok_f", token_expiry=stamp(NOW + timedelta(days=31))),
    )
    sync_at(cli, T3)
    return cli
