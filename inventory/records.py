"""Pure parsing: one raw API item -> an immutable, allow-listed Connection.

This is where secrets end: every field that is not on the §4 allow-list is dropped here.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from . import __version__
from .errors import RecordError, ResponseError

KNOWN_TYPES = ("api_key", "basic_auth", "bearer_token", "oauth")

# The metadata columns, in storage order; "type" and "name" complete the key.
METADATA_FIELDS = (
    "allowed_domain",
    "created_at",
    "updated_at",
    "header_name",
    "username",
    "created_by",
    "uuid",
    "oauth_url_subdomain",
    "permission_scope",
    "token_type",
    "token_expiry",
    "oauth_client_uuid",
)
COMMON_FIELDS = ("allowed_domain", "created_at", "updated_at")
TYPE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "api_key": ("header_name",),
    "basic_auth": ("username",),
    "bearer_token": (),
    "oauth": (
        "created_by",
        "uuid",
        "oauth_url_subdomain",
        "permission_scope",
        "token_type",
        "token_expiry",
        "oauth_client_uuid",
    ),
}
TIMESTAMP_FIELDS = frozenset({"created_at", "updated_at", "token_expiry"})
_KEPT_FIELDS = {t: (*COMMON_FIELDS, *fields) for t, fields in TYPE_FIELDS.items()}

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


def _parsing_identity() -> str:
    """The version, and a hash of this module's own text when it can be read: after any
    change to parsing, released or not, the next snapshot compares rows."""
    try:
        text = Path(__file__).read_bytes()
    except OSError:
        return __version__
    return f"{__version__} {hashlib.sha256(text).hexdigest()}"


# What a fetched-set digest covers besides the values: the layout that says how many
# values follow each type and name, and the parsing that made the records.
_DIGEST_HEADER = "\x00".join(
    (
        "zis-inventory fetched set 2",
        _parsing_identity(),
        repr(COMMON_FIELDS),
        repr(sorted(TYPE_FIELDS.items())),
        "",
    )
).encode()


class Connection(NamedTuple):
    """The allow-listed metadata of one connection. Field order = METADATA_FIELDS."""

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

    def metadata(self) -> tuple[Value, ...]:
        return tuple(self[2:])


class Settled(NamedTuple):
    """An item whose chunk's digest is known at last, when parsing skips known chunks
    (``FetchedDigest(known=...)``): its record, or None when its chunk is a known one."""

    type: str
    name: str
    page: int
    connection: Connection | None


class ParsedPage(NamedTuple):
    connections: list[Connection]
    unknown_types: frozenset[str]
    settled: Sequence[Settled] = ()  # parsing that skips known chunks: instead of connections


class SharedValues:
    """What parsing one item leaves for the next items of the same integration: a text
    value that many connections repeat (a header name, a token type, a scope) is held
    once, and a timestamp equal to the one parsed just before (``updated_at`` of a
    connection never updated) is parsed once. Each field keeps at most ``LIMIT`` texts, so
    a field whose values never repeat costs little and crowds out no other field."""

    LIMIT = 256

    def __init__(self) -> None:
        self.texts: dict[str, dict[str, str]] = {f: {} for f in METADATA_FIELDS}
        self.last_stamp: tuple[str, datetime] | None = None


# An item whose name's CRC-32 has these bits clear starts a chunk of the fetched set: about
# eight items per chunk, wherever the item stands on its page.
CHUNK_MASK = 0b111
CHUNK_DIGEST_SIZE = 32  # bytes: SHA-256
_HEADER_DIGEST = hashlib.sha256(_DIGEST_HEADER).digest()


class FetchedDigest:
    """What one integration's pages gave, as digests: one per chunk of items, and one of
    the whole set. Pass it to ``parse_page`` for every page of the integration, in order.

    Each item gives tokens: its type, its name and the raw text of each field its type
    keeps ("" for null or empty, which parse alike), each ended by NUL, which no kept text
    holds; the type says how many values follow, so two different sequences of items never
    give the same tokens. The items are cut into chunks where a name says so (CHUNK_MASK),
    so that adding, removing or changing an item changes the chunk it is in and no other.
    A chunk's digest is SHA-256 over its items' tokens; the whole set's is SHA-256 over
    the header and every chunk's digest, in page order, and the chunk digests are kept
    after the header's own digest (``kept``), so that they are only ever compared with
    chunk digests the same parsing made. Parsing is deterministic, so the same digest
    (under the same header, which names the parsing code) means the same records: the
    whole set's, the same records in the same order; a chunk's, the same items in the
    same order. The converse does not hold (a timestamp written another way, items
    reordered): a different digest only means "compare record by record"."""

    def __init__(self, known: frozenset[bytes] | None = None) -> None:
        self.count = 0  # items taken
        self.starts: list[int] = []  # the index in page order of each chunk's first item
        self._done = bytearray()  # the digests of the chunks before the open one
        self._open: list[str] = []  # the open chunk's tokens
        # With ``known`` chunk digests, parsing turns into records only the items of the
        # other chunks; the items of the open chunk wait here, as the page gave them.
        self.known = known
        self.waiting: list[tuple[str, Any, int, int]] = []  # (type, item, page, index)

    def take(
        self, tokens: list[str], breaks: list[tuple[int, int]], items: int
    ) -> list[tuple[bytes, int]]:
        """One page: its items' ``tokens``, and (token index, item index on the page) of
        each item whose name starts a chunk. Gives the digest and size of each chunk the
        page closed."""
        at = 0
        closed = []
        if not self.count and items and (not breaks or breaks[0][1]):
            self.starts.append(0)  # the first item starts the first chunk
        for token, item in breaks:
            if self.count + item:  # the open chunk holds the items before this one
                self._open += tokens[at:token]
                digest = _chunk_digest(self._open)
                self._done += digest
                self._open = []
                closed.append((digest, self.count + item - self.starts[-1]))
            self.starts.append(self.count + item)
            at = token
        self._open += tokens[at:]
        self.count += items
        return closed

    def settle(
        self, closed: list[tuple[bytes, int]], where: str, shared: SharedValues
    ) -> list[Settled]:
        """The waiting items of the chunks just closed, in page order: parsed when their
        chunk is not a known one (its digest says nothing of them), else by name only:
        the same tokens, which the same parsing (the header says) took before, parsed
        without error into the same records."""
        known = self.known or frozenset()
        settled: list[Settled] = []
        for digest, size in closed:
            chunk, self.waiting = self.waiting[:size], self.waiting[size:]
            if digest in known:
                settled += (Settled(t, item["name"], page, None) for t, item, page, _ in chunk)
                continue
            for type_name, item, page, index in chunk:
                connection = parse_item(
                    type_name, item, where=where, page=page, index=index, shared=shared
                )
                settled.append(Settled(type_name, connection.name, page, connection))
        return settled

    def finish(self, where: str, shared: SharedValues) -> list[Settled]:
        """After the last page: the waiting items of the last chunk, as ``settle``."""
        if not self.waiting:
            return []
        return self.settle(
            [(_chunk_digest(self._open), self.count - self.starts[-1])], where, shared
        )

    def chunks(self) -> list[bytes]:
        """Each chunk's digest, in page order (``starts`` gives where each begins)."""
        return _digests(self._joined())

    def hexdigest(self) -> str:
        """The whole set's digest."""
        return hashlib.sha256(_DIGEST_HEADER + self._joined()).hexdigest()

    def kept(self) -> bytes:
        """The chunk digests as they are kept (``chunk_set`` reads them back)."""
        return _HEADER_DIGEST + self._joined()

    def _joined(self) -> bytes:
        """Every chunk's digest, one after the other."""
        return bytes(self._done) + _chunk_digest(self._open) if self.count else b""


