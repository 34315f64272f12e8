"""Discovering integrations (§14): the registry listed by each sync and kept in the
``integrations`` table, and the ``discover`` command's report with its TOML snippet.

A failed listing writes a ``failed`` registry_listings row and changes nothing else; it
is a warning, never a failed connection snapshot.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from . import store
from .config import Account, Settings
from .errors import ConfigError, DatabaseError, Interrupted, RegistryError
from .registry import RegistryListing, list_integrations
from .render import format_table
from .results import Listing
from .store import Engine
from .store.registry import apply_listing, record_failed_listing
from .zis import ZisClient

log = logging.getLogger(__name__)

_NOT_ENV_RE = re.compile(r"[^A-Z0-9_]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- in sync -------------------------------------------------------------------------


def list_registries(
    settings: Settings,
    engine: Engine,
    run_id: int,
    clients: Mapping[str, ZisClient],
    stop: threading.Event,
) -> list[Listing]:
    """The registry of each account with ``admin`` among ``clients``, listed once and kept
    in ``integrations``, each in its own transaction. Never raises for a listing that
    fails: that is a warning and a ``failed`` row."""
    listings = []
    for account in settings.accounts:
        client = clients.get(account.subdomain)
        if account.admin is None or client is None:
            continue
        if stop.is_set():
            break
        listing = _list_account(engine, run_id, client, account)
        log.log(
            logging.INFO if listing.status == "complete" else logging.WARNING,
            "%s",
            listing.log_line(),
            extra={"account": listing.account, "status": listing.status},
        )
        listings.append(listing)
    return listings


def _list_account(engine: Engine, run_id: int, client: ZisClient, account: Account) -> Listing:
    assert account.admin is not None
    started = store.now()
    try:
        fetched = list_integrations(client, account.admin.header())
    except Interrupted:
        return Listing(account.subdomain, "interrupted", error="interrupted before it was written")
    except RegistryError as exc:
        return _failed(engine, run_id, account.subdomain, started, str(exc))
    configured = {i.name for i in account.integrations}
    try:
        return apply_listing(engine, run_id, started, fetched, configured)
    except DatabaseError as exc:
        return _failed(engine, run_id, account.subdomain, started, str(exc))


def _failed(engine: Engine, run_id: int, account: str, started: datetime, error: str) -> Listing:
    listing = Listing(account, "failed", error=error)
    try:
        record_failed_listing(engine, run_id, started, listing)
    except DatabaseError as exc:
        log.error("%s", exc)
    return listing


def strict_exit(listings: Sequence[Listing]) -> int:
    """``sync --strict-discovery``: 1 when a registry could not be listed."""
    return 1 if any(listing.status != "complete" for listing in listings) else 0


def summary_lines(listings: Sequence[Listing]) -> list[str]:
    return [f"  registry: {listing.log_line()}" for listing in listings]


def summary_json(listings: Sequence[Listing]) -> list[dict[str, Any]]:
    return [asdict(listing) for listing in listings]


# --- the discover command ------------------------------------------------------------


@dataclass
class Discovered:
    """One account as ``discover`` shows it."""

    account: str
    key: str  # accounts[N] in the configuration
    status: str  # complete | failed | no admin
    integrations: list[dict[str, Any]]
    not_in_registry: list[str]
    snippet: list[str]
    error: str | None = None


def discover(settings: Settings, accounts: Sequence[str], fmt: str) -> tuple[str, int]:
    """The rendered report and the exit status: 0, or 1 when a registry could not be read.
    Raises ConfigError when no selected account has ``admin``."""
    chosen = _chosen(settings, accounts)
    found: list[Discovered] = []
    for index, account in chosen:
        key = f"accounts[{index}]"
        if account.admin is None:
            found.append(Discovered(account.subdomain, key, "no admin", [], [], []))
            continue
        with ZisClient(account.base_url, account.subdomain, settings.sync) as client:
            try:
                listing = list_integrations(client, account.admin.header())
            except RegistryError as exc:
                found.append(Discovered(account.subdomain, key, "failed", [], [], [], str(exc)))
                continue
        found.append(_discovered(account, key, listing))
    code = 1 if any(d.status == "failed" for d in found) else 0
    return (render_json(found) if fmt == "json" else render_table(found, settings.source)), code


def _chosen(settings: Settings, accounts: Sequence[str]) -> list[tuple[int, Account]]:
    known = {a.subdomain for a in settings.accounts}
    for name in accounts:
        if name not in known:
            raise ConfigError(
                f"--account {name}: not a configured account "
                f"(configured: {', '.join(sorted(known))})"
            )
    chosen = [
        (n, a) for n, a in enumerate(settings.accounts) if not accounts or a.subdomain in accounts
    ]
    if not any(a.admin is not None for _, a in chosen):
        raise ConfigError(
            f"{settings.source}: accounts: no {'chosen ' if accounts else ''}account has admin "
            'credentials; discover needs admin = { email = "...", token_env = "NAME" } '
            '(an API token) or admin = { oauth_token_env = "NAME" } (see config.example.toml)'
        )
    return chosen


def _discovered(account: Account, key: str, listing: RegistryListing) -> Discovered:
    configured = {i.name for i in account.integrations}
    rows = [
        {"name": i.name, "description": i.description, "configured": i.name in configured}
        for i in sorted(listing.integrations, key=lambda i: i.name)
    ]
    listed = {row["name"] for row in rows}
    missing = [str(row["name"]) for row in rows if not row["configured"]]
    return Discovered(
        account.subdomain,
        key,
        "complete",
        rows,
        sorted(configured - listed),
        [snippet_line(account.subdomain, name) for name in missing],
    )


def token_env_name(account: str, integration: str) -> str:
    """The placeholder variable for an integration's own ZIS token."""
    name = _NOT_ENV_RE.sub("_", f"{account}_{integration}_ZIS_TOKEN".upper())
    return name if not name[0].isdigit() else f"ZIS_{name}"


