"""Token files are read again at the start of every run (spec §7): a rotated token is used
without a restart, a file broken at run time fails only the snapshots that use it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from inventory import models as m
from inventory.config import Settings, load_settings, read_token_files
from inventory.daemon import Daemon
from inventory.errors import TokenError
from inventory.secret import Secret, UnreadableToken

from .helpers import SCHEDULE, Harness, items, query, snapshot_count, start, stop, wait_for


def put_token(path: Path, value: str) -> None:
    """As a secrets agent does it: a new file with mode 0600, renamed into place."""
    new = path.with_name(path.name + ".new")
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.replace(new, path)


@pytest.fixture
def token_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Outside tmp_path: the harness checks that no file there holds a secret.
    return tmp_path_factory.mktemp("secrets") / "acme.token"


def configure(h: Harness, token_path: Path, interval: int = 1) -> Path:
    """acme: billing and sales on the account's token file, crm on its own environment
    token; beta/ops on an environment token."""
    put_token(token_path, h.token("acme", "file-v1"))
    for name in ("billing", "sales"):
        h.zis.add_integration("acme", name, h.token("acme", "file-v1"), items(name, 1))
    h.zis.add_integration("acme", "crm", h.token("acme", "crm"), items("crm", 1))
    h.zis.add_integration("beta", "ops", h.token("beta", "ops"), items("ops", 1))
    h.monkeypatch.setenv("TOKEN_ACME_CRM", h.token("acme", "crm"))
    h.monkeypatch.setenv("TOKEN_BETA", h.token("beta", "ops"))
    config = h.tmp_path / "inventory.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [database]
            url = "{h.db_url}"
            [sync]
            retry_backoff_seconds = 0.01
            max_retry_wait_seconds = 5
            [[accounts]]
            subdomain = "acme"
            base_url = "{h.zis.base_url("acme")}"
            token_file = "{token_path}"
            integrations = ["billing", "sales", {{ name = "crm", token_env = "TOKEN_ACME_CRM" }}]
            [[accounts]]
            subdomain = "beta"
            base_url = "{h.zis.base_url("beta")}"
            token_env = "TOKEN_BETA"
            integrations = ["ops"]
            """
        )
        + SCHEDULE.format(interval=interval)
    )
    h.config = config
    assert h.run("db", "upgrade", "--config", str(config)).code == 0
    return config


def rotate(h: Harness, token_path: Path, version: str) -> None:
    token = h.token("acme", version)
    for name in ("billing", "sales"):
        h.zis.integration("acme", name).token = token
    put_token(token_path, token)


def test_read_token_files_reads_files_again_and_keeps_environment_tokens(
    cli: Harness, token_path: Path
) -> None:
    config = configure(cli, token_path)
    settings = load_settings(str(config))
    rotate(cli, token_path, "file-v2")
    cli.monkeypatch.setenv("TOKEN_ACME_CRM", "changed-in-the-environment")
    assert tokens(read_token_files(settings)) == {
        ("acme", "billing"): Secret(cli.token("acme", "file-v2")),
        ("acme", "sales"): Secret(cli.token("acme", "file-v2")),
        ("acme", "crm"): Secret(cli.token("acme", "crm")),  # as loaded at start-up
        ("beta", "ops"): Secret(cli.token("beta", "ops")),
    }
    token_path.chmod(0o640)
    reread = read_token_files(settings)
    broken = tokens(reread)
    error = (
        f"{config}: accounts[0].token_file: {token_path} is readable by group or others; "
        f"run: chmod 600 {token_path}"
    )
    for name in ("billing", "sales"):
        token = broken[("acme", name)]
        assert isinstance(token, UnreadableToken)
        with pytest.raises(TokenError) as caught:
            token.reveal()
        assert str(caught.value) == f"acme/{name}: {error}"
    assert broken[("acme", "crm")] == Secret(cli.token("acme", "crm"))
    assert reread.secrets() == [cli.token("acme", "crm"), cli.token("beta", "ops")]


def tokens(settings: Settings) -> dict[tuple[str, str], Secret]:
    return {(i.account, i.name): i.token for a in settings.accounts for i in a.integrations}


def failed_errors(h: Harness) -> set[tuple[str, str]]:
    s = m.Snapshot
    return query(h.db_url, select(s.integration, s.error).where(s.status == "failed"))


def test_the_daemon_uses_a_rotated_token_file_and_survives_a_broken_one(
    cli: Harness, token_path: Path
) -> None:
    config = configure(cli, token_path)
    proc = start(cli)
    counts = lambda: {n: snapshot_count(cli, n) for n in ("billing", "sales", "crm", "ops")}  # noqa: E731
    try:
        wait_for(lambda: min(counts().values()) >= 1)
        # Rotated: the server accepts only the new token from now on.
        rotate(cli, token_path, "file-v2")
        before = counts()
        wait_for(lambda: snapshot_count(cli, "billing") >= before["billing"] + 2)
        # Broken: readable by others. acme's file-token integrations fail, the rest go on.
        token_path.chmod(0o644)
        mode_error = (
            f"{config}: accounts[0].token_file: {token_path} is readable by group or others; "
            f"run: chmod 600 {token_path}"
        )
        wait_for(lambda: ("sales", f"acme/sales: {mode_error}") in failed_errors(cli))
        before = counts()
        wait_for(lambda: all(counts()[n] >= before[n] + 2 for n in ("crm", "ops")))
        assert {n: counts()[n] for n in ("billing", "sales")} == {
            n: before[n] for n in ("billing", "sales")
        }
        # Mended, then gone, then back: each run tries again.
        token_path.chmod(0o600)
        before = counts()
        wait_for(lambda: snapshot_count(cli, "billing") > before["billing"])
        token_path.unlink()
        gone_error = (
            f"{config}: accounts[0].token_file: cannot read token file {token_path}: "
            "No such file or directory"
        )
        wait_for(lambda: ("billing", f"acme/billing: {gone_error}") in failed_errors(cli))
        rotate(cli, token_path, "file-v3")
        before = counts()
        wait_for(lambda: snapshot_count(cli, "sales") > before["sales"])
        assert proc.poll() is None
    finally:
        code, _, logs = stop(cli, proc)
    assert code == 0
    assert {error for _, error in failed_errors(cli)} <= {
        f"acme/{n}: {e}" for n in ("billing", "sales") for e in (mode_error, gone_error)
    } | {  # a tick that read the old file just before the server took the new token
        f"acme/{n}: page 1: HTTP 401 InvalidCredentials: Token length is invalid"
        for n in ("billing", "sales")
    }
    assert snapshot_count(cli, "crm", "failed") == snapshot_count(cli, "ops", "failed") == 0
    assert not [line for line in logs if "Traceback" in line["message"]]


def test_each_daemon_tick_tells_the_log_redactor_the_token_it_read(
    cli: Harness, token_path: Path
) -> None:
    config = configure(cli, token_path, interval=3600)
    seen: list[Settings] = []
    daemon = Daemon(str(config), on_settings=seen.append)
    try:
        daemon.tick()
        rotate(cli, token_path, "file-v2")
        daemon.tick()
    finally:
        daemon.engine.dispose()
    assert cli.token("acme", "file-v1") in seen[1].secrets()
    assert cli.token("acme", "file-v2") in seen[-1].secrets()