def _chunk_digest(tokens: list[str]) -> bytes:
    return hashlib.sha256(("\x00".join(tokens) + "\x00").encode()).digest()


def chunk_set(kept: bytes) -> frozenset[bytes] | None:
    """The chunk digests ``FetchedDigest.kept`` gave, or None when the parsing that took
    them was another (or the bytes are not such digests): nothing to compare them with."""
    size = CHUNK_DIGEST_SIZE
    if len(kept) % size or kept[:size] != _HEADER_DIGEST:
        return None
    return frozenset(_digests(kept[size:]))


def _digests(joined: bytes) -> list[bytes]:
    """Digests written one after the other, apart."""
    size = CHUNK_DIGEST_SIZE
    return [joined[i : i + size] for i in range(0, len(joined), size)]


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
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_page(
    body: Mapping[str, Any],
    *,
    where: str,
    page: int,
    shared: SharedValues | None = None,
    digest: FetchedDigest | None = None,
) -> ParsedPage:
    """All connections of one page. ``where`` names the account/integration for errors;
    ``shared`` carries repeated values from one page of an integration to the next;
    ``digest`` (a ``FetchedDigest``) takes the page's items once they all parsed. When
    ``digest`` has known chunk digests, the page's items are only checked for what their
    tokens need and wait in it for their chunk to close: ``settled`` gives the items of
    the chunks the page closed (``FetchedDigest.settle``), and ``connections`` is empty."""
    shared = shared if shared is not None else SharedValues()
    tokens: list[str] | None = None if digest is None else []
    taken = 0  # items waiting in digest, when it skips known chunks
    breaks: list[tuple[int, int]] = []  # (token index, item index) of items starting a chunk
    connections: list[Connection] = []
    unknown: set[str] = set()
    for type_name, items in body.items():
        if type_name == "meta":
            continue
        known = type_name in TYPE_FIELDS
        if not known:
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
        if tokens is None:
            for index, item in enumerate(items):
                connections.append(
                    parse_item(type_name, item, where=where, page=page, index=index, shared=shared)
                )
            continue
        crc32, mask = zlib.crc32, CHUNK_MASK
        if digest is not None and digest.known is not None:
            fields = _kept_fields(type_name)
            waiting = digest.waiting
            for index, item in enumerate(items):
                at = len(tokens)
                name = _item_tokens(type_name, item, fields, tokens)
                if name is None:  # parsing says what is wrong with it
                    parse_item(type_name, item, where=where, page=page, index=index)
                    raise AssertionError("an item without tokens parsed")
                if not crc32(name.encode()) & mask:
                    breaks.append((at, taken))
                waiting.append((type_name, item, page, index))
                taken += 1
            continue
        for index, item in enumerate(items):
            at = len(tokens)
            connection = parse_item(
                type_name, item, where=where, page=page, index=index, shared=shared, tokens=tokens
            )
            if not crc32(connection[1].encode()) & mask:  # its name starts a chunk
                breaks.append((at, len(connections)))
            connections.append(connection)
    if digest is None:
        return ParsedPage(connections, frozenset(unknown))
    if digest.known is None:
        digest.take(tokens or [], breaks, len(connections))
        return ParsedPage(connections, frozenset(unknown))
    closed = digest.take(tokens or [], breaks, taken)
    return ParsedPage([], frozenset(unknown), digest.settle(closed, where, shared))


