"""Pure parsing: one raw API item -> an immutable, allow-listed Connection or OAuthClient.

This is where secrets end: every field that is not on the §4 / §17 allow-lists (fields.py)
is dropped here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, NamedTuple

import orjson

from .batches import batched
from .errors import RecordError, ResponseError
from .fields import (
    CLIENT_METADATA_FIELDS,
    CLIENT_TIMESTAMP_FIELDS,
    CLIENT_TYPE,
    COMMON_FIELDS,
    KEY_FIELDS,
    KNOWN_TYPES,
    METADATA_FIELDS,
    RECORD_FIELDS,
    TIMESTAMP_FIELDS,
    TYPE_FIELDS,
    kept_fields,
)

__all__ = [
    "COMMON_FIELDS",
    "KNOWN_TYPES",
    "METADATA_FIELDS",
    "RECORD_FIELDS",
    "TIMESTAMP_FIELDS",
    "TYPE_FIELDS",
    "Connection",
    "OAuthClient",
    "ParsedPage",
    "fetched_digest",
    "format_timestamp",
    "iter_fields",
    "parse_clients_page",
    "parse_item",
    "parse_page",
    "parse_timestamp",
    "row_hashes",
]

TYPE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_NAME_LENGTH = 255
MAX_FIELD_LENGTH = 4096
# Control characters and unpaired UTF-16 surrogates (JSON can carry "\ud800"): neither
# is printable, and a surrogate cannot be encoded for a database, a log or a terminal.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# What no text column can hold: PostgreSQL refuses NUL, and no driver can send a surrogate.
_UNSTORABLE_RE = re.compile(r"[\x00\ud800-\udfff]")
_TIMESTAMP_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)

Value = str | datetime | None


class Connection(NamedTuple):
    """The allow-listed metadata of one connection, immutable. Its fields are
    fields.RECORD_FIELDS, in order (a test pins them equal)."""

    type: str
    name: str
    allowed_domain: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    header_name: str | None = None
    username: str | None = None
    created_by: str | None = None
    uuid: str | None = None
    oauth_url_subdomain: str | None = None
    permission_scope: str | None = None
    token_type: str | None = None
    token_expiry: datetime | None = None
    oauth_client_uuid: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.name)

    @property
    def label(self) -> tuple[str, str]:
        """Its (type, name) in connection_changes and findings: its key."""
        return (self.type, self.name)

    def metadata(self) -> tuple[Value, ...]:
        return tuple(self[len(KEY_FIELDS) :])


class OAuthClient(NamedTuple):
    """The allow-listed metadata of one OAuth client (§17), immutable. Its fields are
    fields.CLIENT_RECORD_FIELDS, in order: the uuid keys it within its integration."""

    uuid: str
    name: str | None = None
    auth_url: str | None = None
    token_url: str | None = None
    grant_type: str | None = None
    default_scopes: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (CLIENT_TYPE, self.uuid)

    @property
    def label(self) -> tuple[str, str]:
        """Its (type, name) in connection_changes and findings: its name, else its uuid."""
        return (CLIENT_TYPE, self.name or self.uuid)

    def metadata(self) -> tuple[Value, ...]:
        return tuple(self[1:])


class ParsedPage(NamedTuple):
    connections: list[Connection]
    unknown_types: frozenset[str]


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 with 0-9 fractional digits -> aware UTC datetime (microsecond precision)."""
    m = _TIMESTAMP_RE.match(text)
    if not m:
        raise ValueError("not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = (m.group(7) or "").ljust(6, "0")[:6]
    if second == 60:  # a leap second is stored as the last representable instant
        second, fraction = 59, "999999"
    value = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=UTC)
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if offset >= timedelta(hours=24):
            raise ValueError("offset out of range")
        value = value - offset if m.group(9) == "+" else value + offset
    return value


def format_timestamp(value: datetime) -> str:
    """Aware datetime -> RFC 3339 UTC text, as stored in connection_changes."""
    if value.tzinfo is UTC and value.year >= 1000:  # the text below, by isoformat: faster
        return value.isoformat()[:-6] + "Z"
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_page(body: Mapping[str, Any], *, where: str, page: int) -> ParsedPage:
    """All connections of one page, in page order. ``where`` names the
    account/integration for errors."""
    connections: list[Connection] = []
    unknown: set[str] = set()
    for type_name, items in body.items():
        if type_name == "meta":
            continue
        if type_name not in TYPE_FIELDS:
            if not isinstance(items, list):
                continue  # a scalar or object beside the arrays is not a connection type
            if not isinstance(type_name, str) or not TYPE_NAME_RE.match(type_name):
                raise ResponseError(
                    f"{where}: page {page}: unexpected top-level array key "
                    f"{_short(type_name)!r} (not a connection type name)"
                )
            unknown.add(type_name)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ResponseError(
                f"{where}: page {page}: {type_name!r} must be an array, got {_kind(items)}"
            )
        for index, item in enumerate(items):
            connections.append(parse_item(type_name, item, where=where, page=page, index=index))
    return ParsedPage(connections, frozenset(unknown))


