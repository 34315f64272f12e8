"""Read side: the OAuth clients (§17) as they are, or as they were at a time (from
oauth_client_versions), for `clients` and the evidence pack's oauth_clients.csv. Never a
client_id or client_secret: the tables hold none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select

from .. import models as m
from ..fields import CLIENT_METADATA_FIELDS
from ..records import format_timestamp
from ..render import Column, Report
from ..rules import url_host

KEY = ("account", "integration", "uuid")
CLIENT_KEYS = (*KEY, *CLIENT_METADATA_FIELDS, "first_seen_at", "last_changed_at", "removed_at")
# As of T, as the connections' report: when a later sync closed a version is not part of
# the inventory at T.
VERSION_KEYS = (*KEY, *CLIENT_METADATA_FIELDS, "valid_from")


def clients(
    engine: Engine,
    *,
    accounts: Sequence[str] = (),
    integrations: Sequence[str] = (),
    include_removed: bool = False,
    as_of: datetime | None = None,
) -> Report:
    """Present OAuth clients (with ``include_removed``, every one ever seen), or those
    of ``as_of``, in (account, integration, uuid) order."""
    if as_of is not None:
        t: Any = m.OAuthClientVersion.__table__
        keys: Sequence[str] = VERSION_KEYS
        conditions = [t.c.valid_from <= as_of, or_(t.c.valid_to.is_(None), t.c.valid_to > as_of)]
    else:
        t = m.OAuthClient.__table__
        keys = CLIENT_KEYS
        conditions = [] if include_removed else [t.c.removed_at.is_(None)]
    if accounts:
        conditions.append(t.c.account.in_(accounts))
    if integrations:
        conditions.append(t.c.integration.in_(integrations))
    stmt = select(*(t.c[k] for k in keys)).where(*conditions).order_by(*(t.c[k] for k in KEY))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["where"] = ("*" if row.get("removed_at") is not None else "") + (
            f"{row['account']}/{row['integration']}"
        )
        row["label"] = row["name"] or row["uuid"]
        row["token_host"] = url_host(row["token_url"]) or "-"
        row["auth_host"] = url_host(row["auth_url"]) or "-"
    table = [
        Column("where", "ACCOUNT/INTEGRATION", 19),
        Column("label", "NAME (OR UUID)", 14),
        Column("token_host", "TOKEN URL HOST", 18),
        Column("auth_host", "AUTH URL HOST", 16),
        Column("grant_type", "GRANT", 5, lambda v: {"authorization_code": "code",
               "client_credentials": "creds"}.get(v or "", v or "-")),
    ]  # fmt: skip
    report = Report(keys, rows, table, "OAuth client")
    if any(r.get("removed_at") is not None for r in rows):
        report.notes.append("* removed (removed_at is set)")
    if as_of is not None:
        report.notes.append(f"as of {format_timestamp(as_of)}")
    return report
