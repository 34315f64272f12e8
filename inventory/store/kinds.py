"""The kinds of inventory item a snapshot writes (connections, OAuth clients): for each,
its present-state and history tables, the columns that key a row within an integration,
its record's fields and how its change events are named. The integration transaction
writes every kind through the one code path (store.snapshot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, literal
from sqlalchemy.sql.elements import ColumnElement

from .. import models as m
from ..fields import (
    CLIENT_KEY_FIELDS,
    CLIENT_METADATA_FIELDS,
    CLIENT_TIMESTAMP_FIELDS,
    CLIENT_TYPE,
    KEY_FIELDS,
    METADATA_FIELDS,
    TIMESTAMP_FIELDS,
)
from ..records import Connection, OAuthClient


@dataclass(frozen=True)
class ItemKind:
    """One kind of item: its record's fields are ``key`` then ``metadata``, as its
    tables' columns of the same names."""

    noun: str  # in messages: "connections row of api_key 'x'" / "oauth_clients row of 'u'"
    current: Table
    versions: Table
    key: tuple[str, ...]
    metadata: tuple[str, ...]
    timestamps: frozenset[str]
    make: Callable[[Sequence[Any]], Any]  # the stored values, in ``fields`` order -> record
    # The (type, name) of its change events, as SQL over ``current`` (for the copied ones).
    label: Callable[[Table], tuple[ColumnElement[Any], ColumnElement[Any]]]

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.key, *self.metadata)


CONNECTIONS = ItemKind(
    "connection",
    cast(Table, m.Connection.__table__),
    cast(Table, m.ConnectionVersion.__table__),
    KEY_FIELDS,
    METADATA_FIELDS,
    TIMESTAMP_FIELDS,
    Connection._make,
    lambda t: (t.c.type, t.c.name),
)
CLIENTS = ItemKind(
    "OAuth client",
    cast(Table, m.OAuthClient.__table__),
    cast(Table, m.OAuthClientVersion.__table__),
    CLIENT_KEY_FIELDS,
    CLIENT_METADATA_FIELDS,
    CLIENT_TIMESTAMP_FIELDS,
    OAuthClient._make,
    lambda t: (literal(CLIENT_TYPE), func.coalesce(t.c.name, t.c.uuid)),
)
KINDS = (CONNECTIONS, CLIENTS)  # in the order a snapshot writes them