def _item_tokens(
    type_name: str, item: Any, fields: tuple[str, ...], tokens: list[str]
) -> str | None:
    """The tokens ``parse_item`` would append for an item, without parsing its values,
    and its name; None (nothing appended) when the item is not one parsing would take."""
    if not isinstance(item, Mapping):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not _printable_name(name):
        return None
    values = [item.get(field) for field in fields]
    for value in values:
        if value is not None and not isinstance(value, str):
            return None
    tokens.append(type_name)
    tokens.append(name)
    tokens += [value or "" for value in values]  # as parse_item: null and "" are one
    return name


def _kept_fields(type_name: str) -> tuple[str, ...]:
    """The fields an item of this type keeps, in order; an unknown type keeps the common
    ones."""
    return _KEPT_FIELDS.get(type_name, COMMON_FIELDS)


def _printable_name(name: str) -> bool:
    return bool(name) and len(name) <= MAX_NAME_LENGTH and not _CONTROL_RE.search(name)


def parse_item(
    type_name: str,
    item: Any,
    *,
    where: str = "",
    page: int = 1,
    index: int = 0,
    shared: SharedValues | None = None,
    tokens: list[str] | None = None,
) -> Connection:
    """One item; with ``tokens``, its type, name and raw field texts are appended there
    (see ``FetchedDigest``)."""
    place = f"{where}: page {page}: {type_name}[{index}]"
    if not isinstance(item, Mapping):
        raise RecordError(f"{place}: item must be an object, got {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str):
        raise RecordError(f"{place}: field 'name' must be a string, got {_kind(name)}")
    if not _printable_name(name):
        raise RecordError(f"{place}: field 'name' must be 1-{MAX_NAME_LENGTH} printable characters")
    shared = shared if shared is not None else SharedValues()
    values: dict[str, Value] = {}
    fields = _kept_fields(type_name)
    if tokens is None:
        for field in fields:
            values[field] = _field(item.get(field), field, place, name, shared)
    else:
        tokens.append(type_name)
        tokens.append(name)
        for field in fields:
            raw = item.get(field)
            values[field] = _field(raw, field, place, name, shared)
            tokens.append(raw or "")  # a text, once _field took it; null and "" are one
    return Connection(type_name, name, **values)  # type: ignore[arg-type]


def _field(raw: Any, field: str, place: str, name: str, shared: SharedValues) -> Value:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise RecordError(
            f"{place} ({name}): field {field!r} must be a string or null, got {_kind(raw)}"
        )
    if field in TIMESTAMP_FIELDS:
        last = shared.last_stamp
        if last is not None and last[0] == raw:
            return last[1]
        try:
            stamp = parse_timestamp(raw)
        except ValueError:
            raise RecordError(
                f"{place} ({name}): field {field!r} is not an RFC 3339 timestamp ({_short(raw)!r})"
            ) from None
        shared.last_stamp = (raw, stamp)
        return stamp
    texts = shared.texts[field]
    text = texts.get(raw)
    if text is not None:
        return text
    if len(raw) > MAX_FIELD_LENGTH:
        raise RecordError(
            f"{place} ({name}): field {field!r} is longer than {MAX_FIELD_LENGTH} characters"
        )
    if _UNSTORABLE_RE.search(raw):
        raise RecordError(
            f"{place} ({name}): field {field!r} holds a NUL character or an unpaired "
            "surrogate, which cannot be stored as text"
        )
    if len(texts) < shared.LIMIT:
        texts[raw] = raw
    return raw


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
