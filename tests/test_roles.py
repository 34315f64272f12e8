"""contrib/postgres-roles.sql: the schema migrated as its owner, syncs, a daemon and the
reports run as the writer and the auditor, and the writer cannot rewrite or delete the
history it wrote (PostgreSQL only; the roles are made for this test and dropped)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from inventory import store
from inventory.testing import sample_client, server_error

from .conftest import RUN_TAG, _libpq
from .helpers import SCHEDULE, Harness, seed, snapshot_count, wait_for
from .helpers import start as start_daemon
from .helpers import stop as stop_daemon

ROLES_SQL = Path(__file__).resolve().parent.parent / "contrib" / "postgres-roles.sql"
_made = itertools.count()


@dataclass(frozen=True)
class Roles:
    owner: str
    writer: str
    auditor: str
    admin_url: str

    def url(self, role: str) -> str:
        return make_url(self.admin_url).set(username=role).render_as_string(hide_password=False)

    def apply(self) -> None:
        """The roles file as shipped, with this test's role names."""
        text = ROLES_SQL.read_text()
        for name, ours in (
            ("zis_inventory_owner", self.owner),
            ("zis_inventory_writer", self.writer),
            ("zis_inventory_auditor", self.auditor),
        ):
            text = text.replace(name, ours)
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(text.encode())


@pytest.fixture
def roles(db_url: str) -> Iterator[Roles]:
    suffix = f"{RUN_TAG}_{next(_made)}"
    made = Roles(
        f"zis_inventory_owner_{suffix}",
        f"zis_inventory_writer_{suffix}",
        f"zis_inventory_auditor_{suffix}",
        db_url,
    )
    try:
        yield made
    finally:
        names = ", ".join(f'"{r}"' for r in (made.owner, made.writer, made.auditor))
        with psycopg.connect(_libpq(db_url), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                ([made.owner, made.writer, made.auditor],),
            )
            exists = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)",
                ([made.owner, made.writer, made.auditor],),
            ).fetchone()
            if exists and exists[0]:
                conn.execute(f"DROP OWNED BY {names}")
                conn.execute(f"DROP ROLE IF EXISTS {names}")


