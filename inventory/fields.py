"""The one spec of the inventory's fields: the allow-lists (§4 for connections, §17 for
OAuth clients), the records' fields and the metadata columns of ``connections`` /
``connection_versions`` and ``oauth_clients`` / ``oauth_client_versions`` all come from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    timestamp: bool = False
    types: tuple[str, ...] = ()  # the connection types that keep it; () = every type


# In storage order; "type" and "name" complete the key.
FIELDS: tuple[Field, ...] = (
    Field("allowed_domain"),
    Field("created_at", timestamp=True),
    Field("updated_at", timestamp=True),
    Field("header_name", types=("api_key",)),
    Field("username", types=("basic_auth",)),
    Field("created_by", types=("oauth",)),
    Field("uuid", types=("oauth",)),
    Field("oauth_url_subdomain", types=("oauth",)),
    Field("permission_scope", types=("oauth",)),
    Field("token_type", types=("oauth",)),
    Field("token_expiry", timestamp=True, types=("oauth",)),
    Field("oauth_client_uuid", types=("oauth",)),
)

KNOWN_TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")
KEY_FIELDS = ("type", "name")
METADATA_FIELDS = tuple(f.name for f in FIELDS)
RECORD_FIELDS = (*KEY_FIELDS, *METADATA_FIELDS)  # a records.Connection, in order
TIMESTAMP_FIELDS = frozenset(f.name for f in FIELDS if f.timestamp)
COMMON_FIELDS = tuple(f.name for f in FIELDS if not f.types)
TYPE_FIELDS: Mapping[str, tuple[str, ...]] = {
    t: tuple(f.name for f in FIELDS if t in f.types) for t in KNOWN_TYPES
}


def kept_fields(type_name: str) -> tuple[str, ...]:
    """The fields an item of this type keeps, in order; an unknown type keeps the common
    ones."""
    return (*COMMON_FIELDS, *TYPE_FIELDS.get(type_name, ()))


# OAuth clients (§17): keyed by their uuid within an integration; client_id and
# client_secret are not on the list, so they never leave the parser.
CLIENT_TYPE = "oauth_client"  # their ``type`` in connection_changes and findings
CLIENT_FIELDS: tuple[Field, ...] = (
    Field("name"),
    Field("auth_url"),
    Field("token_url"),
    Field("grant_type"),
    Field("default_scopes"),
    Field("created_by"),
    Field("created_at", timestamp=True),
    Field("updated_at", timestamp=True),
)
CLIENT_KEY_FIELDS = ("uuid",)
CLIENT_METADATA_FIELDS = tuple(f.name for f in CLIENT_FIELDS)
CLIENT_RECORD_FIELDS = (*CLIENT_KEY_FIELDS, *CLIENT_METADATA_FIELDS)  # a records.OAuthClient
CLIENT_TIMESTAMP_FIELDS = frozenset(f.name for f in CLIENT_FIELDS if f.timestamp)
