"""One matrix for the promise that no secret comes out: every command, in every output and
log format, at DEBUG, through success and failure paths, with sentinels in every secret
field and in the tokens. The Harness then searches every table, output and file."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.testing import Fault, malformed, rate_limited, server_error

from .conftest import Harness
from .test_daemon import SCHEDULE, snapshot_count
from .test_daemon import start as start_daemon
from .test_daemon import stop as stop_daemon
from .test_processes import wait_for
from .test_sync import query, seed

FORMATS = ("table", "json", "csv")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_comes_out_of_any_command(cli: Harness, log_format: str) -> None:
    seed(
        cli,
        {"acme": {"billing": 2, "crm": 1, "ops": 1}},
        extra_sync="page_size = 3\nmax_retries = 1",
    )
    run = lambda *args: cli.run(*args, log_format=log_format)  # noqa: E731
    assert run("sync").code == 0
    # Failure paths: a server that echoes the token, rate limits, 5xx, a malformed page.
    token = cli.token("acme", "crm")
    echo = json.dumps({"errors": [{"code": "Bad", "title": f"token {token} is not valid here"}]})
    cli.zis.fail("acme", "crm", Fault("status", times=1000, status=401, body=echo.encode()))
    cli.zis.fail("acme", "billing", rate_limited("0", times=5, page=2))
    cli.zis.fail("acme", "ops", server_error(503, times=1))
    assert run("sync", "--format", "json").code == 1
    cli.zis.fail("acme", "ops", malformed(page=1))
    assert run("sync").code == 1
    s = m.Snapshot
    assert query(
        cli.db_url, select(s.error).where(s.integration == "crm", s.status == "failed")
    ) == {("acme/crm: page 1: HTTP 401 Bad: token [REDACTED] is not valid here",)}
    cfg = ("--config", str(cli.config))
    for fmt in FORMATS:
        for args in (
            ("connections",),
            ("connections", "--include-removed", "--expiring-within", "3650d", "--expired"),
            ("connections", "--as-of", "2030-01-01"),
            ("changes", "--since", "1d"),
            ("snapshots", "--failed"),
        ):
            assert run(*args, "--format", fmt).code == 0, args
        assert run("check", "--format", fmt).code == 0  # every integration completed today
        assert run("db", "check", *cfg, "--format", fmt).code == 0
        assert run("doctor", *cfg, "--format", fmt).code == 1  # crm still answers 401
    pack = str(cli.tmp_path / "evidence")  # every file of it is searched too
    assert run("evidence", *cfg, "--out", pack, "--since", "1d").code == 0
    assert run("evidence", "verify", pack).code == 0
    assert run("db", "current", *cfg).code == 0
    assert run("db", "upgrade", *cfg).code == 0
    assert run("demo", "--database", str(cli.tmp_path / "demo.db")).code == 0
    assert cli.config is not None
    cli.config.write_text(cli.config.read_text() + "\n" + SCHEDULE.format(interval=1))
    before = snapshot_count(cli, "billing")
    daemon = start_daemon(cli)
    try:
        wait_for(lambda: snapshot_count(cli, "billing") > before)
    finally:
        code, _, logs = stop_daemon(cli, daemon)
    assert code == 0 and logs
