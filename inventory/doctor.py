"""`doctor`: is everything in place for a sync? Configuration, tokens, database, schema,
and one small request per integration; nothing is written."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from . import render, store
from .config import AdminCredential, Settings
from .errors import InventoryError
from .records import parse_page
from .zis import ZisClient


@dataclass(frozen=True)
class Probe:
    subject: str
    ok: bool
    detail: str


def doctor_output(probes: list[Probe], fmt: str) -> tuple[str, bool]:
    """The probes as a report closed by the verdict, and whether every probe passed."""
    rows = [{"subject": p.subject, "ok": p.ok, "detail": p.detail} for p in probes]
    table = [
        render.Column("subject", "CHECK", 24),
        render.Column("ok", "OK", 3, lambda v: "ok" if v else "NO"),
        render.Column("detail", "DETAIL", 49),
    ]
    out = render.Report(("subject", "ok", "detail"), rows, table, "check")
    failing = [p for p in probes if not p.ok]
    out.notes.append("doctor: OK" if not failing else f"doctor: {len(failing)} problem(s)")
    return out.render(fmt), not failing


def diagnose(settings: Settings, *, send_test: bool = False) -> list[Probe]:
    probes = [
        Probe("configuration", True, f"{settings.source}: {_count(settings)}"),
        Probe("tokens", True, "present for every integration"),
        *_database(settings),
        *_sinks(settings, send_test),
    ]
    probe_settings = settings.sync.model_copy(update={"page_size": 1, "max_retries": 1})
    for account in settings.accounts:
        with ZisClient(account.base_url, account.subdomain, probe_settings) as client:
            for integration in account.integrations:
                where = f"{account.subdomain}/{integration.name}"
                try:
                    page = next(client.pages(integration.name, integration.token))
                    parse_page(page.body, where=where, page=1)
                    more = page.body.get("meta", {}).get("has_more")
                    detail = "HTTP 200, first page parsed" + (", more pages follow" if more else "")
                    probes.append(Probe(where, True, detail))
                except InventoryError as exc:
                    probes.append(Probe(where, False, str(exc)))
            if account.admin is not None:
                probes.append(_registry(client, account.admin))
    return probes


def _registry(client: ZisClient, admin: AdminCredential) -> Probe:
    """One listing of the account's registry with the admin credential."""
    from .registry import list_integrations

    where = f"{client.name}/registry"
    try:
        listing = list_integrations(client, admin.header())
    except InventoryError as exc:
        return Probe(where, False, str(exc))
    return Probe(where, True, f"HTTP 200, {len(listing.integrations)} integrations listed")


def _sinks(settings: Settings, send_test: bool) -> list[Probe]:
    """Each [[notify]] sink as configured (its URL masked), and with ``send_test`` the
    answer to a test message."""
    probes = []
    for sink in settings.notify:
        signed = ", signed" if sink.secret is not None else ""
        headers = f", {len(sink.headers)} headers" if sink.headers else ""
        events = "all events" if len(sink.events) == 9 else ", ".join(sorted(sink.events))
        detail = f"{sink.kind} {sink.shown_url}{signed}{headers}; {events}"
        probes.append(Probe(f"notify {sink.name}", True, detail))
        if send_test:
            from .notify.deliver import send_test as send

            answer = send(settings, sink.name)
            probes.append(Probe(f"notify {sink.name} test", answer.ok, answer.describe()))
    return probes


def _count(settings: Settings) -> str:
    n = sum(len(a.integrations) for a in settings.accounts)
    return f"{len(settings.accounts)} accounts, {n} integrations"


def _database(settings: Settings) -> list[Probe]:
    return [*_reach(settings), *_sqlite_library(settings)]


def _sqlite_library(settings: Settings) -> list[Probe]:
    """The SQLite library the driver uses."""
    if not store.is_sqlite_url(settings.database_url):
        return []
    return [Probe("sqlite library", True, f"SQLite {sqlite3.sqlite_version}")]


def _reach(settings: Settings) -> list[Probe]:
    where = store.safe_url(settings.database_url)
    if store.missing_sqlite_file(settings.database_url):
        return [Probe("database", True, f"{where} does not exist yet; the first sync creates it")]
    try:
        engine = store.engine_for(settings, readonly=True)
    except InventoryError as exc:
        return [Probe("database", False, str(exc))]
    try:
        store.check_reachable(engine)
        with store.database_errors(engine, "cannot read the schema revision"):
            current, head = store.current_revision(engine), store.head_revision()
    except InventoryError as exc:
        return [Probe("database", False, str(exc))]
    finally:
        engine.dispose()
    reachable = Probe("database", True, f"{where} reachable")
    if current == head:
        return [reachable, Probe("schema", True, f"revision {current} (head)")]
    state = "empty" if current is None else f"at revision {current}"
    return [reachable, Probe("schema", True, f"{state}, head is {head}; the next sync migrates it")]
