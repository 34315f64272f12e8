"""Every CSV of an evidence pack can be printed again: the manifest's `same_as` command,
run exactly as written from another directory, prints the file byte for byte, also after
the database went on (a later sync with changes, deliveries, a new finding)."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from inventory import models as m
from inventory import store
from inventory.testing import sample_client, sample_item

from .helpers import Harness, write

CSVS = (
    "connections.csv",
    "oauth_clients.csv",
    "changes.csv",
    "findings.csv",
    "snapshots.csv",
    "notifications.csv",
)
# The OAuth client tok_a names (sample_item's oauth_client_uuid), its name a formula.
CLIENT = sample_client("=cmd|' /C calc'!A0", "billing", uuid="11111111-2222-4333-8444-555555555555")


class Receiver:
    """A webhook receiver on loopback that refuses (500) the first message about the
    integration ``refuse_once``, and answers 200 to every other."""

    def __init__(self, refuse_once: str) -> None:
        self.refuse_once: str | None = refuse_once
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.bodies.append(body)
                status = 200
                if json.loads(body).get("integration") == receiver.refuse_once:
                    status, receiver.refuse_once = 500, None
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/siem"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # acme/billing's first message is refused once: pending, one attempt, at T; its next
    # one waits behind it (one integration's messages go in order).
    r = Receiver("billing")
    yield r
    r.close()


def api_key(name: str, domain: str = "") -> tuple[str, dict[str, Any]]:
    return ("api_key", sample_item("api_key", name, allowed_domain=domain))


def configure(h: Harness, receiver: Receiver) -> None:
    """Two accounts, three integrations; api_keys with no allowed_domain (ZIS001), some of
    them suppressed; a webhook sink; the config naming the database by a relative path on
    SQLite, so only an absolute one in the command finds it from elsewhere."""
    h.zis.add_integration(
        "acme",
        "billing",
        h.token("acme", "billing"),
        [api_key("open_a"), api_key("open_b"), api_key("=HYPERLINK(\"http://x\",\"y\")"),
         api_key("fine_a", "fine-a.example.com"),
         ("oauth", sample_item("oauth", "tok_a"))],
    )  # fmt: skip
    h.zis.put_client("acme", "billing", dict(CLIENT))
    h.zis.add_integration(
        "acme", "crm", h.token("acme", "crm"), [api_key("vendor_1"), api_key("vendor_2")]
    )
    h.zis.add_integration(
        "globex", "hr", h.token("globex", "hr"), [api_key("open_g"), api_key("fine_g", "g.io")]
    )
    config = h.write_config("", acme=["billing", "crm"], globex=["hr"])
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    h.monkeypatch.setenv("SIEM_URL", receiver.url)
    h.tokens[("notify", "url")] = receiver.url
    text = config.read_text()
    if h.db_url.startswith("sqlite"):
        text = text.replace(h.db_url, "sqlite:///inventory.db")  # relative to the cwd
    config.write_text(
        text
        + f"""
[[findings.suppress]]
rule = "ZIS001"
account = "acme"
integration = "crm"
name = "vendor_*"
reason = "vendor has no fixed host; SEC-123"
until = "{until}"

[[findings.suppress]]
rule = "ZIS001"
account = "globex"
name = "open_g"
reason = "internal only; SEC-9"
until = "{until}"

[[notify]]
name = "siem"
kind = "webhook"
url_env = "SIEM_URL"

