"""Docs that cannot rot, over the README and every page under docs/: every command and
option is in docs/commands.md (and every command in the README's table), every command
the docs name exists with the options written, every SQL block runs on SQLite and
PostgreSQL and returns what it says, every TOML example loads, every configuration key
is in docs/configuration.md, every relative link resolves, every shell block runs as
written and does what its comments say (or says why not), config.example.toml is valid
and documents every key, and the README stays short."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel

from inventory import store
from inventory.cli import cli as root_command
from inventory.config import (
    AccountEntry,
    AdminEntry,
    FileConfig,
    NotifyEntry,
    SuppressEntry,
    load_settings,
)
from inventory.testing import (
    ACCOUNT,
    FakeZisServer,
    change_account,
    registry_item,
    sample_account,
    sample_client,
    sample_item,
)

from .helpers import DOCS, README, ROOT, Harness, _norm, docs_sql, rows

COMMANDS_PAGE = DOCS["docs/commands.md"]
CONFIG_PAGE = DOCS["docs/configuration.md"]


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += commands(command, f"{path} ")
    return found


@pytest.mark.parametrize(
    ("path", "command"), commands(root_command), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_and_option_is_documented(path: str, command: click.Command) -> None:
    """Each command has a heading of its own in docs/commands.md, a row in the README's
    table, and each of its --options is written in docs/commands.md."""
    if isinstance(command, click.Group) and not command.invoke_without_command:
        # a group that only holds commands (db): documented by its commands
        assert f"### `python -m inventory {path} " in COMMANDS_PAGE, path
    else:
        assert f"### `python -m inventory {path}`\n" in COMMANDS_PAGE, path
        assert f"| [`python -m inventory {path}`](docs/commands.md#" in README, path
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert f"`{opt}" in COMMANDS_PAGE, f"{path} {opt}"


def test_global_options_are_documented() -> None:
    for param in root_command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert f"`{opt}" in COMMANDS_PAGE, opt


def _text(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


T1 = datetime(2026, 5, 1, tzinfo=UTC)
T2 = datetime(2026, 6, 15, tzinfo=UTC)


def test_readme_audit_sql_runs_as_written_and_answers(cli: Harness) -> None:
    now = datetime.now(UTC)

    def at(days: float) -> str:
        return (now + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

    ops = [
        ("api_key", sample_item("api_key", "pager_key", updated_at=at(-400))),
        ("basic_auth", sample_item("basic_auth", "statuspage_bot", updated_at=at(-10))),
        (
            "bearer_token",
            sample_item("bearer_token", "open_token", allowed_domain="", updated_at=at(-5)),
        ),
        ("oauth", sample_item("oauth", "slack_oauth", created_by="it.admin", token_expiry=at(10))),
        ("oauth", sample_item("oauth", "github_app", created_by="dev.ops", token_expiry=at(60))),
        ("oauth", sample_item("oauth", "zoho", created_by="former.admin", token_expiry=at(-1))),
    ]
    crm = [
        (
            "api_key",
            sample_item("api_key", "hub_key", allowed_domain="api.hubapi.com", updated_at=at(-30)),
        ),
        ("oauth", sample_item("oauth", "sf", created_by="dev.ops", token_expiry=at(20))),
    ]
    cli.zis.add_integration("acme", "ops", cli.token("acme", "ops"), ops)
    cli.zis.add_integration("acme", "crm", cli.token("acme", "crm"), crm)
    cli.write_config("", acme=["ops", "crm"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: T1)
        assert cli.run("sync").code == 0
        cli.zis.delete("acme", "ops", "basic_auth", "statuspage_bot")
        cli.zis.update("acme", "crm", "api_key", "hub_key", allowed_domain="eu.hubapi.com")
        patch.setattr(store, "now", lambda: T2)
        assert cli.run("sync").code == 0
    cli.zis.put("acme", "ops", "api_key", sample_item("api_key", "new_key", updated_at=at(-1)))
    cli.zis.integration("acme", "crm").token = "revoked"
    assert cli.run("sync").code == 1

    expected: dict[str, tuple[slice, list[tuple[Any, ...]]]] = {
        "Credentials expiring in the next 30 days": (
            slice(0, 4),
            [("acme", "ops", "oauth", "slack_oauth"), ("acme", "crm", "oauth", "sf")],
        ),
        "Credentials not rotated (updated_at) for 180 days": (
            slice(0, 4),
            [("acme", "ops", "api_key", "pager_key")],
        ),
        "Every change in the last 7 days": (
            slice(1, 8),
            [("acme", "ops", "api_key", "new_key", "added", None, None)],
        ),
        "Who created the OAuth connections": (
            slice(0, 4),
            [
                ("dev.ops", "acme", "crm", "sf"),
                ("dev.ops", "acme", "ops", "github_app"),
                ("former.admin", "acme", "ops", "zoho"),
                ("it.admin", "acme", "ops", "slack_oauth"),
            ],
        ),
        "Credentials that may be sent to any domain (no allowed_domain)": (
            slice(0, 4),
            [("acme", "ops", "bearer_token", "open_token")],
        ),
        "The inventory as of 2026-06-01 00:00 UTC": (
            slice(0, 5),
            [
                ("acme", "crm", "api_key", "hub_key", "api.hubapi.com"),
                ("acme", "crm", "oauth", "sf", "sf.example.com"),
                ("acme", "ops", "api_key", "pager_key", "pager-key.example.com"),
                ("acme", "ops", "basic_auth", "statuspage_bot", "statuspage-bot.example.com"),
                ("acme", "ops", "bearer_token", "open_token", None),
                ("acme", "ops", "oauth", "github_app", "github-app.example.com"),
                ("acme", "ops", "oauth", "slack_oauth", "slack-oauth.example.com"),
                ("acme", "ops", "oauth", "zoho", "zoho.example.com"),
            ],
        ),
        "When was statuspage_bot first seen, last changed, and removed": (
            slice(0, 7),
            [("acme", "ops", "basic_auth", "statuspage_bot", _text(T1), _text(T2), _text(T2))],
        ),
        "The whole history of statuspage_bot": (
            slice(0, 5),
            [
                (_text(T1), "acme", "ops", "basic_auth", "added"),
                (_text(T2), "acme", "ops", "basic_auth", "removed"),
            ],
        ),
        "Integrations whose last snapshot failed or was held": (
            slice(0, 3),
            [("acme", "crm", "failed")],
        ),
        "Present credentials by account, integration and type": (
            slice(0, 4),
            [
                ("acme", "crm", "api_key", 1),
                ("acme", "crm", "oauth", 1),
                ("acme", "ops", "api_key", 2),
                ("acme", "ops", "bearer_token", 1),
                ("acme", "ops", "oauth", 3),
            ],
        ),
    }
    dialect = "PostgreSQL" if cli.db_url.startswith("postgresql") else "SQLite"
    # The findings queries run in tests/test_findings.py, over syncs that make findings;
    # the OAuth clients' below, over syncs that have clients.
    blocks = [b for b in docs_sql() if not b[0].startswith(("Findings: ", "OAuth clients: "))]
    assert {title for title, _, _ in blocks} == set(expected) | set(DISCOVERY_SQL)
    assert {title for title, _, _ in docs_sql()} - {title for title, _, _ in blocks} == {
        *FINDINGS_SQL,
        *CLIENTS_SQL,
    }
    ran = set()
    for title, only, sql in blocks:
        if only not in (None, dialect) or title in DISCOVERY_SQL:
            continue
        columns, want = expected[title]
        got = [tuple(_norm(v) for v in row)[columns] for row in rows(cli.db_url, sql)]
        assert got == want, title
        ran.add(title)
    assert ran == set(expected)
    failed = next(sql for title, _, sql in blocks if title.startswith("Integrations whose last"))
    failed_error = rows(cli.db_url, failed)[0][4]
    assert failed_error == "acme/crm: page 1: HTTP 401 InvalidCredentials: Token length is invalid"


# The findings queries of docs/findings.md: tests/test_findings.py runs each and checks its
# rows (test_readme_findings_sql); a new one needs its expected rows there.
FINDINGS_SQL = (
    "Findings: open now, most severe first",
    "Findings: when each opened, was last seen, and was fixed",
    "Findings: who suppressed which, why, and until when",
)

# The OAuth clients' queries (docs/schema.md), run by the test below: their rows.
CLIENTS_SQL: dict[str, list[tuple[Any, ...]]] = {
    "OAuth clients: by the host their token_url sends the client secret to": [
        ("collector.evil.example", 1),
        ("zoho.example.com", 1),
    ],
    "OAuth clients: whose auth_url or token_url changed since 2026-03-15": [
        (_text(T2), "acme", "crm", "salesforce", "token_url",
         "https://salesforce.example.com/oauth/token", "https://collector.evil.example/t"),
    ],
    "OAuth clients: the OAuth connections minted from each": [
        ("acme", "crm", "salesforce", "sf"),
        ("acme", "crm", "zoho", None),
    ],
}  # fmt: skip


def test_the_oauth_client_sql_runs_as_written_and_answers(cli: Harness) -> None:
    salesforce, zoho = sample_client("salesforce", "crm"), sample_client("zoho", "crm")
    crm = [("oauth", sample_item("oauth", "sf", oauth_client_uuid=salesforce["uuid"]))]
    cli.zis.add_integration("acme", "crm", cli.token("acme", "crm"), crm)
    for client in (salesforce, zoho):
        cli.zis.put_client("acme", "crm", client)
    cli.write_config("", acme=["crm"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: T1)
        assert cli.run("sync").code == 0
        token_url = "https://collector.evil.example/t"
        cli.zis.update_client("acme", "crm", salesforce["uuid"], token_url=token_url)
        patch.setattr(store, "now", lambda: T2)
        assert cli.run("sync").code == 0
    dialect = "PostgreSQL" if cli.db_url.startswith("postgresql") else "SQLite"
    ran = set()
    for title, only, sql in docs_sql():
        if title in CLIENTS_SQL and only in (None, dialect):
            got = [tuple(_norm(v) for v in row) for row in rows(cli.db_url, sql)]
            assert got == CLIENTS_SQL[title], title
            ran.add(title)
    assert ran == set(CLIENTS_SQL)


# The queries over the registry's tables (docs/discovery.md), run by the test below.
DISCOVERY_SQL: dict[str, list[tuple[Any, ...]]] = {
    "Integrations in the registry that nobody inventories": [
        ("acme", "crm", "CRM bridge", _text(T1)),
        ("acme", "legacy_export", "Nightly export", _text(T1)),
    ],
    "Integrations in the registry that are not configured": [
        ("acme", "legacy_export", "Nightly export", _text(T1)),
    ],
    "Accounts whose last registry listing failed": [
        (
            "acme",
            "failed",
            _text(T2),
            "acme/registry: page 1: HTTP 401 1001: Couldn't authenticate you",
        )
    ],
}


def test_readme_discovery_sql_runs_as_written_and_answers(cli: Harness) -> None:
    """billing is inventoried; crm is configured but its token never worked; legacy_export
    is only in the registry; the last listing failed and changed nothing."""
    cli.zis.add_integration("acme", "billing", cli.token("acme", "billing"), [])
    cli.zis.add_integration("acme", "crm", "another-token", [])
    items = [
        registry_item("billing", "Invoices"),
        registry_item("crm", "CRM bridge"),
        registry_item("legacy_export", "Nightly export"),
    ]
    cli.registry("acme", items, "basic")
    cli.write_config("", acme=["billing", "crm"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "now", lambda: T1)
        assert cli.run("sync").code == 1  # crm's snapshot failed
        cli.zis.registry("acme").basic = ("secops@example.com", "revoked")
        patch.setattr(store, "now", lambda: T2)
        assert cli.run("sync").code == 1
    blocks = {title: sql for title, _, sql in docs_sql() if title in DISCOVERY_SQL}
    assert set(blocks) == set(DISCOVERY_SQL)
    for title, want in DISCOVERY_SQL.items():
        got = [tuple(_norm(v) for v in row) for row in rows(cli.db_url, blocks[title])]
        assert got == want, title


def all_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= all_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_config_example_is_valid_and_documents_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "config.example.toml"
    monkeypatch.setenv("ACME_ZIS_TOKEN", "t1")
    monkeypatch.setenv("ACME_CRM_ZIS_TOKEN", "t2")
    monkeypatch.delenv("INVENTORY_DATABASE_URL", raising=False)
    settings = load_settings(str(example))
    assert [(i.account, i.name) for a in settings.accounts for i in a.integrations] == [
        ("acme", "billing_sync"),
        ("acme", "crm_bridge"),
    ]
    text = example.read_text()
    data = tomllib.loads(text)
    tables = {"findings.rules": "findings.rules.ZIS", "findings.suppress": "[findings.suppress]"}
    for key in all_keys(FileConfig) - {"accounts", "notify"}:
        table, name = key.split(".")
        if key in tables:  # a table of tables: documented by its headers
            assert f"[{tables[key]}" in text, key
        else:
            assert re.search(rf"^#?\s*{name}\s*=", text, re.M), key
        assert table in data
    for key in ("rule", "account", "integration", "type", "name", "reason", "until", "enabled"):
        assert re.search(rf"^#?\s*{key}\s*=", text, re.M), key
    for key in ("subdomain", "base_url", "token_env", "token_file", "integrations", "admin"):
        assert re.search(rf"^#?\s*{key}\s*=", text, re.M), key
    for key in all_keys(AdminEntry):
        assert re.search(rf"admin = {{.*\b{key} =", text), f"admin.{key}"
    for key in NotifyEntry.model_fields:
        assert re.search(rf"^#?\s*{key}\s*=", text, re.M), f"notify.{key}"


# --- every page: commands, TOML, keys, links, length ---

MENTION = re.compile(r"python3?\s+-m\s+inventory(?![.\w])")
SHELL_STOP = {"|", "||", "&&", "&", ";", ">", ">>", "<", "#", "..."}


def mentions() -> list[tuple[str, list[str]]]:
    """(file, words) of each `python -m inventory ...` the docs write: the words after it
    up to the end of its code span or line (a continued line joined), without quotes."""
    found = []
    for name, text in DOCS.items():
        text = text.replace("\\\n", " ")
        for match in MENTION.finditer(text):
            rest = re.split(r"[`\n]", text[match.end() :], maxsplit=1)[0]
            found.append((name, [w.strip("\"'(),.:") for w in rest.split()]))
    return found


def _option(command: click.Command, word: str) -> click.Parameter | None:
    name = word.split("=", 1)[0]
    return next((p for p in command.params if name in (*p.opts, *p.secondary_opts)), None)


def check_command_line(words: list[str]) -> str:
    """The command path the words name, after checking that each command exists and each
    --option belongs to it (AssertionError otherwise). Prose after the command ends it."""
    command: click.Command = root_command
    path: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in SHELL_STOP or word.startswith("#"):
            break
        if word.startswith("--"):
            param = _option(command, word)
            if param is None and word == "--help":
                i += 1
                continue
            assert param is not None, f"{' '.join(path) or 'the root'} has no option {word}"
            takes_value = isinstance(param, click.Option) and not param.is_flag
            i += 2 if takes_value and "=" not in word else 1
            continue
        # a word after a group is its command, unless the group runs alone (evidence DIR)
        is_name = re.fullmatch(r"[a-z][a-z-]*", word) is not None
        if (
            isinstance(command, click.Group)
            and is_name
            and (word in command.commands or not path or not command.invoke_without_command)
        ):
            assert word in command.commands, f"no command {' '.join([*path, word])}"
            command = command.commands[word]
            path.append(word)
            i += 1
            continue
        if any(isinstance(p, click.Argument) for p in command.params) and i < len(words):
            i += 1  # a positional argument (evidence verify DIR)
            continue
        break  # prose, or a placeholder: the command ends here
    return " ".join(path)


def test_every_command_the_docs_name_exists_with_its_options() -> None:
    seen = {(name, check_command_line(words)) for name, words in mentions()}
    documented = {path for name, path in seen if name == "docs/commands.md"}
    assert documented >= {path for path, _ in commands(root_command)} - {"db"}
    with pytest.raises(AssertionError, match="no command db verfy"):
        check_command_line(["db", "verfy"])
    with pytest.raises(AssertionError, match="sync has no option --acept-removals"):
        check_command_line(["sync", "--acept-removals"])
    assert check_command_line(["--log-format", "json", "daemon", "--config", "x", "|"]) == (
        "daemon"
    )


TOML_BLOCK = re.compile(r"^( *)```toml\n(?P<body>.*?)^\1```$", re.M | re.S)
MINIMAL_ACCOUNT = '\n[[accounts]]\nsubdomain = "acme"\ntoken_env = "ACME_ZIS_TOKEN"\nintegrations = ["billing_sync"]\n'


def toml_blocks() -> list[tuple[str, str]]:
    found = []
    for name, text in DOCS.items():
        for match in TOML_BLOCK.finditer(text):
            indent = len(match.group(1))
            body = "\n".join(line[indent:] for line in match.group("body").splitlines())
            found.append((name, body + "\n"))
    return found


def test_every_toml_example_loads(tmp_path: Path) -> None:
    """Each TOML block parses, validates as the configuration file (a block without
    [[accounts]] gets a minimal one), and loads as settings with every variable it names
    set; a suppression's until date is moved into the allowed window first (the file's
    date is checked as a date, and the window moves with the calendar)."""
    blocks = toml_blocks()
    assert {name for name, _ in blocks} >= {
        "README.md",
        "docs/configuration.md",
        "docs/findings.md",
        "docs/notifications.md",
        "docs/discovery.md",
    }
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    for number, (name, body) in enumerate(blocks):
        text = body if "[[accounts]]" in body else body + MINIMAL_ACCOUNT
        FileConfig.model_validate(tomllib.loads(text))
        soon = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
        text = re.sub(r'^until = "[^"]*"', f'until = "{soon}"', text, flags=re.M)
        env = {}
        for key, var in re.findall(r'\b(\w+_env)\s*=\s*"(\w+)"', text):
            env[var] = {"secret_env": secret, "url_env": "https://hooks.slack.com/x"}.get(
                key, "value"
            )
        for var in re.findall(r'=\s*"([A-Z][A-Z0-9_]+)"', text):
            env.setdefault(var, "value")  # headers_env = { Authorization = "VAR" }
        path = tmp_path / f"block{number}.toml"
        path.write_text(text)
        settings = load_settings(str(path), environ=env, resolve_tokens=False)
        assert settings.accounts, (name, body)


def test_configuration_page_names_every_key() -> None:
    keys = {k.split(".")[-1] for k in all_keys(FileConfig)} - {"accounts", "notify"}
    keys |= set(AccountEntry.model_fields) | set(AdminEntry.model_fields)
    keys |= set(NotifyEntry.model_fields) | set(SuppressEntry.model_fields)
    keys |= set(FileConfig.model_fields)
    # as `key`, or as a table: `[key]`, `[[key]]`, `[findings.key]`, `[[findings.key]]`
    missing = {k for k in keys if not re.search(rf"[`.\[]{k}[`\]]", CONFIG_PAGE)}
    assert missing == set()


LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes of a page's headings."""
    text = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def test_every_relative_link_resolves() -> None:
    checked = 0
    for name, text in DOCS.items():
        text = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
        for match in LINK.finditer(text):
            target = match["target"]
            if re.match(r"[a-z]+:", target):
                continue  # https://, mailto:
            file, _, anchor = target.partition("#")
            path = (ROOT / name).parent / file if file else ROOT / name
            assert path.resolve().exists(), (name, target)
            if anchor:
                assert anchor in anchors(path.read_text()), (name, target)
            checked += 1
    assert checked > 50
    assert "python--m-inventory-db-verify" in anchors("### `python -m inventory db verify`")
    assert "metadata-kept--and-nothing-else" in anchors("## Metadata kept — and nothing else")