def refused(url: str, statement: str) -> str:
    """The error PostgreSQL gives ``statement`` run as that URL's role."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return type(exc).__name__ + ": " + str(exc).splitlines()[0]
    raise AssertionError(f"allowed: {statement}")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_writer_syncs_and_cannot_rewrite_history_and_the_auditor_reads(
    cli: Harness, roles: Roles
) -> None:
    roles.apply()  # the roles, before any table exists
    engine = store.make_engine(roles.url(roles.owner))
    try:
        store.upgrade(engine)
    finally:
        engine.dispose()
    roles.apply()  # the grants and triggers, on the tables the migrations made
    seed(cli, {"acme": {"billing": 2, "crm": 1}}, extra_sync="page_size = 3\nmax_retries = 0")
    client = sample_client("salesforce", "billing")
    cli.zis.put_client("acme", "billing", client)
    cli.zis.put_client("acme", "billing", sample_client("shopify", "billing"))
    cli.monkeypatch.setenv("INVENTORY_DATABASE_URL", roles.url(roles.writer))
    assert cli.run("sync", "--no-migrate").code == 0
    cli.zis.update_client("acme", "billing", client["uuid"], token_url="https://x.example/t")
    cli.zis.delete_client("acme", "billing", sample_client("shopify", "billing")["uuid"])
    cli.zis.delete("acme", "billing", "api_key", "billing_api_key_0")
    cli.zis.update("acme", "billing", "oauth", "billing_oauth_1", allowed_domain="n.example.com")
    cli.zis.fail("acme", "crm", server_error(500, times=1, page=1))
    assert cli.run("sync", "--no-migrate").code == 1  # crm failed: a snapshot of its own
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=1))
    before = snapshot_count(cli, "billing")
    daemon = start_daemon(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") > before)
    finally:
        code, _, logs = stop_daemon(cli, daemon)
    assert code == 0, logs
    # The auditor reads everything, and verifies.
    cli.monkeypatch.setenv("INVENTORY_DATABASE_URL", roles.url(roles.auditor))
    config = ("--config", str(cli.config))
    for args in (("connections",), ("changes",), ("snapshots",), ("db", "check", *config),
                 ("db", "verify", *config), ("db", "heads", *config)):  # fmt: skip
        result = cli.run(*args)
        assert result.code == 0, (args, result.out, result.err)
    assert "db verify: OK (2 chains" in cli.run("db", "verify", "--config", str(cli.config)).out
    writer, auditor = roles.url(roles.writer), roles.url(roles.auditor)
    # Both read the database's id: the findings' SIEM ids are the owner's, whoever asks.
    uids = {}
    for role in (roles.owner, roles.writer, roles.auditor):
        cli.monkeypatch.setenv("INVENTORY_DATABASE_URL", roles.url(role))
        result = cli.run("findings", "--format", "ocsf", "--include-suppressed")
        assert result.code in (0, 1), result.err
        uids[role] = {json.loads(line)["finding_info"]["uid"] for line in result.out.splitlines()}
    assert uids[roles.owner] and uids[roles.writer] == uids[roles.auditor] == uids[roles.owner]
    for statement in (
        "DELETE FROM connection_changes",
        "UPDATE connection_changes SET new_value = 'x'",
        "DELETE FROM connection_versions",
        "UPDATE connection_versions SET type = 'x'",
        "UPDATE connection_versions SET valid_to = now() WHERE valid_to IS NOT NULL",
        "DELETE FROM oauth_client_versions",
        "UPDATE oauth_client_versions SET token_url = 'https://evil.example/t'",
        "UPDATE oauth_client_versions SET valid_to = now() WHERE valid_to IS NOT NULL",
        "DELETE FROM oauth_clients",
        "UPDATE snapshots SET chain_format = 1 WHERE id = 1",
        "DELETE FROM snapshots",
        "UPDATE snapshots SET status = 'held' WHERE id = 1",
        "UPDATE snapshots SET chain_hash = repeat('0', 64) WHERE id = 1",
        "UPDATE snapshots SET prev_hash = NULL",
        "DELETE FROM sync_runs",
        "UPDATE sync_runs SET started_at = now()",
        "DROP TABLE connection_changes",
        "ALTER TABLE snapshots DISABLE TRIGGER ALL",
        "TRUNCATE connection_changes",
        "UPDATE database_identity SET database_id = gen_random_uuid()::text",
        "DELETE FROM database_identity",
        "INSERT INTO database_identity VALUES (2, gen_random_uuid()::text, now())",
    ):
        error = refused(writer, statement)
        assert error.startswith(("InsufficientPrivilege", "RaiseException")), (statement, error)
    assert refused(writer, "UPDATE snapshots SET chain_hash = repeat('0', 64) WHERE id = 1") == (
        "RaiseException: snapshot 1 is hashed: its row cannot change"
    )
    for statement in (
        "INSERT INTO sync_runs (started_at, trigger, status) VALUES (now(), 'cli', 'running')",
        "UPDATE connections SET removed_at = now()",
        "DELETE FROM integrations",
    ):
        assert refused(auditor, statement).startswith("InsufficientPrivilege"), statement
    assert refused(roles.url(roles.owner), "DELETE FROM connection_changes").startswith(
        "RaiseException"
    )  # the triggers hold for the owner too, until it drops them
    for statement in ("UPDATE database_identity SET created_at = now()",
                      "DELETE FROM database_identity", "TRUNCATE database_identity"):  # fmt: skip
        assert refused(roles.url(roles.owner), statement) == (
            "RaiseException: database_identity cannot be changed: the SIEM ids of findings "
            "are derived from it"
        ), statement
        assert refused(auditor, statement).startswith("InsufficientPrivilege"), statement