[notifications]
backoff_seconds = 3600
max_attempts = 50
"""
    )


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def run_as_written(h: Harness, command: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The command exactly as the manifest gives it (``python`` being this interpreter),
    from another directory, with $INVENTORY_CONFIG and $INVENTORY_DATABASE_URL pointing
    elsewhere: only what the command itself names may be read."""
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "inventory"]
    env = {
        **os.environ,
        "INVENTORY_CONFIG": str(cwd / "other.toml"),
        "INVENTORY_DATABASE_URL": f"sqlite:///{cwd / 'other.db'}",
    }
    done = subprocess.run(
        [sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, timeout=120
    )
    h.outputs += [done.stdout.decode(), done.stderr.decode()]
    return done


def test_every_csv_is_printed_again_by_its_same_as_after_the_database_went_on(
    cli: Harness, receiver: Receiver
) -> None:
    configure(cli, receiver)
    cli.sent = receiver.bodies  # the harness looks for secrets in what was sent
    assert cli.run("sync").code == 0
    cli.zis.update("acme", "billing", "api_key", "open_a", allowed_domain="a.example.com")
    cli.zis.delete("globex", "hr", "api_key", "fine_g")
    cli.zis.update_client("acme", "billing", CLIENT["uuid"], token_url="https://t.example/t")
    assert cli.run("sync").code == 0

    # The pack, with the config named relative to the cwd, as a user types it.
    result = cli.run("evidence", "--config", "inventory.toml", "--out", "pack")
    assert result.code == 0, result.err
    folder = cli.tmp_path / "pack"
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {name: (folder / name).read_bytes() for name in CSVS}
    findings = rows(files["findings.csv"].decode())
    assert {(r["account"], r["name"], r["status"]) for r in findings if r["rule"] == "ZIS001"} == {
        ("acme", "open_b", "open"),
        ("acme", '\'=HYPERLINK("http://x","y")', "open"),  # neutralised: not a formula
        ("acme", "vendor_1", "suppressed"),
        ("acme", "vendor_2", "suppressed"),
        ("globex", "open_g", "suppressed"),
    }
    assert [
        (r["uuid"], r["name"], r["token_url"]) for r in rows(files["oauth_clients.csv"].decode())
    ] == [
        (CLIENT["uuid"], "'=cmd|' /C calc'!A0", "https://t.example/t")  # neutralised
    ]
    sent = rows(files["notifications.csv"].decode())
    # refused once; waiting behind it (one integration's messages go in order); sent
    assert {(r["status"], r["attempts"], r["last_status"]) for r in sent} == {
        ("pending", "1", "500"),
        ("pending", "0", ""),
        ("sent", "1", "200"),
    }

    # The database goes on: the refused message is due and delivered, a sync changes
    # rows, closes versions, opens a finding and queues (and sends) more.
    n = m.Notification
    write(
        cli.db_url,
        update(n)
        .where(n.status == "pending")
        .values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)),
    )
    assert cli.run("notify", "--config", str(cli.config)).code == 0
    cli.zis.update("acme", "billing", "api_key", "open_b", allowed_domain="b.example.com")
    cli.zis.put("acme", "billing", *api_key("open_new"))
    cli.zis.put("globex", "hr", *api_key("vendor_9"))
    cli.zis.delete("acme", "crm", "api_key", "vendor_2")
    cli.zis.update_client("acme", "billing", CLIENT["uuid"], token_url="https://u.example/t")
    assert cli.run("sync").code == 0
    live = cli.run("notifications", "--config", str(cli.config), "--format", "csv").out
    assert {r["status"] for r in rows(live)} == {"sent"}
    assert live.encode() != files["notifications.csv"]
    now = cli.run("findings", "--include-suppressed", "--format", "csv").out
    assert {(r["name"], r["status"]) for r in rows(now) if r["rule"] == "ZIS001"} == {
        ("open_new", "open"),
        ('\'=HYPERLINK("http://x","y")', "open"),
        ("vendor_1", "suppressed"),
        ("open_g", "suppressed"),
        ("vendor_9", "open"),
    }

    elsewhere = cli.tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in CSVS:
        command = manifest["files"][name]["same_as"]
        done = run_as_written(cli, command, elsewhere)
        assert (done.returncode, done.stderr) == (0, b""), (name, command)
        assert done.stdout == files[name], (name, command)
    for name in CSVS:  # the configuration file and the database, named absolutely
        assert shlex.split(manifest["files"][name]["same_as"])[4:8] == [
            "--config",
            str(cli.tmp_path / "inventory.toml"),
            "--database",
            store.portable_url(cli.db_url),
        ]


def test_the_database_is_named_without_its_password_and_from_anywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    given = "postgresql://auditor:s3cret@db.example.com:5432/zis?sslmode=require&password=x"
    assert store.portable_url(given) == (
        "postgresql+psycopg://auditor@db.example.com:5432/zis?sslmode=require"
    )
    # Messages and the manifest mask a password wherever the URL holds one.
    assert store.safe_url(given + "&sslpassword=k3y") == (
        "postgresql+psycopg://auditor:***@db.example.com:5432/zis"
        "?password=%2A%2A%2A&sslmode=require&sslpassword=%2A%2A%2A"
    )
    assert store.portable_url(given + "&sslpassword=k3y") == store.portable_url(given)
    assert store.portable_url("sqlite:///inventory.db") == f"sqlite:///{tmp_path}/inventory.db"
    assert store.portable_url("sqlite:////srv/zis.db") == "sqlite:////srv/zis.db"
    # --database without a password borrows the configured one for the same database only
    written = store.portable_url(given)
    assert store.named_database(written, given) == (
        "postgresql+psycopg://auditor:s3cret@db.example.com:5432/zis?sslmode=require"
    )
    other = "postgresql+psycopg://auditor@db.example.com:5432/other"
    assert store.named_database(other, given) == other
    assert store.named_database("postgresql://auditor:mine@h/zis", given) == (
        "postgresql://auditor:mine@h/zis"
    )