def test_every_page_under_docs_is_linked_from_the_readme() -> None:
    pages = {name.removeprefix("docs/") for name in DOCS if name.startswith("docs/")}
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", README))
    assert linked == pages


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 400


# --- the shell blocks of the README and docs/ ---

SHELL_BLOCK = re.compile(
    r"^(?:<!-- (?P<note>[^\n]*?) -->\n)?```(?:sh|bash|shell|console)\n(?P<body>.*?)^```$",
    re.M | re.S,
)
NOT_RUN = "not run by the docs test: "
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
KINDS = ("added", "removed", "modified", "restored")
SERVES = re.compile(r"serves account '(?P<account>[^']+)'(?P<changed> after the demo's changes)?")
COUNTS = re.compile(
    rf"(?:the demo's (?P<word>\w+) changes: )?"
    rf"(?P<counts>\d+ (?:{'|'.join(KINDS)})(?:, \d+ (?:{'|'.join(KINDS)}))*)"
)


def shell_blocks() -> list[tuple[str, str, str | None, str]]:
    """(the file, the heading above, the note above, the body) of every shell block of the
    README and docs/."""
    found = []
    for name, text in DOCS.items():
        for match in SHELL_BLOCK.finditer(text):
            heading = re.findall(r"^#+ (.*)$", text[: match.start()], re.M)[-1]
            found.append((name, heading, match.group("note"), match.group("body")))
    return found