def parse_item(
    type_name: str, item: Any, *, where: str = "", page: int = 1, index: int = 0
) -> Connection:
    """One item -> its Connection; RecordError names the page, the item and the field."""
    place = f"{where}: page {page}: {type_name}[{index}]"
    if not isinstance(item, Mapping):
        raise RecordError(f"{place}: item must be an object, got {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str):
        raise RecordError(f"{place}: field 'name' must be a string, got {_kind(name)}")
    if not name or len(name) > MAX_NAME_LENGTH or _CONTROL_RE.search(name):
        raise RecordError(f"{place}: field 'name' must be 1-{MAX_NAME_LENGTH} printable characters")
    values = {
        field: _field(item.get(field), field, place, name) for field in kept_fields(type_name)
    }
    return Connection(type_name, name, **values)  # type: ignore[arg-type]


def parse_clients_page(body: Any, *, integration: str, where: str, page: int) -> list[OAuthClient]:
    """All OAuth clients of one page of the clients endpoint, in page order: the
    documented ``{"clients": [...]}`` or a bare array."""
    items = body.get("clients") if isinstance(body, Mapping) else body
    if not isinstance(items, list):
        raise ResponseError(
            f"{where}: OAuth clients page {page}: 'clients' must be an array, got {_kind(items)}"
        )
    return [
        parse_client(item, integration=integration, where=where, page=page, index=index)
        for index, item in enumerate(items)
    ]


def parse_client(
    item: Any, *, integration: str, where: str = "", page: int = 1, index: int = 0
) -> OAuthClient:
    """One client -> its OAuthClient; RecordError names the page, the item and the field
    (never a value off the allow-list)."""
    place = f"{where}: OAuth clients page {page}: clients[{index}]"
    if not isinstance(item, Mapping):
        raise RecordError(f"{place}: item must be an object, got {_kind(item)}")
    uuid = item.get("uuid")
    if not isinstance(uuid, str):
        raise RecordError(f"{place}: field 'uuid' must be a string, got {_kind(uuid)}")
    if not uuid or len(uuid) > MAX_NAME_LENGTH or _CONTROL_RE.search(uuid):
        raise RecordError(f"{place}: field 'uuid' must be 1-{MAX_NAME_LENGTH} printable characters")
    named = item.get("integration")
    if named is not None and named != integration:
        raise RecordError(
            f"{place} ({uuid}): field 'integration' names another integration "
            f"({_short(named)!r}, not {integration!r})"
        )
    values = {
        field: _field(item.get(field), field, place, uuid, CLIENT_TIMESTAMP_FIELDS)
        for field in CLIENT_METADATA_FIELDS
    }
    name = values["name"]
    if isinstance(name, str) and (len(name) > MAX_NAME_LENGTH or _CONTROL_RE.search(name)):
        raise RecordError(
            f"{place} ({uuid}): field 'name' must be 1-{MAX_NAME_LENGTH} printable characters"
        )
    return OAuthClient(uuid, **values)  # type: ignore[arg-type]


def _field(
    raw: Any, field: str, place: str, name: str, timestamps: frozenset[str] = TIMESTAMP_FIELDS
) -> Value:
    if raw is None or raw == "":
        return None  # optional fields are None, never ""
    if not isinstance(raw, str):
        raise RecordError(
            f"{place} ({name}): field {field!r} must be a string or null, got {_kind(raw)}"
        )
    if field in timestamps:
        try:
            return parse_timestamp(raw)
        except ValueError:
            raise RecordError(
                f"{place} ({name}): field {field!r} is not an RFC 3339 timestamp ({_short(raw)!r})"
            ) from None
    if len(raw) > MAX_FIELD_LENGTH:
        raise RecordError(
            f"{place} ({name}): field {field!r} is longer than {MAX_FIELD_LENGTH} characters"
        )
    if _UNSTORABLE_RE.search(raw):
        raise RecordError(
            f"{place} ({name}): field {field!r} holds a NUL character or an unpaired "
            "surrogate, which cannot be stored as text"
        )
    return raw


# Names the layout the digest covers: when the fields change, so does every digest.
_DIGEST_HEADER = "\x00".join(("zis-inventory fetched set 4", *RECORD_FIELDS, "")).encode()


def fetched_digest(connections: Iterable[Connection]) -> str:
    """SHA-256 (hex) of a fetched set, in page order: a thousand records at a time as a
    JSON array of arrays of their type, name and values, as orjson writes them
    (timestamps in RFC 3339 UTC, None as null). Each array ends where its bytes say, and
    each field holds one kind of value (a timestamp field a datetime, any other text), so
    the same digest means the same records in the same order; a different one only means
    "compare row by row". orjson writes it in C, a fifth of the CPU of joining the
    values' texts in Python (docs/decisions.md)."""
    digest = hashlib.sha256(_DIGEST_HEADER)
    for batch in batched(connections, 1000):
        digest.update(orjson.dumps(batch, default=tuple, option=orjson.OPT_UTC_Z))
    return digest.hexdigest()


# Names the layout the row hashes cover, as _DIGEST_HEADER does for the fetched set.
_ROW_SALT = hashlib.blake2b(
    "\x00".join(("zis-inventory row 1", *RECORD_FIELDS, "")).encode(), digest_size=16
).digest()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def row_hashes(connections: Iterable[Connection]) -> list[bytes]:
    """A 16-byte BLAKE2b of each record, in order: of its type, name and values joined
    by NUL (timestamps as microseconds since the Unix epoch, None as the empty string,
    which no kept value is). The same record gives the same bytes in any process; a
    different one, with odds of 2**-128, different bytes."""
    width = len(RECORD_FIELDS)
    blake2b = hashlib.blake2b
    hashes: list[bytes] = []
    for batch in batched(connections, 1000):
        values: Iterator[Value] = chain.from_iterable(batch)
        texts = [
            "" if v is None else v if isinstance(v, str) else str((v - _EPOCH) // _MICROSECOND)
            for v in values
        ]
        hashes += [
            blake2b(
                "\x00".join(texts[i : i + width]).encode(), digest_size=16, salt=_ROW_SALT
            ).digest()
            for i in range(0, len(texts), width)
        ]
    return hashes


def iter_fields(connection: Connection) -> Iterator[tuple[str, Value]]:
    return zip(METADATA_FIELDS, connection.metadata(), strict=True)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    text = _CONTROL_RE.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "..."
