"""The sample data of the fake server: items with a sentinel in every secret field, the
registry's items, and the demo's account (its first state, its OAuth clients and its
changes)."""

from __future__ import annotations

import uuid
import zlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..records import format_timestamp

if TYPE_CHECKING:
    from .server import FakeZisServer

SENTINEL = "ZIS-SENTINEL-SECRET"  # every secret the fake serves contains this
SECRET_FIELDS = {
    "api_key": ("api_key",),
    "basic_auth": ("password",),
    "bearer_token": ("token",),
    "oauth": ("access_token", "refresh_token", "oauth_access_token_response_body"),
}
MASKED_SECRET = "************"  # the OAuth client's secret, as the registry's docs show it


def sample_item(type_name: str, name: str, **fields: Any) -> dict[str, Any]:
    """A realistic raw item of ``type_name``, every secret field carrying the SENTINEL."""
    stamp = "2025-03-01T10:00:00.52Z"
    item: dict[str, Any] = {"name": name, "allowed_domain": f"{name.replace('_', '-')}.example.com"}
    if type_name == "api_key":
        item.update(header_name="x-api-key", api_key="*****", created_at=stamp, updated_at=stamp)
    elif type_name == "basic_auth":
        item.update(
            username=f"{name}@example.com", password="*****", created_at=stamp, updated_at=stamp
        )
    elif type_name == "bearer_token":
        item.update(token="*****", created_at=stamp, updated_at=stamp)
    elif type_name == "oauth":
        item.update(
            created_by="admin_user",
            uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"zis-connection:{name}")),
            oauth_url_subdomain="acme",
            permission_scope="read write",
            token_type="bearer",
            token_expiry="2027-01-01T00:00:00Z",
            oauth_client_uuid="11111111-2222-4333-8444-555555555555",
            integration="not-allow-listed",
            zendesk_account_id=12345,
        )
    else:
        item.update(created_at=stamp, updated_at=stamp)
    # Secrets in clear, the way the API may send the oauth ones: the sentinel shows a leak.
    for secret in SECRET_FIELDS.get(type_name, ("secret",)):
        item[secret] = f"{SENTINEL}-{type_name}-{secret}-{name}"
    item.update(fields)
    return item


def sample_client(name: str, integration: str, **fields: Any) -> dict[str, Any]:
    """A raw OAuth client as the clients endpoint documents it: ``client_id`` and
    ``client_secret`` in clear (the SENTINEL in both), and a secret in a field no
    allow-list names."""
    stamp = "2025-03-01T10:00:00Z"
    item: dict[str, Any] = {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"zis-oauth-client:{name}")),
        "name": name,
        "integration": integration,
        "auth_url": f"https://{name.replace('_', '-')}.example.com/oauth/authorize",
        "token_url": f"https://{name.replace('_', '-')}.example.com/oauth/token",
        "grant_type": "authorization_code",
        "default_scopes": "read write",
        "created_by": "admin_user",
        "created_at": stamp,
        "updated_at": stamp,
        "client_id": f"{SENTINEL}-client_id-{name}",
        "client_secret": f"{SENTINEL}-client_secret-{name}",
        "signing_key": f"{SENTINEL}-unknown-field-{name}",
    }
    item.update(fields)
    return item


def registry_item(
    name: str, description: str | None = None, *, secret: str = MASKED_SECRET, **fields: Any
) -> dict[str, Any]:
    """A registry item as the docs show it (the OAuth client's secret masked); tests pass
    ``secret`` (and jwt_public_key, unknown fields) holding the SENTINEL to show a leak."""
    item: dict[str, Any] = {
        "name": name,
        "description": f"The {name} integration" if description is None else description,
        "jwt_public_key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
        "\n-----END PUBLIC KEY-----\n",
        "zendesk_oauth_client": {
            "id": 360000000000 + zlib.crc32(name.encode()) % 1_000_000,
            "identifier": f"zis_{name}",
            "secret": secret,
        },
    }
    item.update(fields)
    return item


ACCOUNT = "acme"  # the sample account of the demo and of `python -m inventory.testing`


def _stamp(when: datetime) -> str:
    return format_timestamp(when)