RUN_BLOCKS = [(h, body) for _, h, note, body in shell_blocks() if note is None]


def test_every_shell_block_is_run_or_says_why_not() -> None:
    blocks = shell_blocks()
    for name, heading, note, _ in blocks:
        assert note is None or (note.startswith(NOT_RUN) and note.removeprefix(NOT_RUN)), (
            name,
            heading,
        )
    # The one block that is run stays in the README: a newcomer's first steps.
    run = [(name, h) for name, h, note, _ in blocks if note is None]
    assert run == [("README.md", "Trying it against a local ZIS-compatible server")]
    # A command to paste is in a sh block (so it is run, or says why not); a block without
    # a language is output, or a transcript whose commands start with "$ " (its other lines
    # are what those commands print).
    for name, text in DOCS.items():
        for info, body in re.findall(r"^```(\S*)\n(.*?)^```$", text, re.M | re.S):
            lines = body.splitlines()
            transcript = any(line.startswith("$ ") for line in lines)
            for line in lines if info == "" and not transcript else ():
                pasted = re.match(r"(\.venv/bin/|python3? -m |make [a-z]|export [A-Z_]+=)", line)
                assert not pasted, (name, line)


def top_level_lines(body: str) -> list[tuple[int, str]]:
    """(index, text) of each line the shell runs as a command: not a here-document's body
    nor a continued line."""
    lines = body.splitlines()
    found, ending, joined = [], None, ""
    for number, line in enumerate(lines):
        if ending is not None:
            if line == ending:
                found.append((number, joined))
                ending, joined = None, ""
            continue
        joined += line
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            ending = heredoc.group(1)
        elif line.endswith("\\"):
            joined = joined[:-1]
        else:
            found.append((number, joined))
            joined = ""
    assert ending is None and not joined, "the block ends inside a command"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sync_totals(out: str) -> tuple[dict[str, int], set[str]]:
    """The ADDED.. RESTORED columns summed, and the statuses, of the summary in out."""
    lines = out.splitlines()
    (header_at,) = [i for i, line in enumerate(lines) if "ADDED" in line]
    header = lines[header_at].split()
    totals = dict.fromkeys(KINDS, 0)
    statuses = set()
    for line in lines[header_at + 1 :]:
        if line.startswith("run "):
            break
        row = dict(zip(header, line.split(), strict=True))
        statuses.add(row["STATUS"])
        for kind in KINDS:
            totals[kind] += int(row[kind.upper()])
    return totals, statuses


