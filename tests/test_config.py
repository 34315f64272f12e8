"""config.py: every configuration problem names the file, the key and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inventory.cli import main
from inventory.config import Secret, load_settings
from inventory.errors import ConfigError
from inventory.testing import FakeZisServer

GOOD = """
[database]
url = "sqlite:///x.db"

[sync]
page_size = 50

[[accounts]]
subdomain = "acme"
token_env = "ACME_TOKEN"
integrations = ["billing_sync", { name = "crm_bridge", token_env = "CRM_TOKEN" }]

[[accounts]]
subdomain = "globex"
base_url = "http://127.0.0.1:9999/globex/"
token_file = "{token_file}"
integrations = ["ops"]
"""


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "globex.token"
    path.write_text("file-token-value\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return str(path)


ENV = {"ACME_TOKEN": "acme-token", "CRM_TOKEN": "crm-token"}


def test_good_config_resolves_tokens_per_integration(tmp_path: Path, token_file: Path) -> None:
    path = write(tmp_path, GOOD.replace("{token_file}", str(token_file)))
    settings = load_settings(path, environ=ENV)
    assert settings.database_url == "sqlite:///x.db"
    assert settings.sync.page_size == 50 and settings.sync.concurrency == 4
    assert [(a.subdomain, a.base_url) for a in settings.accounts] == [
        ("acme", "https://acme.zendesk.com"),
        ("globex", "http://127.0.0.1:9999/globex"),
    ]
    tokens = {(i.account, i.name): i.token for a in settings.accounts for i in a.integrations}
    assert tokens == {
        ("acme", "billing_sync"): Secret("acme-token"),
        ("acme", "crm_bridge"): Secret("crm-token"),
        ("globex", "ops"): Secret("file-token-value"),
    }
    assert "acme-token" not in repr(settings) and "file-token-value" not in repr(settings)


def test_database_url_and_config_path_from_environment(tmp_path: Path, token_file: Path) -> None:
    path = write(tmp_path, GOOD.replace("{token_file}", str(token_file)))
    env = {**ENV, "INVENTORY_CONFIG": path, "INVENTORY_DATABASE_URL": "postgresql://u:pw@h/db"}
    assert load_settings(None, environ=env).database_url == "postgresql://u:pw@h/db"


def good_with(token_file: Path, old: str, new: str) -> str:
    text = GOOD.replace("{token_file}", str(token_file))
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "page_size = 50",
            "page_size = 500",
            "sync.page_size: Input should be less than or equal to 100",
        ),
        (
            "page_size = 50",
            "page_size = 0",
            "sync.page_size: Input should be greater than or equal to 1",
        ),
        ("page_size = 50", 'page_size = "50"', "sync.page_size: Input should be a valid integer"),
        (
            "page_size = 50",
            "pagesize = 50",
            "sync.pagesize: unknown key (check the spelling against config.example.toml)",
        ),
        (
            'subdomain = "acme"',
            'subdomain = "Acme Corp"',
            "accounts[0].subdomain: 'Acme Corp' is not a Zendesk subdomain (lowercase letters, digits and '-')",
        ),
        (
            'token_env = "ACME_TOKEN"',
            'token = "abc123"',
            "accounts[0].token: a literal secret is not allowed in the configuration file; remove it and set "
            'token_env = "NAME" (and export NAME) or token_file = "/path/to/file" (mode 0600) instead',
        ),
        (
            '{ name = "crm_bridge", token_env = "CRM_TOKEN" }',
            '{ name = "crm_bridge", token = "abc" }',
            "accounts[0].integrations[1].token: a literal secret is not allowed",
        ),
        (
            'token_env = "ACME_TOKEN"',
            'token_env = "MISSING_TOKEN"',
            "accounts[0].token_env: environment variable MISSING_TOKEN is not set or empty; "
            "export MISSING_TOKEN=<ZIS OAuth access token>",
        ),
        (
            'token_env = "ACME_TOKEN"',
            'token_env = "abc-123.xyz"',
            "accounts[0].token_env: must be the NAME of an environment variable, not a token",
        ),
        (
            'token_env = "ACME_TOKEN"\n',
            "",
            "accounts[0].integrations[0]: no token for integration 'billing_sync'; set token_env or "
            "token_file on the account (accounts[0]) or on this integration",
        ),
        (
            '"billing_sync", {',
            '"billing_sync", "billing_sync", {',
            "accounts[0].integrations[1]: integration 'billing_sync' is listed twice",
        ),
        (
            '"billing_sync"',
            '"Billing Sync"',
            "accounts[0].integrations[0]: integration name 'Billing Sync' must be 1-64 characters",
        ),
        (
            'subdomain = "globex"',
            'subdomain = "acme"',
            "accounts[1].subdomain: 'acme' is configured twice",
        ),
        (
            'base_url = "http://127.0.0.1:9999/globex/"',
            'base_url = "ftp://x"',
            "accounts[1].base_url: must be an http:// or https:// URL",
        ),
        (
            'base_url = "http://127.0.0.1:9999/globex/"',
            'base_url = "https://user:pw@x.example.com"',
            "accounts[1].base_url: must not carry credentials; use token_env or token_file",
        ),
        (
            'integrations = ["ops"]',
            "integrations = []",
            "accounts[1].integrations: List should have at least 1 item",
        ),
        (
            "[sync]",
            "[sync]\nconcurrency = true",
            "sync.concurrency: Input should be a valid integer",
        ),
        (
            "[sync]",
            '[schedule]\ncron = "* * * * *"\ninterval_seconds = 60\n[sync]',
            "schedule: set either cron or interval_seconds, not both",
        ),
    ],
)
def test_config_errors_name_file_key_and_fix(
    tmp_path: Path, token_file: Path, old: str, new: str, message: str
) -> None:
    path = write(tmp_path, good_with(token_file, old, new))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=ENV)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "abc123" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == (
        f"{path}: configuration file not found; copy config.example.toml to {path} "
        "or pass --config PATH (or set $INVENTORY_CONFIG)"
    )


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync\npage_size = 1")
    with pytest.raises(
        ConfigError,
        match=r"not valid TOML: Expected '\]' at the end of a table declaration \(at line 1",
    ):
        load_settings(path, environ={})


def test_no_accounts(tmp_path: Path) -> None:
    path = write(tmp_path, "[sync]\npage_size = 10\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == (
        f"{path}: accounts: no [[accounts]] configured; add one with subdomain, token_env "
        "(or token_file) and integrations (see config.example.toml)"
    )


def test_token_file_problems(tmp_path: Path, token_file: Path) -> None:
    path = write(tmp_path, GOOD.replace("{token_file}", str(token_file)))
    token_file.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=ENV)
    assert str(caught.value) == (
        f"{path}: accounts[1].token_file: {token_file} is readable by group or others; "
        f"run: chmod 600 {token_file}"
    )
    token_file.chmod(0o600)
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match=r"accounts\[1\].token_file: token file .* is empty"):
        load_settings(path, environ=ENV)
    token_file.unlink()
    with pytest.raises(
        ConfigError, match=r"accounts\[1\].token_file: cannot read token file .*: No such file"
    ):
        load_settings(path, environ=ENV)


def test_token_with_whitespace_is_refused_without_echo(tmp_path: Path, token_file: Path) -> None:
    path = write(tmp_path, GOOD.replace("{token_file}", str(token_file)))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={**ENV, "ACME_TOKEN": "two words"})
    assert str(caught.value) == (
        f"{path}: accounts[0]: the token from environment variable ACME_TOKEN contains spaces "
        "or control characters"
    )


def test_cli_exits_2_before_any_request_or_database_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INVENTORY_DATABASE_URL", raising=False)
    with FakeZisServer() as zis:
        zis.add_integration("acme", "billing_sync", "t")
        path = write(
            tmp_path,
            f'[database]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n[[accounts]]\nsubdomain = "acme"\n'
            f'base_url = "{zis.base_url("acme")}"\ntoken_env = "UNSET_TOKEN_VAR"\nintegrations = ["billing_sync"]\n',
        )
        monkeypatch.delenv("UNSET_TOKEN_VAR", raising=False)
        assert main(["sync", "--config", path]) == 2
        assert zis.requests == []
    assert not os.path.exists(tmp_path / "db.sqlite")
    err = capsys.readouterr().err
    assert err == (
        f"configuration error: {path}: accounts[0].token_env: environment variable UNSET_TOKEN_VAR "
        "is not set or empty; export UNSET_TOKEN_VAR=<ZIS OAuth access token>\n"
    )


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--format", "xml"]) == 2
    assert (
        "Invalid value for '--format': 'xml' is not one of 'table', 'json'."
        in capsys.readouterr().err
    )
    assert main(["nonsense"]) == 2
    assert "No such command 'nonsense'" in capsys.readouterr().err
