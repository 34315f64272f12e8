"""The configuration: every configuration problem names the file, the key and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inventory.cli import main
from inventory.config import load_settings
from inventory.errors import ConfigError
from inventory.secret import Secret
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


# --- [[notify]] sinks and [notifications] ----------------------------------------------

NOTIFY_BASE = """
[database]
url = "sqlite:///x.db"

[[accounts]]
subdomain = "acme"
token_env = "ACME_TOKEN"
integrations = ["billing_sync"]
"""
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


def notify_env(**extra: str) -> dict[str, str]:
    return {**ENV, "SLACK_URL": SLACK, "SIEM_SECRET": WHSEC, "SIEM_AUTH": "Bearer abc", **extra}


def test_notify_sinks_resolve_with_their_secrets_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        NOTIFY_BASE
        + """
[[notify]]
name = "secops-slack"
kind = "slack"
url_env = "SLACK_URL"
events = ["added", "expiring"]
accounts = ["acme"]

[[notify]]
name = "siem"
kind = "webhook"
url = "https://siem.example.com/hooks/zis"
secret_env = "SIEM_SECRET"
headers_env = { Authorization = "SIEM_AUTH" }
fields = ["allowed_domain"]
min_severity = "medium"

[notifications]
expiry_warning_days = [7, 30]
max_attempts = 3
""",
    )
    settings = load_settings(path, environ=notify_env())
    slack, siem = settings.notify
    assert (slack.name, slack.kind, slack.events, slack.accounts) == (
        "secops-slack", "slack", frozenset({"added", "expiring"}), frozenset({"acme"}),
    )  # fmt: skip
    assert slack.url == Secret(SLACK) and SLACK not in repr(slack)
    assert slack.shown_url == "https://hooks.slack.com/***"
    assert siem.shown_url == "https://siem.example.com/***"
    assert siem.secret == Secret(WHSEC) and WHSEC not in repr(siem)
    assert siem.headers == (("Authorization", Secret("Bearer abc")),)
    assert siem.events == frozenset(
        {"added", "removed", "modified", "restored", "expiring", "expired", "failed", "held",
         "finding"}
    )  # fmt: skip
    assert (siem.fields, siem.min_severity) == (frozenset({"allowed_domain"}), "medium")
    assert settings.notifications.expiry_warning_days == [30, 7]
    assert settings.notifications.max_attempts == 3
    assert {SLACK, WHSEC, "Bearer abc", "https://siem.example.com/hooks/zis"} <= set(
        settings.secrets()
    )
    # Read-only commands need neither tokens nor sink secrets.
    assert load_settings(path, environ={}, resolve_tokens=False).notify[0].url == Secret("")


def test_an_old_config_has_no_sinks_and_the_default_notifications(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, NOTIFY_BASE), environ=ENV)
    assert settings.notify == ()
    assert settings.notifications.expiry_warning_days == [30, 14, 7, 1]
    assert settings.notifications.max_attempts == 12


SINK = '\n[[notify]]\nname = "{name}"\nkind = "{kind}"\n{body}\n'


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        (
            [("s", "slack", f'url = "{SLACK}"')],
            "notify[0].url: a Slack webhook URL is a secret and may not be written in the "
            'configuration file; remove it and set url_env = "NAME"',
        ),
        (
            [("s", "webhook", 'url = "https://x.example/h"\nsecret = "whsec_abc"')],
            "notify[0].secret: a literal secret is not allowed in the configuration file",
        ),
        (
            [("s", "slack", 'url_env = "SLACK_URL"\nevents = ["added", "exploded"]')],
            "notify[0].events: Value error, unknown event kind 'exploded'",
        ),
        (
            [("s", "slack", 'url_env = "SLACK_URL"'), ("s", "webhook", 'url = "https://a.b/c"')],
            "notify[1].name: sink 's' is configured twice",
        ),
        (
            [("s", "webhook", 'url = "http://siem.example.com/hook"')],
            "notify[0].url: must be an https:// URL (http:// only to a loopback address)",
        ),
        (
            [("s", "slack", 'url_env = "NOT_SET_ANYWHERE"')],
            "notify[0].url_env: environment variable NOT_SET_ANYWHERE is not set or empty",
        ),
        (
            [("s", "webhook", 'url = "https://a.b/c"\nsecret_env = "NOT_SET_ANYWHERE"')],
            "notify[0].secret_env: environment variable NOT_SET_ANYWHERE is not set or empty",
        ),
        (
            [("s", "webhook", 'url = "https://a.b/c"\nsecret_env = "SIEM_AUTH"')],
            'notify[0].secret_env: not a Standard Webhooks signing secret ("whsec_" and base64)',
        ),
        (
            [("s", "webhook", 'url = "https://a.b/c"\nheaders_env = { X-Key = "NOT_SET" }')],
            "notify[0].headers_env.X-Key: environment variable NOT_SET is not set or empty",
        ),
        (
            [("s", "webhook", 'url = "https://a.b/c"\nmin_severity = "urgent"')],
            "notify[0].min_severity: Input should be 'low', 'medium', 'high' or 'critical'",
        ),
        (
            [("s", "pager", 'url = "https://a.b/c"')],
            "notify[0].kind: Input should be 'slack' or 'webhook'",
        ),
        ([("s", "webhook", "")], "notify[0]: set exactly one of url, url_env or url_file"),
        (
            [("s", "slack", 'url_env = "SLACK_URL"\nsecret_env = "SIEM_SECRET"')],
            "notify[0]: Slack incoming webhooks are not signed",
        ),
    ],
)
def test_bad_sinks_are_configuration_errors_naming_the_key(
    tmp_path: Path, sinks: list[tuple[str, str, str]], message: str
) -> None:
    text = NOTIFY_BASE + "".join(SINK.format(name=n, kind=k, body=b) for n, k, b in sinks)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, environ=notify_env())
    assert str(exc.value).startswith(f"{path}: {message}"), str(exc.value)
    assert SLACK not in str(exc.value) and "Bearer abc" not in str(exc.value)


def test_a_bad_env_url_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = write(tmp_path, NOTIFY_BASE + SINK.format(name="s", kind="slack", body='url_env = "U"'))
    url = "http://hooks.slack.com/services/T0/B0/SECRETPART"
    with pytest.raises(ConfigError) as exc:
        load_settings(path, environ=notify_env(U=url))
    assert str(exc.value) == (
        f"{path}: notify[0].url_env: must be an https:// URL (http:// only to a loopback address)"
    )
    loopback = "http://127.0.0.1:8080/hook"
    assert load_settings(path, environ=notify_env(U=loopback)).notify[0].url == Secret(loopback)


def test_a_bad_notify_config_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path, NOTIFY_BASE + SINK.format(name="s", kind="slack", body=f'url = "{SLACK}"')
    )
    monkeypatch.setenv("ACME_TOKEN", "t")
    assert main(["sync", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "notify[0].url" in err and SLACK not in err
    assert not (tmp_path / "x.db").exists()
