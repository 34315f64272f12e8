"""The rules (spec §12) as pure functions, each at its boundaries, and the [findings]
configuration with every error it refuses."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from inventory import config as config_module
from inventory import rules as f
from inventory.config import load as config_load
from inventory.config import load_settings
from inventory.errors import ConfigError
from inventory.records import METADATA_FIELDS, Connection, OAuthClient, format_timestamp
from inventory.rules import FindingsSettings, RuleSettings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rec(type_: str, name: str, integration: str = "crm", **fields: object) -> f.Located:
    return ("acme", integration, Connection(type_, name, **fields))  # type: ignore[arg-type]


def fired(
    inventory: f.Inventory,
    settings: FindingsSettings | None = None,
    now: datetime = NOW,
) -> set[tuple[str, str, str | None, str | None, str]]:
    """(rule, integration, type, name, detail) of every finding."""
    active = f.rules_in_force(settings or FindingsSettings())
    return {
        (x.rule, x.integration, x.type, x.name, x.detail)
        for x in f.evaluate(inventory, active, now)
    }


def only(rule: str, inventory: f.Inventory, **kwargs: object) -> set[tuple[object, ...]]:
    return {t[2:] for t in fired(inventory, **kwargs) if t[0] == rule}  # type: ignore[arg-type]


def test_the_rules_judge_the_records_the_sync_keeps() -> None:
    """One connection record: the rules read records.Connection, where it is."""
    assert Connection._fields == ("type", "name", *METADATA_FIELDS)
    assert f.Located == tuple[str, str, Connection]


def test_the_rule_table_is_the_spec_table() -> None:
    assert [(r.id, r.slug, r.severity, r.enabled) for r in f.RULES] == [
        ("ZIS001", "no-allowed-domain", "high", True),
        ("ZIS002", "wildcard-domain", "medium", True),
        ("ZIS003", "not-rotated", "medium", True),
        ("ZIS004", "expired", "high", True),
        ("ZIS005", "expiring", "medium", True),
        ("ZIS006", "no-expiry-known", "low", True),
        ("ZIS007", "zendesk-api-token", "high", True),
        ("ZIS008", "name-policy", "low", False),
        ("ZIS009", "integration-not-inventoried", "medium", True),
        ("ZIS010", "stale-inventory", "high", True),
        ("ZIS011", "client-url-not-https", "high", True),
        ("ZIS012", "client-url-changed", "critical", True),
        ("ZIS013", "client-unused", "low", True),
    ]
    assert {r.id: {p.name: p.default for p in r.params} for r in f.RULES if r.params} == {
        "ZIS003": {"max_age_days": 365},
        "ZIS005": {"within_days": 14},
        "ZIS008": {"pattern": "^[a-z][a-z0-9_]+$"},
        "ZIS010": {"max_age": timedelta(days=2)},
        "ZIS012": {"within_days": 30},
    }
    assert all(r.rationale and r.remediation for r in f.RULES)


def test_zis001_no_allowed_domain_for_secrets_sent_as_they_are() -> None:
    inv = f.Inventory(
        [
            rec("api_key", "k_none"),
            rec("basic_auth", "b_none"),
            rec("bearer_token", "t_none"),
            rec("bearer_token", "t_empty", allowed_domain=""),
            rec("api_key", "k_set", allowed_domain="api.example.com"),
            rec("oauth", "o_none", token_expiry=NOW + timedelta(days=90)),  # oauth: not ZIS001
            rec("custom_type", "c_none"),  # an unknown type: not a known secret kind
        ]
    )
    assert only("ZIS001", inv) == {
        ("api_key", "k_none", "api_key with no allowed_domain"),
        ("basic_auth", "b_none", "basic_auth with no allowed_domain"),
        ("bearer_token", "t_none", "bearer_token with no allowed_domain"),
        ("bearer_token", "t_empty", "bearer_token with no allowed_domain"),
    }


def test_zis002_wildcard_is_a_leading_star_dot_only() -> None:
    inv = f.Inventory(
        [
            rec("api_key", "wild", allowed_domain="*.example.com"),
            rec("oauth", "wild_oauth", allowed_domain="*.slack.com", token_expiry=NOW),
            rec("api_key", "plain", allowed_domain="example.com"),
            rec("api_key", "star_no_dot", allowed_domain="*example.com"),
            rec("api_key", "inner", allowed_domain="api.*.example.com"),
        ]
    )
    assert only("ZIS002", inv) == {
        ("api_key", "wild", "allowed_domain=*.example.com"),
        ("oauth", "wild_oauth", "allowed_domain=*.slack.com"),
    }


def test_zis003_exactly_max_age_days_is_not_yet_stale() -> None:
    days = timedelta(days=365)
    inv = f.Inventory(
        [
            rec(
                "api_key", "older", allowed_domain="a", updated_at=NOW - days - timedelta(seconds=1)
            ),
            rec("api_key", "exactly", allowed_domain="a", updated_at=NOW - days),
            rec("api_key", "younger", allowed_domain="a", updated_at=NOW - days + timedelta(1)),
            rec("api_key", "unknown", allowed_domain="a"),
        ]
    )
    assert only("ZIS003", inv) == {
        (
            "api_key",
            "older",
            "updated_at=2025-06-01T11:59:59Z, more than max_age_days=365 ago",
        )
    }
    tighter = FindingsSettings(rules={"ZIS003": RuleSettings(params={"max_age_days": 180})})
    assert {name for _, name, _ in only("ZIS003", inv, settings=tighter)} == {
        "older",
        "exactly",
        "younger",
    }


def test_zis004_and_zis005_meet_at_now() -> None:
    """token_expiry <= now is expired (ZIS004); now < token_expiry <= now + within_days is
    expiring (ZIS005)."""
    second = timedelta(seconds=1)
    window = timedelta(days=14)
    inv = f.Inventory(
        [
            rec("oauth", "past", token_expiry=NOW - second),
            rec("oauth", "now", token_expiry=NOW),
            rec("oauth", "just_after", token_expiry=NOW + second),
            rec("oauth", "window_end", token_expiry=NOW + window),
            rec("oauth", "beyond", token_expiry=NOW + window + second),
            rec("api_key", "not_oauth", allowed_domain="a", token_expiry=NOW - second),
        ]
    )
    assert only("ZIS004", inv) == {
        ("oauth", "past", "token_expiry=2026-06-01T11:59:59Z has passed"),
        ("oauth", "now", "token_expiry=2026-06-01T12:00:00Z has passed"),
    }
    assert only("ZIS005", inv) == {
        ("oauth", "just_after", "token_expiry=2026-06-01T12:00:01Z, within within_days=14"),
        ("oauth", "window_end", "token_expiry=2026-06-15T12:00:00Z, within within_days=14"),
    }


def test_zis006_oauth_with_no_expiry() -> None:
    inv = f.Inventory(
        [
            rec("oauth", "unknown"),
            rec("oauth", "known", token_expiry=NOW + timedelta(days=90)),
            rec("bearer_token", "never_has_one", allowed_domain="a"),
        ]
    )
    assert only("ZIS006", inv) == {("oauth", "unknown", "oauth with no token_expiry")}


def test_zis007_token_suffix_not_token_elsewhere() -> None:
    inv = f.Inventory(
        [
            rec("basic_auth", "api_token", allowed_domain="a", username="bot@acme.com/token"),
            rec("basic_auth", "upper", allowed_domain="a", username="bot@acme.com/TOKEN"),
            rec("basic_auth", "inside", allowed_domain="a", username="token@acme.com"),
            rec("basic_auth", "middle", allowed_domain="a", username="bot/token/x"),
            rec("basic_auth", "plural", allowed_domain="a", username="bot@acme.com/tokens"),
            rec("basic_auth", "no_slash", allowed_domain="a", username="bot@acme.comtoken"),
            rec("basic_auth", "no_user", allowed_domain="a"),
            rec("api_key", "header", allowed_domain="a", username="x/token"),
        ]
    )
    assert only("ZIS007", inv) == {
        ("basic_auth", "api_token", "username=bot@acme.com/token (a Zendesk API token)"),
        ("basic_auth", "upper", "username=bot@acme.com/TOKEN (a Zendesk API token)"),
    }


def test_zis008_is_off_until_enabled_and_uses_its_pattern() -> None:
    inv = f.Inventory(
        [
            rec("api_key", "good_name", allowed_domain="a"),
            rec("api_key", "Bad-Name", allowed_domain="a"),
        ]
    )
    assert only("ZIS008", inv) == set()
    on = FindingsSettings(rules={"ZIS008": RuleSettings(enabled=True)})
    assert only("ZIS008", inv, settings=on) == {
        ("api_key", "Bad-Name", "name=Bad-Name does not match pattern=^[a-z][a-z0-9_]+$")
    }
    custom = FindingsSettings(
        rules={"ZIS008": RuleSettings(enabled=True, severity="high", params={"pattern": "^B"})}
    )
    found = f.evaluate(inv, f.rules_in_force(custom), NOW)
    assert {(x.name, x.severity) for x in found if x.rule == "ZIS008"} == {("good_name", "high")}


def test_zis009_registry_integrations_not_configured() -> None:
    configured = frozenset({("acme", "crm"), ("acme", "billing")})
    registry = [("acme", "crm"), ("acme", "shadow_it"), ("beta", "crm")]
    assert only("ZIS009", f.Inventory(configured=configured, registry=registry)) == {
        (None, None, "listed by the registry, not configured"),
    } and {t[1] for t in fired(f.Inventory(configured=configured, registry=registry))} == {
        "shadow_it",
        "crm",
    }
    assert only("ZIS009", f.Inventory(configured=configured, registry=None)) == set()
    whole = fired(f.Inventory(configured=configured, registry=registry))
    assert {(t[0], t[1]) for t in whole} == {("ZIS009", "shadow_it"), ("ZIS009", "crm")}


def test_zis010_exactly_max_age_is_not_yet_stale() -> None:
    two_days = timedelta(days=2)
    inv = f.Inventory(
        freshness=[
            f.Freshness("acme", "never", None),
            f.Freshness("acme", "older", NOW - two_days - timedelta(seconds=1)),
            f.Freshness("acme", "exactly", NOW - two_days),
            f.Freshness("acme", "fresh", NOW),
        ]
    )
    assert fired(inv) == {
        ("ZIS010", "never", None, None, "no complete snapshot"),
        (
            "ZIS010",
            "older",
            None,
            None,
            "last complete snapshot 2026-05-30T11:59:59Z, more than max_age=2d ago",
        ),
    }
    hours = FindingsSettings(rules={"ZIS010": RuleSettings(params={"max_age": timedelta(hours=1)})})
    assert {t[1] for t in fired(inv, settings=hours)} == {"never", "older", "exactly"}


def test_suppression_is_in_force_through_its_until_day() -> None:
    s = config_module.Suppression(0, "ZIS001", "SEC-1", date(2027, 3, 31), name="clearbit_*")
    finding = f.Finding(
        "ZIS001", "no-allowed-domain", "high", "acme", "crm", "api_key", "clearbit_x", "d"
    )
    last_day = datetime(2027, 3, 31, 23, 59, 59, tzinfo=UTC)
    assert f.suppression_for(finding, [s], last_day - timedelta(days=1)) is s
    assert f.suppression_for(finding, [s], last_day) is s
    assert f.suppression_for(finding, [s], last_day + timedelta(seconds=1)) is None
    other = f.Finding("ZIS001", "no-allowed-domain", "high", "acme", "crm", "api_key", "other", "d")
    assert f.suppression_for(other, [s], last_day) is None
    stale = f.Finding("ZIS010", "stale-inventory", "high", "acme", "crm", None, None, "d")
    anything = config_module.Suppression(1, "ZIS010", "migrating", date(2027, 3, 31))
    assert f.suppression_for(stale, [s, anything], last_day) is anything


# --- configuration ---------------------------------------------------------------------

TODAY = date(2026, 12, 2)


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(config_load, "today", lambda: TODAY)

    def _write(body: str) -> str:
        path = tmp_path / "inventory.toml"
        path.write_text('[database]\nurl = "sqlite:///x.db"\n' + textwrap.dedent(body))
        return str(path)

    return _write


def test_old_configs_get_the_defaults(write: object) -> None:
    settings = load_settings(write(""), require_accounts=False)  # type: ignore[operator]
    assert settings.findings == FindingsSettings(fail_on="high", rules={}, suppress=())


def test_findings_configuration_is_read(write: object) -> None:
    path = write(  # type: ignore[operator]
        """
        [findings]
        fail_on = "medium"
        [findings.rules.ZIS003]
        max_age_days = 180
        severity = "high"
        [findings.rules.ZIS008]
        enabled = true
        pattern = "^[a-z]+$"
        [findings.rules.ZIS010]
        max_age = "36h"
        [[findings.suppress]]
        rule = "ZIS001"
        account = "acme"
        integration = "crm_bridge"
        name = "clearbit_*"
        reason = "vendor rotates subdomains; SEC-123"
        until = "2027-03-31"
        [[findings.suppress]]
        rule = "ZIS006"
        reason = "tokens without expiry are checked by hand"
        until = 2027-12-02
        """
    )
    s = load_settings(path, require_accounts=False).findings
    assert s.fail_on == "medium"
    assert s.rules == {
        "ZIS003": RuleSettings(enabled=None, severity="high", params={"max_age_days": 180}),
        "ZIS008": RuleSettings(enabled=True, severity=None, params={"pattern": "^[a-z]+$"}),
        "ZIS010": RuleSettings(params={"max_age": timedelta(hours=36)}),
    }
    assert s.suppress == (
        config_module.Suppression(
            0,
            "ZIS001",
            "vendor rotates subdomains; SEC-123",
            date(2027, 3, 31),
            account="acme",
            integration="crm_bridge",
            name="clearbit_*",
        ),
        config_module.Suppression(
            1, "ZIS006", "tokens without expiry are checked by hand", date(2027, 12, 2)
        ),
    )
    active = {a.rule.id: a for a in f.rules_in_force(s)}
    assert (active["ZIS003"].severity, active["ZIS003"].params) == ("high", {"max_age_days": 180})
    assert active["ZIS008"].enabled and active["ZIS010"].params == {"max_age": timedelta(hours=36)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[findings]\nfail_on = "severe"\n',
            "findings.fail_on: Input should be 'low', 'medium', 'high', 'critical' or 'none'",
        ),
        (
            "[findings.rules.ZIS099]\nenabled = true\n",
            "findings.rules.ZIS099: unknown rule 'ZIS099' (known: ZIS001, ZIS002",
        ),
        (
            "[findings.rules.ZIS003]\nmax_age = 10\n",
            "findings.rules.ZIS003.max_age: unknown key",
        ),
        (
            "[findings.rules.ZIS001]\nmax_age_days = 10\n",
            "findings.rules.ZIS001.max_age_days: unknown key",
        ),
        (
            '[findings.rules.ZIS003]\nmax_age_days = "180"\n',
            "findings.rules.ZIS003.max_age_days: Input should be a valid integer",
        ),
        (
            "[findings.rules.ZIS003]\nmax_age_days = 0\n",
            "findings.rules.ZIS003.max_age_days: Input should be greater than or equal to 1",
        ),
        (
            '[findings.rules.ZIS003]\nseverity = "urgent"\n',
            "findings.rules.ZIS003.severity: Input should be 'low', 'medium', 'high' or 'critical'",
        ),
        (
            '[findings.rules.ZIS008]\npattern = "^[a-z"\n',
            "findings.rules.ZIS008.pattern: Value error, not a valid regular expression: "
            "unterminated character set",
        ),
        (
            '[findings.rules.ZIS010]\nmax_age = "2 days"\n',
            "findings.rules.ZIS010.max_age: Value error, '2 days' is not a duration",
        ),
        (
            '[findings.rules.ZIS008]\nenabled = "yes"\n',
            "findings.rules.ZIS008.enabled: Input should be a valid boolean",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nuntil = "2027-01-01"\n',
            "findings.suppress[0].reason: required key is missing",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "  "\nuntil = "2027-01-01"\n',
            "findings.suppress[0].reason: Value error, must say why",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\n',
            "findings.suppress[0].until: required key is missing",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "31/03/2027"\n',
            "findings.suppress[0].until: Value error, '31/03/2027' is not a date such as 2027-03-31",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "2027-02-30"\n',
            "findings.suppress[0].until: Value error, '2027-02-30' is not a date",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = 2027-01-01T00:00:00Z\n',
            "findings.suppress[0].until: Value error, must be a date such as 2027-03-31",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "2026-12-01"\n',
            "findings.suppress[0].until: 2026-12-01 is in the past",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "2027-12-03"\n',
            "findings.suppress[0].until: 2027-12-03 is more than 365 days ahead (at most 2027-12-02)",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS100"\nreason = "r"\nuntil = "2027-01-01"\n',
            "findings.suppress[0].rule: unknown rule 'ZIS100'",
        ),
        (
            '[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "2027-01-01"\nhost = "x"\n',
            "findings.suppress[0].host: unknown key",
        ),
        ("[findings]\nsuppress = 3\n", "findings.suppress: Input should be a valid list"),
    ],
)
def test_every_configuration_error_names_the_key(write: object, body: str, message: str) -> None:
    path = write(body)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        load_settings(path, require_accounts=False)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_until_today_and_a_year_ahead_are_accepted(write: object) -> None:
    for until in ("2026-12-02", "2027-12-02"):
        path = write(  # type: ignore[operator]
            f'[[findings.suppress]]\nrule = "ZIS001"\nreason = "r"\nuntil = "{until}"\n'
        )
        (s,) = load_settings(path, require_accounts=False).findings.suppress
        assert s.until.isoformat() == until


def test_a_bad_finding_configuration_exits_2(
    write: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from inventory.cli import main

    path = write('[[findings.suppress]]\nrule = "ZIS001"\nuntil = "2027-01-01"\n')  # type: ignore[operator]
    for command in ("findings", "check", "sync", "connections"):
        assert main([command, "--config", path]) == 2
        assert "findings.suppress[0].reason: required key is missing" in capsys.readouterr().err


def client(uuid: str, name: str | None = None, **urls: str) -> tuple[str, str, OAuthClient]:
    return ("acme", "crm", OAuthClient(uuid, name, **urls))  # type: ignore[arg-type]


def test_zis011_a_client_url_that_is_not_https() -> None:
    inv = f.Inventory(
        clients=[
            client("u1", "good", auth_url="https://a.example/a", token_url="HTTPS://a.example/t"),
            client("u2", "plain", auth_url="http://a.example/a", token_url="https://a.example/t"),
            client("u3", None, token_url="ftp://b.example/t"),
            client("u4", "none"),  # no URL known: nothing to judge
        ]
    )
    assert only("ZIS011", inv) == {
        ("oauth_client", "plain", "auth_url=http://a.example/a (not https://)"),
        ("oauth_client", "u3", "token_url=ftp://b.example/t (not https://)"),
    }


def test_zis012_a_host_change_within_within_days() -> None:
    def moved(uuid: str, field: str, old: str, new: str, days_ago: float) -> f.HostChange:
        return f.HostChange("acme", "crm", uuid, field, old, new, NOW - timedelta(days=days_ago))

    inv = f.Inventory(
        clients=[client("u1", "sf"), client("u2", "shop"), client("u3", "old")],
        host_changes=[
            moved("u1", "token_url", "a.example", "b.example", 40),  # an older one of u1's
            moved("u1", "token_url", "b.example", "evil.example", 1),
            moved("u1", "auth_url", "a.example", "evil.example", 2),
            moved("u2", "token_url", "s.example", "t.example", 30),  # exactly 30 days: past
            moved("u3", "token_url", "o.example", "p.example", 29.9),
            moved("gone", "token_url", "o.example", "p.example", 1),  # not a present client
        ],
    )
    stamp = lambda days: format_timestamp(NOW - timedelta(days=days))  # noqa: E731
    assert only("ZIS012", inv) == {
        (
            "oauth_client",
            "sf",
            f"auth_url host changed from a.example to evil.example at {stamp(2)}; "
            f"token_url host changed from b.example to evil.example at {stamp(1)}",
        ),
        (
            "oauth_client",
            "old",
            f"token_url host changed from o.example to p.example at {stamp(29.9)}",
        ),
    }
    assert f.RULES_BY_ID["ZIS012"].severity == "critical"
    settings = FindingsSettings(rules={"ZIS012": RuleSettings(params={"within_days": 45})})
    assert len(only("ZIS012", inv, settings=settings)) == 3


def test_zis013_only_where_connections_name_their_client() -> None:
    inv = f.Inventory(
        clients=[client("u1", "used"), client("u2", "idle"), ("acme", "ops", OAuthClient("u3"))],
        client_uses={("acme", "crm"): frozenset({"u1"})},  # ops: no connection names one
    )
    assert only("ZIS013", inv) == {
        ("oauth_client", "idle", "no present oauth connection names it (oauth_client_uuid)")
    }


def test_url_host_is_the_lower_case_host_or_none() -> None:
    assert [
        f.url_host(u) for u in ("https://A.Example:8443/x", "not a url", None, "http://[::1")
    ] == [
        "a.example",
        None,
        None,
        None,
    ]


def test_a_findings_key_is_read_alike_by_the_store() -> None:
    """store.findings reads Finding.key by position: the same tuple."""
    from inventory.store.findings import _key

    hit = f.Finding("ZIS003", "not-rotated", "medium", "acme", "crm", "api_key", "k", "d")
    assert _key(hit) == hit.key == ("ZIS003", "acme", "crm", "api_key", "k")