def sample_account(now: datetime) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Three integrations, all four types, 36 connections, a few tokens near expiry."""
    soon, later, gone = now + timedelta(days=5), now + timedelta(days=200), now - timedelta(days=3)
    old = _stamp(now - timedelta(days=400))

    def item(type_name: str, name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        fields.setdefault("created_at", old)
        fields.setdefault("updated_at", old)
        return type_name, sample_item(type_name, name, **fields)

    def oauth(name: str, expiry: datetime | None, **fields: Any) -> tuple[str, dict[str, Any]]:
        value = _stamp(expiry) if expiry else ""
        fields.setdefault("oauth_client_uuid", CLIENT_OF.get(name))  # the client it is minted from
        return "oauth", sample_item("oauth", name, token_expiry=value, **fields)

    billing = [
        item("api_key", "stripe_key", header_name="Authorization", allowed_domain="api.stripe.com"),
        item("api_key", "taxjar_key", allowed_domain="api.taxjar.com"),
        item("api_key", "avalara_key", allowed_domain="*.avalara.net"),
        item("basic_auth", "netsuite_user", allowed_domain="*.netsuite.com"),
        item("basic_auth", "sap_gateway", allowed_domain="sap.acme-corp.example"),
        item("basic_auth", "legacy_erp", allowed_domain=""),
        item("bearer_token", "chargebee_token", allowed_domain="acme.chargebee.com"),
        item("bearer_token", "recurly_token", allowed_domain="v3.recurly.com"),
        oauth("xero", soon, oauth_url_subdomain="login.xero.com", created_by="maria.lopez"),
        oauth("quickbooks", later, created_by="maria.lopez"),
        oauth("zendesk", None, created_by="zendesk_admin", oauth_url_subdomain="acme"),
        item("bearer_token", "paddle_token", allowed_domain="api.paddle.com"),
    ]
    crm = [
        item("api_key", "hubspot_key", allowed_domain="api.hubapi.com"),
        item("api_key", "pipedrive_key", allowed_domain="*.pipedrive.com"),
        item("api_key", "clearbit_key", allowed_domain="*.example.com"),
        item("basic_auth", "dynamics_svc", allowed_domain="acme.crm.dynamics.com"),
        item("basic_auth", "sugar_svc", allowed_domain="sugar.acme-corp.example"),
        item("bearer_token", "intercom_token", allowed_domain="api.intercom.io"),
        item("bearer_token", "close_token", allowed_domain="api.close.com"),
        item("bearer_token", "copper_token", allowed_domain=""),
        oauth("salesforce", soon + timedelta(days=4), created_by="dev.ops"),
        oauth("hubspot_oauth", later, created_by="dev.ops"),
        oauth("zoho", gone, created_by="former.admin"),
        oauth("zendesk", None, created_by="zendesk_admin"),
    ]
    alerts = [
        item(
            "api_key",
            "pagerduty_key",
            header_name="Authorization",
            allowed_domain="events.pagerduty.com",
        ),
        item("api_key", "opsgenie_key", allowed_domain="api.opsgenie.com"),
        item("api_key", "datadog_key", header_name="DD-API-KEY", allowed_domain="*.datadoghq.com"),
        item("basic_auth", "jira_bot", allowed_domain="acme.atlassian.net"),
        item("basic_auth", "statuspage_bot", allowed_domain="api.statuspage.io"),
        item("bearer_token", "slack_bot", allowed_domain="slack.com"),
        item("bearer_token", "teams_webhook", allowed_domain="*.webhook.office.com"),
        item("bearer_token", "discord_bot", allowed_domain="discord.com"),
        oauth("slack_oauth", later, created_by="it.admin"),
        oauth("github_app", soon + timedelta(days=20), created_by="it.admin"),
        oauth("linear", later, created_by="it.admin"),
        oauth("zendesk", None, created_by="zendesk_admin"),
    ]
    return {"billing_sync": billing, "crm_bridge": crm, "slack_alerts": alerts}


# The demo's OAuth clients: (integration, the OAuth connection minted from it).
SAMPLE_CLIENTS = (
    ("billing_sync", "xero"),
    ("billing_sync", "quickbooks"),
    ("crm_bridge", "salesforce"),
    ("crm_bridge", "hubspot_oauth"),
    ("slack_alerts", "github_app"),
)
CLIENT_OF = {name: sample_client(name, integration)["uuid"] for integration, name in SAMPLE_CLIENTS}
REDIRECTED_TOKEN_URL = "https://sso.attacker.example/services/oauth2/token"


def add_sample_clients(server: FakeZisServer) -> None:
    """The demo's OAuth clients, as the clients endpoint documents them: client_id and
    client_secret in clear (the SENTINEL in both)."""
    for integration, name in SAMPLE_CLIENTS:
        server.put_client(ACCOUNT, integration, sample_client(name, integration))


def redirect_client(server: FakeZisServer) -> str:
    """The demo's second change of ZIS's own: the salesforce client's token_url moved to
    another host; returns it in words."""
    server.update_client(
        ACCOUNT, "crm_bridge", CLIENT_OF["salesforce"], token_url=REDIRECTED_TOKEN_URL
    )
    return (
        "crm_bridge:   the salesforce OAuth client's token_url was redirected from "
        "salesforce.example.com to sso.attacker.example"
    )


def change_account(server: FakeZisServer, now: datetime) -> list[str]:
    """The changes between the two syncs; returns what was done, in words."""
    stamp = _stamp(now)
    server.update(
        ACCOUNT,
        "billing_sync",
        "oauth",
        "xero",
        token_expiry=_stamp(now + timedelta(days=60)),
        access_token="ZIS-SENTINEL-SECRET-rotated",
    )
    server.put(
        ACCOUNT,
        "crm_bridge",
        "api_key",
        sample_item(
            "api_key", "gong_key", allowed_domain="api.gong.io", created_at=stamp, updated_at=stamp
        ),
    )
    server.delete(ACCOUNT, "slack_alerts", "basic_auth", "statuspage_bot")
    server.update(
        ACCOUNT,
        "crm_bridge",
        "api_key",
        "clearbit_key",
        allowed_domain="person.clearbit.com",
        updated_at=stamp,
    )
    return [
        "billing_sync: the xero OAuth token was refreshed (new expiry)",
        "crm_bridge:   a new API key gong_key was created",
        "slack_alerts: the basic_auth connection statuspage_bot was deleted",
        "crm_bridge:   clearbit_key's allowed_domain narrowed from *.example.com "
        "to person.clearbit.com",
    ]


def sample_registry() -> list[dict[str, Any]]:
    """The account's registry: the three integrations, and one nobody configured."""
    return [
        registry_item("billing_sync", "Invoices and payments from the billing systems"),
        registry_item("crm_bridge", "CRM contacts and deals on tickets"),
        registry_item("legacy_ftp_export", "Nightly ticket export to the old ERP over FTP"),
        registry_item("slack_alerts", "Ticket alerts to Slack and the paging tools"),
    ]