def demo_change_count() -> int:
    server = FakeZisServer()
    today = datetime.now(UTC)
    for name, items in sample_account(today).items():
        server.add_integration(ACCOUNT, name, "token", items)
    return len(change_account(server, today))


@pytest.mark.parametrize(("heading", "body"), RUN_BLOCKS, ids=[h for h, _ in RUN_BLOCKS])
def test_readme_shell_block_runs_as_written(tmp_path: Path, heading: str, body: str) -> None:
    hosts = set(re.findall(r"https?://([^/:\s\"']+)", body))
    assert hosts <= {"127.0.0.1"}, hosts  # loopback only
    ports = {int(p): free_port() for p in re.findall(r"(?:--port |127\.0\.0\.1:)(\d+)", body)}
    for theirs, ours in ports.items():
        body = re.sub(rf"\b{theirs}\b", str(ours), body)
    lines = body.splitlines()
    commands = top_level_lines(body)
    script = []
    for number, line in enumerate(lines):
        script.append(line)
        if number in dict(commands):
            script.append(f"printf '\\n@@ line {number} exit %d\\n' \"$?\"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVENTORY_", "FAKE_ZIS"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "block.sh").write_text("\n".join(script) + "\n")
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        shell = subprocess.Popen(
            ["bash", str(tmp_path / "block.sh")],
            cwd=scratch,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            shell.wait(timeout=120)
        finally:
            try:  # the block's processes share its process group: none may be left
                os.killpg(shell.pid, signal.SIGKILL)
                left = True
            except ProcessLookupError:
                left = False
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert not left, f"the block left a process running\n{stdout}\n{stderr}"
    for port in ports.values():
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))

    # Each line's output, and its exit status: 0 for every line.
    parts = re.split(r"\n@@ line (\d+) exit (\d+)\n", stdout)
    outputs = {int(n): text for n, text in zip(parts[1::3], parts[:-1:3], strict=True)}
    statuses = {int(n): int(code) for n, code in zip(parts[1::3], parts[2::3], strict=True)}
    assert statuses == dict.fromkeys(outputs, 0) and set(outputs) == set(dict(commands)), stderr

    served = [line for line in stdout.splitlines() if line.startswith("serving account ")]
    serves = []
    promised = 0
    for number, line in commands:
        if "  # " not in line:
            continue
        promise = line.split("  # ", 1)[1].strip()
        promised += 1
        if m := SERVES.fullmatch(promise):
            url = f"http://127.0.0.1:\\d+/{m['account']}"
            serves.append(rf"serving account '{m['account']}'{m['changed'] or ''} at {url} \(")
        elif m := COUNTS.fullmatch(promise):
            want = dict.fromkeys(KINDS, 0)
            for count in m["counts"].split(", "):
                n, kind = count.split(" ")
                want[kind] = int(n)
            totals, seen = sync_totals(outputs[number])
            assert (totals, seen) == (want, {"complete"}), (promise, outputs[number])
            if m["word"] is not None:
                assert NUMBERS[m["word"]] == sum(want.values()) == demo_change_count(), promise
        else:
            pytest.fail(f"{heading}: the docs test cannot check the comment {promise!r}")
    assert promised > 0
    assert len(served) == len(serves), stdout
    for line, pattern in zip(served, serves, strict=True):
        assert re.match(pattern, line), (line, pattern)