def snippet_line(account: str, integration: str) -> str:
    name = json.dumps(integration, ensure_ascii=False)  # a JSON string is a TOML basic string
    return f'{{ name = {name}, token_env = "{token_env_name(account, integration)}" }},'


def render_json(found: Sequence[Discovered]) -> str:
    data = [
        {
            "account": d.account,
            "status": d.status,
            "error": d.error,
            "integrations": d.integrations,
            "configured_not_in_registry": d.not_in_registry,
            "snippet": "\n".join(d.snippet),
        }
        for d in found
    ]
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_table(found: Sequence[Discovered], source: str) -> str:

    rows = [
        [d.account, row["name"], "yes" if row["configured"] else "no", _shown(row["description"])]
        for d in found
        for row in d.integrations
    ]
    lines = format_table(["ACCOUNT", "INTEGRATION", "CONFIGURED", "DESCRIPTION"], rows)
    missing = sum(len(d.snippet) for d in found)
    noun = "integration" if len(rows) == 1 else "integrations"
    lines.append(f"{len(rows)} {noun}, {missing} not configured")
    for d in found:
        if d.status == "failed":
            lines.append(f"  {d.account}: the registry could not be read: {d.error}")
        elif d.status == "no admin":
            lines.append(f"  {d.account}: not listed: no admin credentials ({d.key}.admin)")
        if d.not_in_registry:
            lines.append(
                f"  {d.account}: configured but not in the registry: {', '.join(d.not_in_registry)}"
            )
    where = "" if source.startswith("(") else f" in {source}"  # "(demo)" is no file
    for d in found:
        if d.snippet:
            lines += [
                "",
                f"# {d.account}: add to {d.key}.integrations{where}; each ZIS token is",
                "# bound to one integration: export each variable with that integration's token.",
                *d.snippet,
            ]
    return "\n".join(lines)


def _shown(description: str | None, width: int = 50) -> str:
    text = _CONTROL_RE.sub(" ", description or "")
    return text if len(text) <= width else text[: width - 1] + "~"
