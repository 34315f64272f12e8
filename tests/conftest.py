"""Fixtures: a fresh database per test (SQLite always, PostgreSQL when
INVENTORY_TEST_POSTGRES_URL is set), the loopback fake ZIS server, and a CLI harness
that proves no secret comes out anywhere."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from inventory.store import normalize_url
from inventory.testing import FakeZisServer

from .helpers import Harness

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
